// hecatectl against an in-process controller on port 0: every command, every output format, and
// the exit codes for usage errors, not found and unavailable.
#include "clients/ctl/ctl.h"

#include <grpcpp/grpcpp.h>

#include <map>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "controller/server.h"
#include "wire/convert.h"

namespace hecate::ctl {
namespace {

using ::testing::HasSubstr;

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    controller::ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.metrics_listen = "";
    const char* tmp = std::getenv("TEST_TMPDIR");
    config.state_dir = std::string(tmp ? tmp : "/tmp") + "/ctl_test_" +
                       ::testing::UnitTest::GetInstance()->current_test_info()->name();
    config.service.manual_planning = true;
    server_ = std::make_unique<controller::ControllerServer>(config);
    ASSERT_TRUE(server_->Start().ok());
    auto stub = v1::Controller::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    std::map<int, std::string> secrets;
    for (int r = 0; r < 2; ++r) {
      v1::RegisterWorkerRequest req;
      req.set_job_id("job");
      req.set_rank(r);
      req.set_world_size(2);
      req.set_node("n0");
      req.set_device_memory_bytes(1 << 30);
      req.set_incarnation(1);
      *req.mutable_model() =
          wire::ToProto(placement::UniformModel("m", 2, 4, 1, 8, 16, 4, 64, 1e-3));
      req.mutable_links()->set_intra_node_bandwidth_bytes_per_second(1e10);
      req.mutable_links()->set_inter_node_bandwidth_bytes_per_second(1e9);
      grpc::ClientContext ctx;
      v1::RegisterWorkerResponse resp;
      ASSERT_TRUE(stub->RegisterWorker(&ctx, req, &resp).ok());
      secrets[r] = resp.worker_secret();
    }
    for (uint64_t it = 0; it < 2; ++it) {
      for (int r = 0; r < 2; ++r) {
        v1::LoadReport rep;
        rep.set_job_id("job");
        rep.set_rank(r);
        rep.set_incarnation(1);
        rep.set_worker_secret(secrets[r]);
        rep.set_iteration(it);
        for (int l = 0; l < 2; ++l) {
          auto* layer = rep.add_layers();
          layer->set_layer(l);
          for (int e = 0; e < 4; ++e) layer->add_expert_tokens(e == static_cast<int>(it) ? 40 : 8);
        }
        grpc::ClientContext ctx;
        v1::ReportLoadResponse resp;
        auto w = stub->ReportLoad(&ctx, &resp);
        w->Write(rep);
        w->WritesDone();
        ASSERT_TRUE(w->Finish().ok());
      }
      server_->service()->RunPlannerOnce();
    }
  }
  void TearDown() override { server_->Shutdown(); }

  int Ctl(std::vector<std::string> args, std::string* out, std::string* err = nullptr) {
    std::ostringstream o, e;
    args.insert(args.begin(), "--controller=" + server_->address());
    const int rc = ctl::Run(args, "", o, e);
    *out = o.str();
    if (err) *err = e.str();
    return rc;
  }

  std::unique_ptr<controller::ControllerServer> server_;
};

TEST_F(CtlTest, StatusWorkersLoad) {
  std::string out;
  ASSERT_EQ(Ctl({"status"}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("job"));
  EXPECT_THAT(out, HasSubstr("hecate"));
  ASSERT_EQ(Ctl({"get", "workers"}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("RANK"));
  EXPECT_THAT(out, HasSubstr("live"));
  ASSERT_EQ(Ctl({"get", "load", "--layer=1", "-o", "json"}, &out), kOk);
  v1::GetLoadResponse load;
  ASSERT_TRUE(wire::FromJson(out, &load).ok()) << out;
  ASSERT_EQ(load.layers_size(), 1);
  EXPECT_EQ(load.layers(0).layer(), 1u);
}

TEST_F(CtlTest, PlanInEveryFormat) {
  std::string out;
  ASSERT_EQ(Ctl({"get", "plan", "-o", "json"}, &out), kOk);
  v1::Plan plan;
  ASSERT_TRUE(wire::FromJson(out, &plan).ok()) << out;  // proto3 canonical JSON
  EXPECT_EQ(plan.job_id(), "job");
  ASSERT_EQ(Ctl({"get", "plan", "--version=1", "-o", "yaml"}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("jobId: \"job\""));
  EXPECT_THAT(out, HasSubstr("layers:\n- owner: ["));
  EXPECT_THAT(out, HasSubstr("\n- layer: 1\n  owner: ["));
  ASSERT_EQ(Ctl({"get", "plan", "--layer", "0"}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("OWNER"));
}

TEST_F(CtlTest, AdminAndDiff) {
  std::string out;
  ASSERT_EQ(Ctl({"freeze"}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("frozen jobs now: job"));
  ASSERT_EQ(Ctl({"unfreeze", "-o", "json"}, &out), kOk);
  EXPECT_EQ(out, "{\"frozenJobs\":[]}\n");
  ASSERT_EQ(Ctl({"policy", "set", "ep", "--job=job"}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("hecate -> ep"));
  server_->service()->RunPlannerOnce();
  ASSERT_EQ(Ctl({"status", "-o", "json"}, &out), kOk);
  v1::GetStatusResponse status;
  ASSERT_TRUE(wire::FromJson(out, &status).ok());
  const uint64_t v = status.jobs(0).current_plan().version();
  ASSERT_GE(v, 2u);
  ASSERT_EQ(Ctl({"plan", "diff", "1", std::to_string(v)}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("plan 1 -> "));
  ASSERT_EQ(Ctl({"plan", "rollback", "--version=1"}, &out), kOk);
  EXPECT_THAT(out, HasSubstr("placement of version 1"));
}

TEST_F(CtlTest, ExitCodes) {
  std::string out, err;
  EXPECT_EQ(Ctl({"get", "plan", "--version=99"}, &out, &err), kNotFound);
  EXPECT_THAT(err, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(Ctl({"get", "plan", "--job=nope"}, &out, &err), kNotFound);
  EXPECT_EQ(Ctl({"frobnicate"}, &out, &err), kUsage);
  EXPECT_EQ(Ctl({"get", "plan", "-o", "xml"}, &out, &err), kUsage);
  EXPECT_EQ(Ctl({"policy", "set", "magic"}, &out, &err), kNotFound);
  EXPECT_EQ(Ctl({"get", "plan", "--layer=9"}, &out, &err), kRejected);
  std::ostringstream o, e;
  EXPECT_EQ(ctl::Run({"--controller=127.0.0.1:1", "--timeout=2", "status"}, "", o, e),
            kUnavailable);
  EXPECT_THAT(e.str(), HasSubstr("is the controller running"));
  // HECATE_CONTROLLER is the fallback; an explicit flag wins.
  std::ostringstream o2, e2;
  EXPECT_EQ(ctl::Run({"status"}, server_->address(), o2, e2), kOk);
}

}  // namespace
}  // namespace hecate::ctl
