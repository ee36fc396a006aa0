// Multi-process tests of a whole job on loopback: `hecate run` end to end; the controller killed
// and restarted mid-run (training never stalls, workers reconnect, later plans carry epoch + 1);
// a plan delivered late to one rank (no rank switches early); a worker killed mid-run (the others
// stop with a clear error within the collective timeout) and `--resume` reproducing the losses of
// an uninterrupted run.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"

namespace hecate {
namespace {

using proc::Runfile;
using proc::Subprocess;
using proc::TempDir;

using ::hecate::proc::FreePort;

const std::vector<std::string> kSmallModel = {"--layers=2",   "--d_model=32", "--heads=2",
                                              "--experts=4",  "--d_ffn=64",   "--batch=4",
                                              "--seq_len=16", "--threads=1"};

// iteration -> (epoch, version) for one rank's plan log.
std::map<int, std::pair<int, int>> PlanLog(const std::string& path) {
  std::map<int, std::pair<int, int>> out;
  std::ifstream in(path);
  int it, e, v;
  while (in >> it >> e >> v) out[it] = {e, v};
  return out;
}

// iteration -> loss from rank 0's progress lines.
std::map<int, double> Losses(const std::vector<std::string>& lines) {
  std::map<int, double> out;
  for (const std::string& l : lines) {
    if (l.rfind("progress ", 0) != 0) continue;
    int it = -1;
    double loss = 0;
    for (absl::string_view kv : absl::StrSplit(l, ' ')) {
      if (absl::ConsumePrefix(&kv, "iter=")) (void)absl::SimpleAtoi(kv, &it);
      if (absl::ConsumePrefix(&kv, "loss=")) (void)absl::SimpleAtod(kv, &loss);
    }
    out[it] = loss;
  }
  return out;
}

TEST(JobTest, HecateRunEndToEnd) {
  const std::string dir = TempDir("run_e2e");
  Subprocess run;
  std::vector<std::string> argv = {Runfile("clients/hecate"),
                                   "run",
                                   "--workers=3",
                                   "--ranks_per_node=0",
                                   "--iterations=24",
                                   "--log_every=1",
                                   "--state_dir=" + dir + "/state",
                                   "--",
                                   "--gate_bias=2",
                                   "--plan_log=" + dir + "/plans"};
  argv.insert(argv.end(), kSmallModel.begin(), kSmallModel.end());
  ASSERT_TRUE(run.Start(argv, {}, dir + "/run.err"));
  std::vector<std::string> lines = run.ReadLines(absl::Minutes(5));
  ASSERT_EQ(run.Wait(absl::Seconds(60)), 0) << "see " << dir;
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  EXPECT_THAT(all, ::testing::HasSubstr("controller "));
  EXPECT_THAT(all, ::testing::HasSubstr("summary: 24 iterations"));
  // Every rank ran every iteration under the same plan.
  auto p0 = PlanLog(dir + "/plans.0");
  ASSERT_EQ(p0.size(), 24u);
  for (int r = 1; r < 3; ++r)
    EXPECT_EQ(PlanLog(absl::StrCat(dir, "/plans.", r)), p0) << "rank " << r;
  std::set<std::pair<int, int>> versions;
  for (const auto& [it, id] : p0) {
    if (id.first > 0) versions.insert(id);
  }
  EXPECT_GE(versions.size(), 2u) << "the controller should publish several plans";
  // Loss falls.
  std::vector<double> loss;
  for (const std::string& l : lines) {
    const size_t at = l.find("   ");
    if (at == std::string::npos) continue;
    std::vector<std::string> cols = absl::StrSplit(l, ' ', absl::SkipEmpty());
    double v;
    int it;
    if (cols.size() > 2 && absl::SimpleAtoi(cols[0], &it) && absl::SimpleAtod(cols[1], &v)) {
      loss.push_back(v);
    }
  }
  ASSERT_GE(loss.size(), 20u);
  EXPECT_LT(loss.back(), loss.front());
}

struct Job {
  std::string dir;
  int controller_port = 0;
  int master_port = 0;
  std::unique_ptr<Subprocess> controller;
  std::vector<std::unique_ptr<Subprocess>> workers;

  void StartController() {
    controller = std::make_unique<Subprocess>();
    ASSERT_TRUE(controller->Start({Runfile("controller/hecate-controller"),
                                   absl::StrCat("--listen=127.0.0.1:", controller_port),
                                   "--metrics-listen=", "--state-dir=" + dir + "/state",
                                   "--report-deadline-ms=1000", "--damping=0"},
                                  {}, dir + "/controller.log"));
    ASSERT_TRUE(controller->WaitForLine("listening on ", absl::Seconds(30), nullptr));
  }
  void StartWorkers(int world, int iterations, const std::vector<std::string>& extra,
                    const std::map<int, std::vector<std::string>>& per_rank = {}) {
    for (int r = 0; r < world; ++r) {
      std::vector<std::string> argv = {Runfile("worker/hecate-worker"),
                                       absl::StrCat("--iterations=", iterations),
                                       "--job=t",
                                       "--plan_log=" + dir + "/plans",
                                       "--gate_bias=2",
                                       "--collective_timeout_s=10"};
      argv.insert(argv.end(), kSmallModel.begin(), kSmallModel.end());
      argv.insert(argv.end(), extra.begin(), extra.end());
      if (per_rank.count(r)) argv.insert(argv.end(), per_rank.at(r).begin(), per_rank.at(r).end());
      std::vector<std::string> env = {absl::StrCat("RANK=", r), absl::StrCat("WORLD_SIZE=", world),
                                      "MASTER_ADDR=127.0.0.1",
                                      absl::StrCat("MASTER_PORT=", master_port)};
      if (controller_port > 0) {
        env.push_back(absl::StrCat("HECATE_CONTROLLER=127.0.0.1:", controller_port));
      }
      auto p = std::make_unique<Subprocess>();
      ASSERT_TRUE(p->Start(argv, env, absl::StrCat(dir, "/worker", r, ".log")));
      workers.push_back(std::move(p));
    }
  }
};

TEST(JobTest, WorkerRejectsBadPlannerFlagsAsUsageErrors) {
  for (const char* bad : {"--attention_ms=-1", "--copy_overhead_ms=-1", "--device_gflops=0",
                          "--link_gbytes=-2", "--reshard_period=-1", "--calibration_copies=-1",
                          "--calibration_target=1", "--calibration_cell_budget=-5"}) {
    Job job;
    job.dir = TempDir("bad_flags");
    job.master_port = FreePort();
    job.StartWorkers(1, 2, {bad});
    EXPECT_EQ(job.workers[0]->Wait(absl::Seconds(60)), 2) << bad;
    std::ifstream log(job.dir + "/worker0.log");
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    // The message names the flag (as "--flag >= 0" or "--flag must be ...", not as given).
    const std::string flag(bad, std::strchr(bad, '=') - bad);
    EXPECT_THAT(text, ::testing::HasSubstr(flag + " ")) << bad;
  }
}

// The local planner re-shards on --reshard_period: under a skew toward rank 0's two experts,
// heterogeneous sharding gives one of them to rank 1 rather than paying for copies every
// iteration (the final plan's sharding version rises); with 0 it never re-shards.
TEST(JobTest, LocalPlannerReshardsOnItsPeriod) {
  for (const int period : {4, 0}) {
    Job job;
    job.dir = TempDir("reshard");
    job.master_port = FreePort();
    job.StartWorkers(
        2, 12,
        {absl::StrCat("--reshard_period=", period), "--gate_bias=6", "--skew_experts=2",
         "--log_every=1", "--d_ffn=1024", "--batch=8", "--copy_overhead_ms=4"});
    std::string summary;
    ASSERT_TRUE(job.workers[0]->WaitForLine("summary ", absl::Minutes(2), &summary));
    for (auto& w : job.workers) ASSERT_EQ(w->Wait(absl::Minutes(1)), 0) << "period " << period;
    const size_t at = summary.find("sharding_version=");
    ASSERT_NE(at, std::string::npos) << summary;
    int version = 0;
    const size_t from = at + std::string("sharding_version=").size();
    ASSERT_TRUE(absl::SimpleAtoi(summary.substr(from, summary.find(' ', from) - from), &version))
        << summary;
    if (period > 0) {
      EXPECT_GT(version, 1) << "no re-shard with --reshard_period=" << period;
    } else {
      EXPECT_EQ(version, 1);
    }
  }
}

TEST(JobTest, ControllerKilledMidRunAndLatePlanDelivery) {
  Job job;
  job.dir = TempDir("controller_kill");
  job.controller_port = FreePort();
  job.master_port = FreePort();
  job.StartController();
  // Rank 1 sees every plan 150 ms late: agreement must keep every rank on the same plan.
  job.StartWorkers(2, 200, {"--log_every=1", "--step_interval_ms=30", "--reconnect_max_ms=300"},
                   {{1, {"--debug_plan_delay_ms=150"}}});
  std::string rest;
  ASSERT_TRUE(job.workers[0]->WaitForLine("progress iter=30 ", absl::Minutes(3), &rest));
  EXPECT_THAT(rest, ::testing::HasSubstr("controller=connected"));
  job.controller->Signal(SIGKILL);
  ASSERT_EQ(job.controller->Wait(absl::Seconds(10)), 128 + SIGKILL);
  // Training goes on without the controller.
  ASSERT_TRUE(job.workers[0]->WaitForLine("progress iter=45 ", absl::Minutes(2), &rest));
  EXPECT_THAT(rest, ::testing::HasSubstr("controller=unreachable"));
  job.StartController();  // same state dir, same port: a new epoch
  std::vector<std::string> tail = job.workers[0]->ReadLines(absl::Minutes(3));
  for (auto& w : job.workers) ASSERT_EQ(w->Wait(absl::Seconds(60)), 0) << "see " << job.dir;
  bool reconnected = false;
  for (const std::string& l : tail)
    reconnected = reconnected || l.find("controller=connected") != std::string::npos;
  EXPECT_TRUE(reconnected) << "workers should reconnect to the restarted controller";
  auto p0 = PlanLog(job.dir + "/plans.0");
  auto p1 = PlanLog(job.dir + "/plans.1");
  ASSERT_EQ(p0.size(), 200u) << "no iteration failed or stalled";
  EXPECT_EQ(p0, p1) << "both ranks always trained under the same plan";
  int max_epoch = 0;
  for (const auto& [it, id] : p0) max_epoch = std::max(max_epoch, id.first);
  EXPECT_EQ(max_epoch, 2) << "plans after the restart carry epoch + 1";
}

TEST(JobTest, WorkerDeathIsAClearErrorAndResumeReproducesLosses) {
  const std::vector<std::string> ckpt_flags = {"--checkpoint_every=5", "--log_every=1",
                                               "--local_planning=true"};
  // Uninterrupted reference.
  Job ref;
  ref.dir = TempDir("ref_run");
  ref.master_port = FreePort();
  ref.StartWorkers(
      3, 20, {"--log_every=1", "--checkpoint_dir=" + ref.dir + "/ckpt", "--checkpoint_every=5"});
  std::map<int, double> want = Losses(ref.workers[0]->ReadLines(absl::Minutes(3)));
  for (auto& w : ref.workers) ASSERT_EQ(w->Wait(absl::Seconds(60)), 0);
  ASSERT_EQ(want.size(), 20u);
  // Checkpoints at 5, 10, 15 and 20; only the newest two are kept.
  for (int step : {5, 10, 15, 20}) {
    const bool present = access(absl::StrCat(ref.dir, "/ckpt/step-", step).c_str(), F_OK) == 0;
    EXPECT_EQ(present, step >= 15) << "step " << step;
  }

  // Rank 2 dies at iteration 12; the others must fail fast with the collective error (exit 3).
  Job crash;
  crash.dir = TempDir("crash_run");
  crash.master_port = FreePort();
  std::vector<std::string> flags = ckpt_flags;
  flags.push_back("--checkpoint_dir=" + crash.dir + "/ckpt");
  crash.StartWorkers(3, 20, flags, {{2, {"--debug_exit_at=12"}}});
  const absl::Time t0 = absl::Now();
  crash.workers[0]->ReadLines(absl::Minutes(2));
  EXPECT_EQ(crash.workers[0]->Wait(absl::Seconds(30)), 3);
  EXPECT_EQ(crash.workers[1]->Wait(absl::Seconds(30)), 3);
  EXPECT_EQ(crash.workers[2]->Wait(absl::Seconds(30)), 1);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(40)) << "bounded by the collective timeout";
  std::ifstream log(crash.dir + "/worker0.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, ::testing::HasSubstr("failed"));

  // Resume from the last checkpoint (iteration 10) and compare with the uninterrupted run.
  Job resume;
  resume.dir = crash.dir;
  resume.master_port = FreePort();
  std::vector<std::string> rflags = flags;
  rflags.push_back("--resume");
  resume.StartWorkers(3, 20, rflags);
  std::map<int, double> got = Losses(resume.workers[0]->ReadLines(absl::Minutes(3)));
  for (auto& w : resume.workers) ASSERT_EQ(w->Wait(absl::Seconds(60)), 0);
  ASSERT_EQ(got.begin()->first, 10) << "resumed from the checkpoint at iteration 10";
  for (const auto& [it, loss] : got) {
    EXPECT_NEAR(loss, want[it], 1e-4 * std::abs(want[it])) << "iteration " << it;
  }
}

}  // namespace
}  // namespace hecate
