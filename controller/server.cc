#include "controller/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>
#include <fstream>
#include <limits>

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

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "[::1]" || host == "::1" || host.rfind("127.", 0) == 0;
}
}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ControllerServer::Credentials() const {
  const bool tls = !config_.tls_cert_file.empty() || !config_.tls_key_file.empty();
  if (tls && (config_.tls_cert_file.empty() || config_.tls_key_file.empty())) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  if (!tls && !config_.tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError("--tls_client_ca_file needs --tls_cert_file/--tls_key_file");
  }
  if (!config_.tls_client_roles_file.empty() && config_.tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_roles_file needs --tls_client_ca_file (verified client certificates)");
  }
  if (!tls) {
    if (!config_.tokens_file.empty()) {
      return absl::InvalidArgumentError(
          "--tokens_file needs TLS: bearer tokens are never sent in the clear");
    }
    if (!IsLoopback(HostOf(config_.listen))) {
      if (!config_.insecure) {
        return absl::InvalidArgumentError(
            absl::StrCat("refusing to serve ", config_.listen,
                         " without TLS: pass --tls_cert_file and --tls_key_file, or --insecure"));
      }
      LogWarn(
          "serving without TLS on a non-loopback address (--insecure): any peer that reaches "
          "the port can steer placement",
          LogFields()("address", config_.listen));
    }
    return grpc::InsecureServerCredentials();
  }
  // Read once here so that a missing or malformed file is an error at start, not a failed
  // handshake later.
  for (const std::string& f :
       {config_.tls_cert_file, config_.tls_key_file, config_.tls_client_ca_file}) {
    if (f.empty()) continue;
    std::ifstream in(f);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) return absl::NotFoundError(absl::StrCat("cannot read ", f));
    if (text.find("-----BEGIN ") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(f, " is not a PEM file"));
    }
  }
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      config_.tls_key_file, config_.tls_cert_file, config_.tls_client_ca_file,
      config_.tls_refresh_seconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!config_.tls_client_ca_file.empty()) {
    // A presented certificate must verify (else the handshake fails); a missing one is the
    // service's UNAUTHENTICATED (counted), unless a bearer token stands in for it.
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

ControllerServer::ControllerServer(ServerConfig config, const Clock* clock)
    : config_(std::move(config)), clock_(clock != nullptr ? clock : &real_clock_) {}

ControllerServer::~ControllerServer() { Shutdown(absl::ZeroDuration()); }

absl::Status ControllerServer::Start() {
  // Settings first: a bad one changes nothing (not even the state dir's lock).
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = Credentials();
  if (!credentials.ok()) return credentials.status();
  if (!config_.tokens_file.empty() || !config_.tls_client_roles_file.empty() ||
      !config_.tls_client_ca_file.empty()) {
    absl::StatusOr<Authenticator> auth = Authenticator::FromFiles(
        config_.tokens_file, config_.tls_client_roles_file, !config_.tls_client_ca_file.empty());
    if (!auth.ok()) return auth.status();
    config_.service.auth = std::move(*auth);
  }

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
  builder.AddListeningPort(config_.listen, *credentials, &port);
  builder.RegisterService(service_.get());
  // Reports up to 4x the limit reach the service, which refuses and counts them (oversized);
  // gRPC refuses anything larger before it is read.
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(4 * config_.service.max_report_bytes, std::numeric_limits<int>::max())));
  // One controller per port: without this gRPC sets SO_REUSEPORT, and a second controller (with
  // another state dir) binds the same port and silently takes half the clients.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxSendMessageSize(-1);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config_.listen,
                                               " (in use by another process, or not an address "
                                               "of this host)"));
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
