// The gRPC service in process on port 0: concurrent simulated workers stream reports and watch
// plans; every watcher sees strictly increasing (epoch, version); queries and admin RPCs answer
// with canonical codes; health goes SERVING after recovery.
#include "controller/service/controller_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "controller/server.h"
#include "controller/test_job.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "wire/convert.h"
#include "wire/plan_codec.h"

namespace hecate::controller {
namespace {

constexpr int kWorld = 8;

v1::RegisterWorkerRequest Registration(int rank) { return testing::Registration(rank, kWorld); }
v1::LoadReport Report(int rank, uint64_t iteration, v1::PlanId plan) {
  return testing::Report(rank, iteration, plan, /*hot_period=*/3);
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.metrics_listen = "";
    const char* tmp = std::getenv("TEST_TMPDIR");
    config.state_dir = std::string(tmp ? tmp : "/tmp") + "/service_test_" +
                       ::testing::UnitTest::GetInstance()->current_test_info()->name();
    config.service.manual_planning = true;
    config.service.core.window = 2;
    config.service.core.damping = 0.0;
    server_ = std::make_unique<ControllerServer>(config);
    ASSERT_TRUE(server_->Start().ok());
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Controller::NewStub(channel_);
  }
  void TearDown() override { server_->Shutdown(); }

  grpc::Status Register(int rank) {
    grpc::ClientContext ctx;
    v1::RegisterWorkerResponse resp;
    grpc::Status s = stub_->RegisterWorker(&ctx, Registration(rank), &resp);
    if (s.ok()) secrets_[rank] = resp.worker_secret();
    return s;
  }
  // Sends `report` with its rank's secret (unless it carries one already).
  grpc::Status Send(v1::LoadReport report) {
    if (report.worker_secret().empty()) report.set_worker_secret(secrets_[report.rank()]);
    grpc::ClientContext ctx;
    v1::ReportLoadResponse resp;
    auto writer = stub_->ReportLoad(&ctx, &resp);
    writer->Write(report);
    writer->WritesDone();
    return writer->Finish();
  }
  v1::PlanId Current() {
    grpc::ClientContext ctx;
    v1::GetPlanRequest req;
    req.set_job_id("job");
    v1::Plan plan;
    return stub_->GetPlan(&ctx, req, &plan).ok() ? plan.id() : v1::PlanId();
  }

  std::unique_ptr<ControllerServer> server_;
  std::map<int, std::string> secrets_;  // by rank
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Controller::Stub> stub_;
};

TEST_F(ServiceTest, HealthIsServingAfterRecovery) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const char* service : {"", "hecate.v1.Controller"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

TEST_F(ServiceTest, ConcurrentWorkersSeeStrictlyIncreasingPlans) {
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(Register(r).ok());
  // One watcher per worker, each on its own thread, collecting every plan it sees. Odd ranks
  // ask for deltas and rebuild every plan from them; ranks 2 and 3 mod 4 ask for compact holder
  // lists and expand them; ranks 4-7 ask for the acknowledgement, which may open their stream
  // (once, first) when they connect before the first plan.
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> seen(kWorld);
  std::vector<std::vector<v1::Plan>> rebuilt(kWorld);
  std::vector<int> deltas(kWorld, 0), compact(kWorld, 0), acks(kWorld, 0);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::thread> watchers;
  for (int r = 0; r < kWorld; ++r) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    watchers.emplace_back(
        [this, r, ctx = contexts.back().get(), &seen, &rebuilt, &deltas, &compact, &acks] {
          v1::WatchPlansRequest req;
          req.set_job_id("job");
          req.set_rank(r);
          req.set_accept_deltas(r % 2 == 1);
          req.set_compact_holders(r % 4 >= 2);
          req.set_acknowledge(r >= 4);
          auto reader = stub_->WatchPlans(ctx, req);
          v1::Plan plan;
          while (reader->Read(&plan)) {
            if (!plan.has_id()) {
              EXPECT_TRUE(seen[r].empty()) << "the acknowledgement after a plan";
              EXPECT_EQ(plan.layers_size(), 0);
              ++acks[r];
              continue;
            }
            seen[r].push_back({plan.id().epoch(), plan.id().version()});
            for (const v1::LayerPlan& layer : plan.layers()) {
              if (!layer.holders_coded().empty()) ++compact[r];
              if (!layer.holders_coded().empty() && layer.replicas_size() > 0) ADD_FAILURE();
            }
            if (plan.has_delta_base()) {
              ++deltas[r];
              ASSERT_FALSE(rebuilt[r].empty()) << "a delta before any full plan";
            }
            absl::StatusOr<v1::Plan> full =
                wire::ApplyDelta(rebuilt[r].empty() ? v1::Plan() : rebuilt[r].back(), plan);
            ASSERT_TRUE(full.ok()) << full.status();
            plan = *std::move(full);
            rebuilt[r].push_back(plan);
          }
          reader->Finish();
        });
  }
  constexpr int kIterations = 12;
  for (uint64_t it = 0; it < kIterations; ++it) {
    const v1::PlanId plan = Current();
    std::vector<std::thread> senders;
    std::atomic<int> failures{0};
    for (int r = 0; r < kWorld; ++r) {
      senders.emplace_back([&, r] {
        if (!Send(Report(r, it, plan)).ok()) ++failures;
      });
    }
    for (auto& t : senders) t.join();
    ASSERT_EQ(failures.load(), 0);
    server_->service()->RunPlannerOnce();
  }
  const v1::PlanId last = Current();
  ASSERT_GT(last.version(), 2u) << "the moving hot expert should produce several plans";
  // Wait until every watcher has the last plan, then stop them.
  {
    grpc::ClientContext ctx;
    v1::WatchPlansRequest req;
    req.set_job_id("job");
    auto reader = stub_->WatchPlans(&ctx, req);
    v1::Plan first;
    ASSERT_TRUE(reader->Read(&first));  // a late watcher gets the current plan first
    EXPECT_EQ(first.id().version(), last.version());
    // Watchers get the plan without per-device predictions unless they ask for them.
    EXPECT_GT(first.layers_size(), 0);
    for (const v1::LayerPlan& layer : first.layers()) {
      EXPECT_EQ(layer.prediction().device_tokens_size(), 0);
    }
    EXPECT_EQ(first.predicted_device_memory_bytes_size(), 0);
    ctx.TryCancel();
    reader->Finish();
  }
  {
    grpc::ClientContext ctx;
    v1::WatchPlansRequest req;
    req.set_job_id("job");
    req.set_device_detail(true);
    auto reader = stub_->WatchPlans(&ctx, req);
    v1::Plan first;
    ASSERT_TRUE(reader->Read(&first));
    EXPECT_EQ(first.id().version(), last.version());
    for (const v1::LayerPlan& layer : first.layers()) {
      EXPECT_EQ(layer.prediction().device_tokens_size(), kWorld);
    }
    EXPECT_EQ(first.predicted_device_memory_bytes_size(), kWorld);
    ctx.TryCancel();
    reader->Finish();
  }
  // Every published plan, for comparison with what delta watchers rebuilt.
  std::map<uint64_t, v1::Plan> by_version;
  for (uint64_t v = 1; v <= last.version(); ++v) {
    grpc::ClientContext ctx;
    v1::GetPlanRequest req;
    req.set_job_id("job");
    req.set_version(v);
    ASSERT_TRUE(stub_->GetPlan(&ctx, req, &by_version[v]).ok()) << "version " << v;
  }
  server_->Shutdown();  // finishes every watcher stream after its queued plans
  for (auto& t : watchers) t.join();
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_FALSE(seen[r].empty());
    for (size_t i = 1; i < seen[r].size(); ++i) {
      EXPECT_LT(seen[r][i - 1], seen[r][i]) << "watcher " << r;
    }
    EXPECT_EQ(seen[r].back().second, last.version()) << "watcher " << r;
    EXPECT_LE(acks[r], r >= 4 ? 1 : 0) << "watcher " << r;
    // Deltas only where asked for; rebuilt plans equal the published ones.
    if (r % 2 == 0) {
      EXPECT_EQ(deltas[r], 0) << "watcher " << r;
    } else {
      EXPECT_GT(deltas[r], 0) << "watcher " << r;
    }
    if (r % 4 >= 2) {
      EXPECT_GT(compact[r], 0) << "watcher " << r;
    } else {
      EXPECT_EQ(compact[r], 0) << "watcher " << r;
    }
    for (const v1::Plan& plan : rebuilt[r]) {
      const v1::Plan& published = by_version[plan.id().version()];
      ASSERT_EQ(plan.layers_size(), published.layers_size());
      for (int l = 0; l < plan.layers_size(); ++l) {
        EXPECT_EQ(plan.layers(l).owner_size(), published.layers(l).owner_size());
        ASSERT_EQ(plan.layers(l).replicas_size(), published.layers(l).replicas_size());
        for (int e = 0; e < plan.layers(l).replicas_size(); ++e) {
          EXPECT_THAT(plan.layers(l).replicas(e).devices(),
                      ::testing::ElementsAreArray(published.layers(l).replicas(e).devices()))
              << "watcher " << r << " version " << plan.id().version() << " layer " << l;
        }
      }
    }
  }
}

TEST_F(ServiceTest, WatchOpensWithAnAcknowledgementWhenNoPlanIsDue) {
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(Register(r).ok());
  struct Watch {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::Plan>> reader;
  };
  auto open = [this](bool acknowledge, const v1::PlanId& after) {
    auto w = std::make_unique<Watch>();
    w->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::WatchPlansRequest req;
    req.set_job_id("job");
    req.set_acknowledge(acknowledge);
    *req.mutable_after() = after;
    w->reader = stub_->WatchPlans(&w->ctx, req);
    return w;
  };
  // Before any plan: the acknowledgement (job id only, no id, no layers), then the first plan.
  auto early = open(true, {});
  v1::Plan message;
  ASSERT_TRUE(early->reader->Read(&message));
  EXPECT_FALSE(message.has_id());
  EXPECT_EQ(message.job_id(), "job");
  EXPECT_EQ(message.layers_size(), 0);
  // A watcher that does not ask gets no acknowledgement: its first message is the first plan.
  auto plain = open(false, {});
  for (uint64_t it = 0; it < 6 && Current().version() == 0; ++it) {
    for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(Send(Report(r, it, {})).ok());
    server_->service()->RunPlannerOnce();
  }
  const v1::PlanId first = Current();
  ASSERT_GT(first.version(), 0u);
  for (Watch* w : {early.get(), plain.get()}) {
    ASSERT_TRUE(w->reader->Read(&message));
    ASSERT_TRUE(message.has_id());
    EXPECT_EQ(message.id().version(), first.version());
    EXPECT_GT(message.layers_size(), 0);
  }
  // Once a plan exists it opens the stream itself; the acknowledgement comes only when no plan
  // is due (the watcher already has the current one).
  auto late = open(true, {});
  ASSERT_TRUE(late->reader->Read(&message));
  EXPECT_EQ(message.id().version(), first.version());
  auto current = open(true, first);
  ASSERT_TRUE(current->reader->Read(&message));
  EXPECT_FALSE(message.has_id());
  EXPECT_EQ(message.job_id(), "job");
  for (Watch* w : {early.get(), plain.get(), late.get(), current.get()}) {
    w->ctx.TryCancel();
    w->reader->Finish();
  }
}

TEST_F(ServiceTest, RejectedReportEndsTheStreamWithItsCode) {
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(Register(r).ok());
  v1::LoadReport bad = Report(0, 0, {});
  bad.mutable_layers(1)->add_expert_tokens(1);
  grpc::Status s = Send(bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::LoadReport unknown = Report(0, 0, {});
  unknown.set_job_id("nope");
  EXPECT_EQ(Send(unknown).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::LoadReport shuffled = Report(0, 0, {});
  shuffled.mutable_layers(0)->set_layer(1);
  EXPECT_EQ(Send(shuffled).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Send(Report(0, 0, {})).ok());
  EXPECT_TRUE(Send(Report(0, 0, {})).ok());  // duplicate: idempotent
}

TEST_F(ServiceTest, QueriesAndAdmin) {
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(Register(r).ok());
  {
    grpc::ClientContext ctx;
    v1::GetPlanRequest req;
    req.set_job_id("job");
    v1::Plan plan;
    EXPECT_EQ(stub_->GetPlan(&ctx, req, &plan).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(Send(Report(r, 0, {})).ok());
  server_->service()->RunPlannerOnce();
  {
    grpc::ClientContext ctx;
    v1::GetPlanRequest req;
    req.set_job_id("job");
    req.set_layer(1);
    v1::Plan plan;
    ASSERT_TRUE(stub_->GetPlan(&ctx, req, &plan).ok());
    ASSERT_EQ(plan.layers_size(), 1);
    EXPECT_EQ(plan.layers(0).layer(), 1u);
    EXPECT_EQ(plan.id().epoch(), server_->service()->epoch());
  }
  {
    grpc::ClientContext ctx;
    v1::GetPlanRequest req;
    req.set_job_id("job");
    req.set_layer(7);
    v1::Plan plan;
    EXPECT_EQ(stub_->GetPlan(&ctx, req, &plan).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::ListWorkersRequest req;
    v1::ListWorkersResponse resp;
    ASSERT_TRUE(stub_->ListWorkers(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.workers_size(), kWorld);
    EXPECT_EQ(resp.workers(3).state(), v1::WORKER_STATE_LIVE);
  }
  {
    grpc::ClientContext ctx;
    v1::GetLoadRequest req;
    req.set_job_id("job");
    v1::GetLoadResponse resp;
    ASSERT_TRUE(stub_->GetLoad(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.layers_size(), 2);
    EXPECT_EQ(resp.layers(0).expert_tokens(0), 144.0 * kWorld);
  }
  {
    grpc::ClientContext ctx;
    v1::SetPolicyRequest req;
    req.set_policy("magic");
    v1::SetPolicyResponse resp;
    EXPECT_EQ(stub_->SetPolicy(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::FreezeRequest req;
    req.set_job_id("job");
    v1::FreezeResponse resp;
    ASSERT_TRUE(stub_->Freeze(&ctx, req, &resp).ok());
    EXPECT_THAT(resp.frozen_jobs(), ::testing::ElementsAre("job"));
  }
  {
    grpc::ClientContext ctx;
    v1::GetStatusRequest req;
    v1::GetStatusResponse resp;
    ASSERT_TRUE(stub_->GetStatus(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.serving());
    ASSERT_EQ(resp.jobs_size(), 1);
    EXPECT_TRUE(resp.jobs(0).frozen());
    EXPECT_EQ(resp.jobs(0).live_workers(), kWorld);
  }
  {
    grpc::ClientContext ctx;
    v1::RollbackPlanRequest req;
    req.set_job_id("job");
    req.set_to_version(1);
    v1::Plan plan;
    ASSERT_TRUE(stub_->RollbackPlan(&ctx, req, &plan).ok());
    EXPECT_EQ(plan.id().version(), 2u);
  }
}

}  // namespace
}  // namespace hecate::controller
