// The Worker object on CPU, driven directly (not the binary): one rank trains and prints its
// summary; two ranks in one process (an in-process group) agree on every iteration's plan, switch
// plans under skewed routing, and train exactly as one rank with their joint batch (float64); bad
// configurations are usage errors that start nothing.
#include "worker/worker.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "worker/comm/fake_communicator.h"

namespace hecate::worker {
namespace {

std::string Tmp(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

// Written once: ranks on threads build their configurations concurrently.
std::string TextFile() {
  static const std::string path = [] {
    const std::string p = Tmp("worker_test_text.txt");
    std::ofstream out(p);
    for (int i = 0; i < 200; ++i) {
      out << "The quick brown fox " << i << " jumps over the lazy dog; experts route tokens. ";
    }
    return p;
  }();
  return path;
}

WorkerConfig SmallConfig(int world, int rank, int batch) {
  WorkerConfig c;
  c.world_size = world;
  c.rank = rank;
  c.local_rank = rank;
  c.node = "test-node";
  c.iterations = 8;
  c.out = nullptr;
  c.reshard_period = 0;
  c.trainer.layers = 2;
  c.trainer.d_model = 16;
  c.trainer.heads = 2;
  c.trainer.experts = 4;
  c.trainer.d_ffn = 32;
  c.trainer.seq_len = 8;
  c.trainer.batch = batch;
  c.trainer.float64 = true;
  // Experts 0 and 1 (rank 0's under even sharding) take most tokens: the planner copies them.
  c.trainer.gate_bias = 3.0;
  c.trainer.skew_experts = 2;
  c.trainer.data_path = TextFile();
  return c;
}

TEST(WorkerTest, OneRankTrainsAndPrintsItsSummary) {
  WorkerConfig c = SmallConfig(1, 0, 4);
  c.iterations = 5;
  const std::string out_path = Tmp("one_rank.out");
  std::FILE* out = std::fopen(out_path.c_str(), "w");
  ASSERT_NE(out, nullptr);
  c.out = out;
  Worker worker(c);
  ASSERT_TRUE(worker.Start().ok());
  absl::StatusOr<RunSummary> r = worker.Run();
  std::fclose(out);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->iterations, 5);
  ASSERT_EQ(r->losses.size(), 5u);
  for (double loss : r->losses) EXPECT_TRUE(std::isfinite(loss));
  EXPECT_LT(r->losses.back(), r->losses.front());  // Adam at 3e-3 on byte text: it learns
  EXPECT_GT(r->mean_step_seconds, 0);
  std::ifstream in(out_path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("progress iter=0 "), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("summary iterations=5 "), std::string::npos) << text.str();
  EXPECT_NE(text.str().find(" device=cpu comm=gloo"), std::string::npos) << text.str();
}

TEST(WorkerTest, TwoRanksAgreeOnPlansAndMatchOneRankWithTheirJointBatch) {
  constexpr int kWorld = 2, kBatch = 2;
  InProcessGroup group(kWorld);
  std::vector<absl::StatusOr<RunSummary>> results(kWorld, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      WorkerConfig c = SmallConfig(kWorld, r, kBatch);
      c.communicator = group.rank(r);
      Worker worker(c);
      if (absl::Status s = worker.Start(); !s.ok()) {
        results[r] = s;
        return;
      }
      results[r] = worker.Run();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(results[r].ok()) << results[r].status();
  const RunSummary& a = *results[0];
  const RunSummary& b = *results[1];
  ASSERT_EQ(a.plans, b.plans);  // every iteration ran under the same plan on both ranks
  EXPECT_GE(a.plans_applied, 1);
  EXPECT_NE(a.plans.front(), a.plans.back());
  EXPECT_GT(a.sparse_bytes_sent + b.sparse_bytes_sent, 0);  // copies were materialized

  // One rank with both ranks' sequences: the same global batch, so the same losses.
  WorkerConfig solo = SmallConfig(1, 0, kWorld * kBatch);
  Worker reference(solo);
  ASSERT_TRUE(reference.Start().ok());
  absl::StatusOr<RunSummary> ref = reference.Run();
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(ref->losses.size(), a.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) {
    EXPECT_EQ(a.losses[i], b.losses[i]) << "iteration " << i;
    EXPECT_NEAR(a.losses[i], ref->losses[i], 1e-9 * std::abs(ref->losses[i])) << "iteration " << i;
  }
}

TEST(WorkerTest, BadConfigurationsAreUsageErrors) {
  WorkerConfig c = SmallConfig(2, 2, 2);
  EXPECT_EQ(Validate(c).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExitCodeFor(Worker(c).Start()), ExitCode::kUsage);
  c = SmallConfig(1, 0, 2);
  c.mode = "zero";
  EXPECT_NE(Validate(c).message().find("--mode"), absl::string_view::npos);
  c = SmallConfig(1, 0, 2);
  c.trainer.top_k = 5;
  EXPECT_EQ(ExitCodeFor(Worker(c).Start()), ExitCode::kUsage);
  c = SmallConfig(1, 0, 2);
  c.trainer.device = DeviceKind::kCuda;
  c.trainer.float64 = true;
  EXPECT_NE(Validate(c).message().find("--float64"), absl::string_view::npos);

  EXPECT_EQ(ResolveDevice("tpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ResolveDevice("cpu"), DeviceKind::kCpu);
  EXPECT_EQ(ResolveComm("mpi", DeviceKind::kCpu).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveComm("nccl", DeviceKind::kCpu).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ResolveComm("", DeviceKind::kCpu), CommBackend::kGloo);
  EXPECT_EQ(*ResolveComm("gloo", DeviceKind::kCuda), CommBackend::kGloo);
  // Where the default is the CPU (no GPU, or a build without CUDA), asking for CUDA says why not.
  if (*ResolveDevice("") == DeviceKind::kCpu) {
    absl::StatusOr<DeviceKind> cuda = ResolveDevice("cuda");
    ASSERT_EQ(cuda.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(cuda.status().message().find("GPU"), absl::string_view::npos) << cuda.status();
  }
}

TEST(WorkerTest, MissingTrainingTextIsBadInput) {
  WorkerConfig c = SmallConfig(1, 0, 2);
  c.trainer.data_path = Tmp("no-such-text");
  Worker worker(c);
  absl::Status s = worker.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ExitCodeFor(s), ExitCode::kBadInput);
  EXPECT_EQ(worker.Run().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(WorkerTest, ExitCodesFollowTheStatus) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), ExitCode::kDone);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("peer died")), ExitCode::kCollective);
  EXPECT_EQ(ExitCodeFor(absl::DataLossError("torn checkpoint")), ExitCode::kBadInput);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("nan")), ExitCode::kError);
}

}  // namespace
}  // namespace hecate::worker
