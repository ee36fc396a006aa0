#include "controller/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace hecate::controller {

namespace {
constexpr char kServiceName[] = "hecate.v1.Controller";

std::string HostOf(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  return colon == std::string::npos ? listen : listen.substr(0, colon);
}
}  // namespace

ControllerServer::ControllerServer(ServerConfig config, const Clock* clock)
    : config_(std::move(config)), clock_(clock != nullptr ? clock : &real_clock_) {}

ControllerServer::~ControllerServer() { Shutdown(absl::ZeroDuration()); }

absl::Status ControllerServer::Start() {
  absl::StatusOr<std::unique_ptr<SqliteStateStore>> store =
      SqliteStateStore::Open(config_.state_dir);
  if (!store.ok()) return store.status();
  store_ = std::move(*store);

  registry_ = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<ControllerMetrics>(registry_, config_.expert_detail_metrics,
                                                 config_.service.version);
  service_ =
      std::make_unique<ControllerService>(config_.service, store_.get(), metrics_.get(), clock_);

  grpc::EnableDefaultHealthCheckService(true);
  if (config_.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config_.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.service.max_report_bytes));
  builder.SetMaxSendMessageSize(-1);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config_.listen));
  }
  address_ = absl::StrCat(HostOf(config_.listen), ":", port);
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(kServiceName, false);
  health->SetServingStatus(false);

  if (!config_.metrics_listen.empty()) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(config_.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", config_.metrics_listen, ": ", e.what()));
    }
    exposer_->RegisterCollectable(registry_);
    const std::vector<int> ports = exposer_->GetListeningPorts();
    metrics_address_ =
        absl::StrCat(HostOf(config_.metrics_listen), ":", ports.empty() ? 0 : ports.front());
  }

  if (absl::Status s = service_->Recover(); !s.ok()) return s;
  service_->Start();
  health->SetServingStatus(kServiceName, true);
  health->SetServingStatus(true);
  LogInfo("controller serving", LogFields()("address", address_)("metrics", metrics_address_)(
                                    "state_dir", config_.state_dir)("epoch", service_->epoch())(
                                    "policy", config_.service.core.default_policy));
  return absl::OkStatus();
}

void ControllerServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(kServiceName, false);
    health->SetServingStatus(false);
  }
  service_->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(grace)));
  server_->Wait();
  server_.reset();
  exposer_.reset();
  LogInfo("controller stopped");
}

}  // namespace hecate::controller
