// The controller's security controls, in process over real gRPC on loopback: TLS refuses a
// plaintext client; mTLS without a client certificate is UNAUTHENTICATED; a worker identity
// cannot call operator RPCs; a rank cannot report with another rank's secret; bearer tokens are
// never logged; one controller per port; an emptied state.db is DATA_LOSS; bytes that do not parse
// as a LoadReport are INVALID_ARGUMENT and counted.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/grpc_credentials.h"
#include "controller/auth/auth.h"
#include "controller/server.h"
#include "controller/test_job.h"
#include "prometheus/registry.h"

namespace hecate::controller {
namespace {

std::string Tmp() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// The throwaway PKI (tests/certs/make_test_certs.sh), made once for the suite.
const std::string& Certs() {
  static const std::string dir = [] {
    const std::string d = Tmp() + "/certs";
    const char* srcdir = std::getenv("TEST_SRCDIR");
    const char* ws = std::getenv("TEST_WORKSPACE");
    const std::string script = std::string(srcdir ? srcdir : ".") + "/" + (ws ? ws : "hecate") +
                               "/tests/certs/make_test_certs.sh";
    if (std::system(("bash '" + script + "' '" + d + "'").c_str()) != 0) std::abort();
    return d;
  }();
  return dir;
}

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = Tmp() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

class SecurityTest : public ::testing::Test {
 protected:
  ServerConfig Config() {
    ServerConfig c;
    c.listen = "127.0.0.1:0";
    c.metrics_listen = "";
    c.state_dir =
        Tmp() + "/state_" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    c.service.manual_planning = true;
    return c;
  }
  ServerConfig MtlsConfig() {
    ServerConfig c = Config();
    c.tls_cert_file = Certs() + "/server.crt";
    c.tls_key_file = Certs() + "/server.key";
    c.tls_client_ca_file = Certs() + "/ca.crt";
    c.tls_client_roles_file =
        Write("roles", "worker worker-0\nworker worker-1\noperator operator\n");
    return c;
  }
  void Start(ServerConfig c) {
    server_ = std::make_unique<ControllerServer>(std::move(c));
    absl::Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s;
  }
  // A stub as `who` (a client certificate name, or "" for TLS without one).
  std::unique_ptr<v1::Controller::Stub> As(const std::string& who) {
    ClientTls tls;
    tls.ca_file = Certs() + "/ca.crt";
    if (!who.empty()) {
      tls.cert_file = Certs() + "/" + who + ".crt";
      tls.key_file = Certs() + "/" + who + ".key";
    }
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = ChannelCredentialsFor(tls);
    EXPECT_TRUE(creds.ok()) << creds.status();
    return v1::Controller::NewStub(grpc::CreateChannel(server_->address(), *creds));
  }
  static grpc::Status Status(v1::Controller::Stub* stub) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetStatusResponse resp;
    return stub->GetStatus(&ctx, v1::GetStatusRequest(), &resp);
  }
  static grpc::Status Register(v1::Controller::Stub* stub, int rank, std::string* secret) {
    grpc::ClientContext ctx;
    v1::RegisterWorkerResponse resp;
    grpc::Status s = stub->RegisterWorker(&ctx, testing::Registration(rank, 2), &resp);
    if (secret != nullptr) *secret = resp.worker_secret();
    return s;
  }
  static grpc::Status Send(v1::Controller::Stub* stub, const v1::LoadReport& report) {
    grpc::ClientContext ctx;
    v1::ReportLoadResponse resp;
    auto w = stub->ReportLoad(&ctx, &resp);
    w->Write(report);
    w->WritesDone();
    return w->Finish();
  }
  std::unique_ptr<ControllerServer> server_;
};

TEST_F(SecurityTest, PlaintextClientToTlsControllerFails) {
  ServerConfig c = Config();
  c.tls_cert_file = Certs() + "/server.crt";
  c.tls_key_file = Certs() + "/server.key";
  Start(c);
  auto plain = v1::Controller::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(Status(plain.get()).ok());
  EXPECT_TRUE(Status(As("").get()).ok()) << "TLS without client auth: anyone with the CA";
}

TEST_F(SecurityTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  Start(MtlsConfig());
  grpc::Status s = Status(As("").get());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_FALSE(Status(As("rogue").get()).ok()) << "a certificate from another CA";
  EXPECT_TRUE(Status(As("operator").get()).ok());
}

TEST_F(SecurityTest, WorkerIdentityCannotChangePolicy) {
  Start(MtlsConfig());
  auto worker = As("worker-0");
  auto op = As("operator");
  ASSERT_TRUE(Register(worker.get(), 0, nullptr).ok());
  grpc::ClientContext ctx;
  v1::SetPolicyRequest req;
  req.set_policy("ep");
  v1::SetPolicyResponse resp;
  grpc::Status s = worker->SetPolicy(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  grpc::ClientContext ctx2;
  v1::GetStatusResponse status;
  ASSERT_TRUE(op->GetStatus(&ctx2, v1::GetStatusRequest(), &status).ok());
  EXPECT_EQ(status.default_policy(), "hecate") << "the policy did not change";
  grpc::ClientContext ctx3;
  EXPECT_TRUE(op->SetPolicy(&ctx3, req, &resp).ok()) << "an operator may";
  // Refusals are counted by reason.
  bool counted = false;
  for (const prometheus::MetricFamily& f : server_->registry()->Collect()) {
    if (f.name != "hecate_auth_failures_total") continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      if (m.label[0].value == "wrong_role") counted = m.counter.value >= 1;
    }
  }
  EXPECT_TRUE(counted);
}

TEST_F(SecurityTest, ARankCannotReportWithAnotherRanksSecret) {
  Start(Config());  // plaintext loopback: the secrets hold there too
  auto stub = v1::Controller::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  std::string secret0, secret1;
  ASSERT_TRUE(Register(stub.get(), 0, &secret0).ok());
  ASSERT_TRUE(Register(stub.get(), 1, &secret1).ok());
  ASSERT_EQ(secret0.size(), 64u);
  ASSERT_NE(secret0, secret1);
  v1::LoadReport forged = testing::Report(1, 0, v1::PlanId(), 1);
  forged.set_worker_secret(secret0);
  grpc::Status s = Send(stub.get(), forged);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  v1::LoadReport none = testing::Report(1, 0, v1::PlanId(), 1);
  EXPECT_EQ(Send(stub.get(), none).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Nothing was ingested: rank 1 has reported nothing.
  grpc::ClientContext ctx;
  v1::ListWorkersRequest req;
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(stub->ListWorkers(&ctx, req, &workers).ok());
  for (const v1::WorkerInfo& w : workers.workers()) EXPECT_EQ(w.last_iteration(), 0u);
  v1::LoadReport genuine = testing::Report(1, 0, v1::PlanId(), 1);
  genuine.set_worker_secret(secret1);
  EXPECT_TRUE(Send(stub.get(), genuine).ok());
  // Registering the same incarnation again needs its secret; with it, the same one comes back.
  EXPECT_EQ(Register(stub.get(), 1, nullptr).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext rctx;
  v1::RegisterWorkerRequest again = testing::Registration(1, 2);
  again.set_worker_secret(secret1);
  v1::RegisterWorkerResponse resp;
  ASSERT_TRUE(stub->RegisterWorker(&rctx, again, &resp).ok());
  EXPECT_EQ(resp.worker_secret(), secret1);
}

TEST_F(SecurityTest, TokensGiveRolesAndAreNeverLogged) {
  const std::string op_token = "op-" + NewSecret(), worker_token = "wk-" + NewSecret();
  ServerConfig c = Config();
  c.tls_cert_file = Certs() + "/server.crt";
  c.tls_key_file = Certs() + "/server.key";
  c.tokens_file = Write("tokens", absl::StrCat("operator ", Hex(Sha256(op_token)), "\nworker ",
                                               Hex(Sha256(worker_token)), "\n"));
  ::testing::internal::CaptureStderr();
  Start(c);
  auto with_token = [&](const std::string& token) {
    ClientTls tls;
    tls.ca_file = Certs() + "/ca.crt";
    tls.token_file = Write("token_" + token.substr(0, 2), token + "\n");
    return v1::Controller::NewStub(
        grpc::CreateChannel(server_->address(), *ChannelCredentialsFor(tls)));
  };
  EXPECT_TRUE(Status(with_token(op_token).get()).ok());
  EXPECT_EQ(Status(with_token(worker_token).get()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Status(with_token("not-a-token").get()).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Status(As("").get()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  server_->Shutdown();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(log, ::testing::HasSubstr("call refused")) << "refusals are logged";
  EXPECT_EQ(log.find(op_token), std::string::npos);
  EXPECT_EQ(log.find(worker_token), std::string::npos);
  EXPECT_EQ(log.find("not-a-token"), std::string::npos);
}

double LimitRejections(ControllerServer& server, const std::string& limit) {
  for (const prometheus::MetricFamily& f : server.registry()->Collect()) {
    if (f.name != "hecate_limit_rejections_total") continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      if (m.label[0].value == limit) return m.counter.value;
    }
  }
  return -1;
}

// Opens a watch on `job` and reads its first message (the acknowledgement or a plan): the stream
// is then open on the server. Returns the stream's status if it ended instead.
struct OpenWatch {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::Plan>> reader;
  bool open = false;
  OpenWatch(v1::Controller::Stub* stub, const std::string& job) {
    v1::WatchPlansRequest req;
    req.set_job_id(job);
    req.set_acknowledge(true);
    reader = stub->WatchPlans(&ctx, req);
    v1::Plan first;
    open = reader->Read(&first);
  }
  grpc::Status Finish() {
    finished = true;
    return reader->Finish();
  }
  ~OpenWatch() {
    if (finished) return;
    ctx.TryCancel();
    reader->Finish();
  }
  bool finished = false;
};

TEST_F(SecurityTest, TheStreamOverThePeerLimitIsResourceExhausted) {
  ServerConfig c = Config();
  c.service.max_streams_per_peer = 2;
  Start(c);
  auto stub = v1::Controller::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(Register(stub.get(), 0, nullptr).ok());
  {
    OpenWatch a(stub.get(), "job"), b(stub.get(), "job");
    ASSERT_TRUE(a.open && b.open);
    OpenWatch third(stub.get(), "job");
    EXPECT_FALSE(third.open);
    grpc::Status s = third.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_EQ(LimitRejections(*server_, "peer_streams"), 1);
  }
}

TEST_F(SecurityTest, ARankReportingTooFastIsResourceExhausted) {
  ServerConfig c = Config();
  c.service.max_reports_per_second = 1;  // a bucket of 2
  FakeClock clock(absl::FromUnixSeconds(1000));
  server_ = std::make_unique<ControllerServer>(c, &clock);
  ASSERT_TRUE(server_->Start().ok());
  auto stub = v1::Controller::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  std::string secret;
  ASSERT_TRUE(Register(stub.get(), 0, &secret).ok());
  auto report = [&](uint64_t it) {
    v1::LoadReport r = testing::Report(0, it, v1::PlanId(), 1);
    r.set_worker_secret(secret);
    return Send(stub.get(), r);
  };
  EXPECT_TRUE(report(0).ok());
  EXPECT_TRUE(report(1).ok());
  grpc::Status s = report(2);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_EQ(LimitRejections(*server_, "report_rate"), 1);
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(report(2).ok()) << "a second later there is room again";
}

TEST_F(SecurityTest, PlaintextOnlyOnLoopbackUnlessInsecure) {
  ServerConfig c = Config();
  c.listen = "0.0.0.0:0";
  ControllerServer refused(c);
  absl::Status s = refused.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("--insecure"));
  ServerConfig tokens = Config();
  tokens.tokens_file = Write("tokens_plain", "operator " + Hex(Sha256("x")) + "\n");
  EXPECT_EQ(ControllerServer(tokens).Start().code(), absl::StatusCode::kInvalidArgument)
      << "tokens are never accepted in the clear";
}

TEST_F(SecurityTest, OneControllerPerPort) {
  Start(Config());
  ServerConfig second = Config();
  second.state_dir += "_second";
  second.listen = server_->address();
  ControllerServer other(second);
  absl::Status s = other.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("in use"));
}

TEST_F(SecurityTest, AnEmptiedStateDatabaseIsDataLoss) {
  ServerConfig c = Config();
  ASSERT_EQ(mkdir(c.state_dir.c_str(), 0750), 0);
  std::ofstream(c.state_dir + "/state.db");  // 0 bytes
  ControllerServer server(c);
  absl::Status s = server.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("state.db"));
}

TEST_F(SecurityTest, GarbageReportBytesAreInvalidArgumentAndCounted) {
  Start(Config());
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      generic.PrepareCall(&ctx, "/hecate.v1.Controller/ReportLoad", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::Slice garbage(std::string("\xff\xff\xff\xff garbage, not a LoadReport"));
  grpc::ByteBuffer buffer(&garbage, 1);
  call->Write(buffer, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  double malformed = 0;
  for (const prometheus::MetricFamily& f : server_->registry()->Collect()) {
    if (f.name != "hecate_reports_received_total") continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      if (m.label[0].value == "malformed") malformed = m.counter.value;
    }
  }
  EXPECT_EQ(malformed, 1);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace hecate::controller
