// An in-process Controller server on port 0 with the generated client: every RPC shape (unary,
// client stream, server stream) completes end to end. The bare generated service answers
// UNIMPLEMENTED for every method, which is what this checks; the controller's own handlers are
// tested in controller/service.
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "hecate/v1/controller.grpc.pb.h"

namespace hecate::v1 {
namespace {

class RpcShapesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    stub_ = Controller::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                                    grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { server_->Shutdown(); }

  Controller::Service service_;  // generated base: every method is UNIMPLEMENTED
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Controller::Stub> stub_;
};

TEST_F(RpcShapesTest, Unary) {
  grpc::ClientContext ctx;
  GetStatusResponse response;
  grpc::Status status = stub_->GetStatus(&ctx, GetStatusRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(RpcShapesTest, ClientStream) {
  grpc::ClientContext ctx;
  ReportLoadResponse response;
  auto writer = stub_->ReportLoad(&ctx, &response);
  LoadReport report;
  report.set_job_id("j");
  writer->Write(report);  // may fail once the server has already answered; Finish says why
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(RpcShapesTest, ServerStream) {
  grpc::ClientContext ctx;
  WatchPlansRequest request;
  request.set_job_id("j");
  auto reader = stub_->WatchPlans(&ctx, request);
  Plan plan;
  EXPECT_FALSE(reader->Read(&plan));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

}  // namespace
}  // namespace hecate::v1
