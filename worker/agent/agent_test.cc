// The agent against an in-process controller on port 0: it registers, watches plans with deltas
// and rebuilds every published plan exactly.
#include "worker/agent/agent.h"

#include <grpcpp/grpcpp.h>

#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "controller/server.h"
#include "controller/test_job.h"
#include "wire/convert.h"

namespace hecate::worker {
namespace {

constexpr int kWorld = 4;

// Waits (bounded) for an asynchronous condition of the agent's threads.
template <typename Cond>
bool Eventually(Cond cond) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!cond()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

TEST(AgentTest, RebuildsEveryPlanFromDeltas) {
  controller::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.metrics_listen = "";
  const char* tmp = std::getenv("TEST_TMPDIR");
  config.state_dir = std::string(tmp ? tmp : "/tmp") + "/agent_test";
  config.service.manual_planning = true;
  config.service.core.window = 2;
  config.service.core.damping = 0.0;
  controller::ControllerServer server(config);
  ASSERT_TRUE(server.Start().ok());
  auto stub = v1::Controller::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));

  std::vector<std::unique_ptr<ControllerAgent>> agents;
  for (int r = 0; r < kWorld; ++r) {
    AgentConfig ac;
    ac.controller = server.address();
    ac.registration = controller::testing::Registration(r, kWorld);
    agents.push_back(std::make_unique<ControllerAgent>(ac));
    agents.back()->Start();
  }
  ASSERT_TRUE(Eventually([&] {
    for (const auto& a : agents) {
      if (!a->connected()) return false;
    }
    return true;
  }));

  auto current = [&]() {
    grpc::ClientContext ctx;
    v1::GetPlanRequest req;
    req.set_job_id("job");
    v1::Plan plan;
    return stub->GetPlan(&ctx, req, &plan).ok() ? plan.id() : v1::PlanId();
  };
  for (uint64_t it = 0; it < 16; ++it) {
    const v1::PlanId plan = current();
    for (int r = 0; r < kWorld; ++r) {
      grpc::ClientContext ctx;
      v1::ReportLoadResponse resp;
      auto writer = stub->ReportLoad(&ctx, &resp);
      v1::LoadReport report = controller::testing::Report(r, it, plan, /*hot_period=*/2);
      report.set_worker_secret(agents[r]->worker_secret());
      writer->Write(report);
      writer->WritesDone();
      ASSERT_TRUE(writer->Finish().ok());
    }
    server.service()->RunPlannerOnce();
  }
  const v1::PlanId last = current();
  ASSERT_GT(last.version(), 3u);
  for (const auto& a : agents) {
    ASSERT_TRUE(Eventually([&] { return a->Get(wire::FromProto(last)) != nullptr; }));
    EXPECT_GT(a->deltas_applied(), 0);
    // The agents connected before the first plan, so their streams opened with the
    // acknowledgement (WatchPlansRequest.acknowledge); it is not a plan.
    EXPECT_EQ(a->Get(placement::PlanId{}), nullptr);
  }
  // Every plan an agent holds is the published one, holder for holder.
  for (uint64_t v = 1; v <= last.version(); ++v) {
    grpc::ClientContext ctx;
    v1::GetPlanRequest req;
    req.set_job_id("job");
    req.set_version(v);
    v1::Plan published_proto;
    ASSERT_TRUE(stub->GetPlan(&ctx, req, &published_proto).ok());
    const placement::Plan published = wire::FromProto(published_proto);
    for (const auto& a : agents) {
      std::shared_ptr<const placement::Plan> mine = a->Get(published.id);
      if (mine == nullptr) continue;  // a rank may have connected after an early plan
      ASSERT_EQ(mine->layers.size(), published.layers.size());
      for (size_t l = 0; l < published.layers.size(); ++l) {
        EXPECT_EQ(mine->layers[l].owner, published.layers[l].owner) << "version " << v;
        EXPECT_EQ(mine->layers[l].replicas, published.layers[l].replicas) << "version " << v;
        EXPECT_EQ(mine->layers[l].remat, published.layers[l].remat) << "version " << v;
      }
    }
  }
  for (auto& a : agents) a->Stop();
  server.Shutdown();
}

}  // namespace
}  // namespace hecate::worker
