// Crash recovery across processes: the controller is killed with SIGKILL mid-run (several times,
// at different moments), restarted on the same --state-dir, and must come back with the registry,
// the plan history and the version sequence intact under a new epoch; watchers reconnect and get
// the current plan first; later plans carry the new epoch.
#include <grpcpp/grpcpp.h>

#include <map>

#include <gtest/gtest.h>

#include "common/subprocess.h"
#include "hecate/v1/controller.grpc.pb.h"
#include "wire/convert.h"

namespace hecate {
namespace {

constexpr int kWorld = 4;

class Controller {
 public:
  explicit Controller(const std::string& state_dir) : state_dir_(state_dir) {}
  void Start() {
    ASSERT_TRUE(proc_.Start({proc::Runfile("controller/hecate-controller"), "--listen=127.0.0.1:0",
                             "--metrics-listen=", "--state-dir=" + state_dir_,
                             "--report-deadline-ms=60000", "--damping=0"},
                            {}, state_dir_ + "/controller.log"));
    std::string address;
    ASSERT_TRUE(proc_.WaitForLine("listening on ", absl::Seconds(30), &address));
    stub_ =
        v1::Controller::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }
  void Kill9() {
    proc_.Signal(SIGKILL);
    EXPECT_EQ(proc_.Wait(absl::Seconds(10)), 128 + SIGKILL);
  }
  int Term() {
    proc_.Signal(SIGTERM);
    return proc_.Wait(absl::Seconds(20));
  }
  v1::Controller::Stub* stub() { return stub_.get(); }

 private:
  std::string state_dir_;
  proc::Subprocess proc_;
  std::unique_ptr<v1::Controller::Stub> stub_;
};

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
  return ctx;
}

// Each rank's worker secret from its registration (they survive a controller restart).
std::map<int, std::string> g_secrets;

void Register(v1::Controller::Stub* stub) {
  for (int r = 0; r < kWorld; ++r) {
    v1::RegisterWorkerRequest req;
    req.set_job_id("job");
    req.set_rank(r);
    req.set_world_size(kWorld);
    req.set_node(r < 2 ? "a" : "b");
    req.set_device_memory_bytes(int64_t{1} << 30);
    req.set_incarnation(1);
    *req.mutable_model() =
        wire::ToProto(placement::UniformModel("m", 2, 8, 2, 32, 64, 4, 64, 1e-3));
    req.mutable_links()->set_intra_node_bandwidth_bytes_per_second(1e10);
    req.mutable_links()->set_inter_node_bandwidth_bytes_per_second(1e9);
    v1::RegisterWorkerResponse resp;
    ASSERT_TRUE(stub->RegisterWorker(Ctx().get(), req, &resp).ok());
    g_secrets[r] = resp.worker_secret();
  }
}

// Every rank reports `iteration` with the hot expert `hot`.
void ReportIteration(v1::Controller::Stub* stub, uint64_t iteration, int hot, v1::PlanId plan) {
  for (int r = 0; r < kWorld; ++r) {
    v1::LoadReport rep;
    rep.set_job_id("job");
    rep.set_rank(r);
    rep.set_incarnation(1);
    rep.set_worker_secret(g_secrets[r]);
    rep.set_iteration(iteration);
    *rep.mutable_plan() = plan;
    for (int l = 0; l < 2; ++l) {
      auto* layer = rep.add_layers();
      layer->set_layer(l);
      for (int e = 0; e < 8; ++e) layer->add_expert_tokens(e == hot ? 72 : 8);
    }
    auto ctx = Ctx();
    v1::ReportLoadResponse resp;
    auto w = stub->ReportLoad(ctx.get(), &resp);
    w->Write(rep);
    w->WritesDone();
    ASSERT_TRUE(w->Finish().ok());
  }
}

// Opens a watcher and returns the first plan it receives (the current one), waiting up to 30 s.
bool FirstPlan(v1::Controller::Stub* stub, v1::PlanId after, v1::Plan* plan) {
  auto ctx = Ctx(absl::Seconds(30));
  v1::WatchPlansRequest req;
  req.set_job_id("job");
  *req.mutable_after() = after;
  auto reader = stub->WatchPlans(ctx.get(), req);
  const bool ok = reader->Read(plan);
  ctx->TryCancel();
  reader->Finish();
  return ok;
}

// Bad planning flags are a usage error (exit 2) before anything starts.
TEST(ControllerFlagsTest, BadPlanningFlagsAreUsageErrors) {
  for (const char* bad :
       {"--revise_period=0", "--revise_gain=1", "--revise_gain=-0.5", "--replan_threshold=2",
        "--replan_threshold=-0.1", "--window=0", "--policy=nope", "--repair_moves=-1",
        "--balance_target=0.5", "--balance_target=-1", "--balance_budget=1",
        "--balance_budget=-0.1", "--balance_moves=-1", "--balance_cell_budget=-1"}) {
    const std::string dir = proc::TempDir("bad_flags");
    proc::Subprocess p;
    ASSERT_TRUE(p.Start({proc::Runfile("controller/hecate-controller"), "--listen=127.0.0.1:0",
                         "--metrics-listen=", "--state-dir=" + dir, bad},
                        {}, dir + "/controller.log"));
    EXPECT_EQ(p.Wait(absl::Seconds(20)), 2) << bad;
  }
}

TEST(ControllerRestartTest, KillNineRecoversEverything) {
  const std::string dir = proc::TempDir("restart_state");
  v1::PlanId current;
  uint64_t iteration = 0;
  uint64_t epoch = 0;
  uint64_t versions_seen = 0;
  for (int cycle = 0; cycle < 3; ++cycle) {
    Controller c(dir);
    c.Start();
    if (::testing::Test::HasFatalFailure()) return;
    v1::GetStatusResponse status;
    ASSERT_TRUE(c.stub()->GetStatus(Ctx().get(), v1::GetStatusRequest(), &status).ok());
    EXPECT_EQ(status.epoch(), epoch + 1) << "every start is a new epoch";
    epoch = status.epoch();
    if (cycle == 0) {
      Register(c.stub());
    } else {
      // Registry, current plan and history survived.
      v1::ListWorkersRequest lw;
      v1::ListWorkersResponse workers;
      ASSERT_TRUE(c.stub()->ListWorkers(Ctx().get(), lw, &workers).ok());
      EXPECT_EQ(workers.workers_size(), kWorld);
      v1::GetPlanRequest gp;
      gp.set_job_id("job");
      v1::Plan plan;
      ASSERT_TRUE(c.stub()->GetPlan(Ctx().get(), gp, &plan).ok());
      // Everything published before the kill is there (a plan may have been published after the
      // last one this test saw, never one lost).
      EXPECT_GE(plan.id().version(), current.version());
      EXPECT_LT(plan.id().epoch(), epoch);
      current = plan.id();
      gp.set_version(1);
      EXPECT_TRUE(c.stub()->GetPlan(Ctx().get(), gp, &plan).ok()) << "history kept";
      // A reconnecting watcher gets the current plan first.
      v1::Plan first;
      ASSERT_TRUE(FirstPlan(c.stub(), v1::PlanId(), &first));
      EXPECT_EQ(first.id().version(), current.version());
    }
    // Drive iterations until this epoch publishes a plan (the hot expert moves every cycle).
    v1::Plan newest;
    bool published = false;
    for (int i = 0; i < 6 && !published; ++i) {
      ReportIteration(c.stub(), iteration++, (cycle * 3 + i) % 8, current);
      v1::GetPlanRequest gp;
      gp.set_job_id("job");
      // The planner thread publishes asynchronously; a watcher started after `current` blocks
      // until the next plan arrives (or times out).
      published = FirstPlan(c.stub(), current, &newest);
    }
    ASSERT_TRUE(published) << "cycle " << cycle;
    EXPECT_EQ(newest.id().epoch(), epoch) << "plans carry the new epoch";
    EXPECT_GT(newest.id().version(), versions_seen) << "versions keep rising across restarts";
    versions_seen = newest.id().version();
    current = newest.id();
    // Reports under the new plan keep flowing, then the controller dies hard mid-stream.
    ReportIteration(c.stub(), iteration++, cycle % 8, current);
    if (cycle < 2) {
      c.Kill9();
    } else {
      EXPECT_EQ(c.Term(), 0) << "SIGTERM shuts down gracefully";
    }
  }
}

}  // namespace
}  // namespace hecate
