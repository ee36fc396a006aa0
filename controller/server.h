// The controller's composition root: builds the store, metrics, service, gRPC server (with the
// health service and reflection) and the metrics exporter in dependency order. Construction does
// no I/O; Start() does, and returns why it failed.
#ifndef HECATE_CONTROLLER_SERVER_H_
#define HECATE_CONTROLLER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "controller/metrics/controller_metrics.h"
#include "controller/service/controller_service.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus
namespace grpc {
class Server;
class ServerCredentials;
}  // namespace grpc

namespace hecate::controller {

struct ServerConfig {
  std::string listen = "127.0.0.1:7450";
  // Empty: no /metrics endpoint.
  std::string metrics_listen = "127.0.0.1:7451";
  std::string state_dir = "hecate-state";
  bool reflection = true;
  ExpertDetail expert_detail_metrics = ExpertDetail::kAuto;
  // TLS for the gRPC port: server certificate chain and key (PEM); with a client CA, client
  // certificates are required and verified (mTLS). The files are watched and re-read when they
  // change (gRPC's FileWatcherCertificateProvider), every tls_refresh_seconds.
  std::string tls_cert_file, tls_key_file, tls_client_ca_file;
  unsigned tls_refresh_seconds = 60;
  // Roles (controller/auth/auth.h): bearer-token digests, and client-certificate names.
  std::string tokens_file, tls_client_roles_file;
  // Serve plaintext on a non-loopback address (refused otherwise).
  bool insecure = false;
  ServiceConfig service;
};

class ControllerServer {
 public:
  explicit ControllerServer(ServerConfig config, const Clock* clock = nullptr);
  ~ControllerServer();

  // Opens the state dir, starts gRPC (health NOT_SERVING), recovers, then marks the service and
  // health SERVING and starts planning. FAILED_PRECONDITION when the state dir is locked,
  // DATA_LOSS when it is corrupt or emptied, UNAVAILABLE when a port cannot be bound (another
  // process holds it: gRPC's SO_REUSEPORT is off), INVALID_ARGUMENT for TLS and credential
  // settings that do not fit together (plaintext on a non-loopback address without `insecure`,
  // tokens without TLS, a missing or non-PEM certificate file).
  absl::Status Start();
  // Graceful: health NOT_SERVING, watchers finished, in-flight RPCs drained (up to `grace`),
  // planner stopped. State is durable at every commit, so nothing is flushed here.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

  // "host:port" actually bound (port 0 resolved).
  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  ControllerService* service() { return service_.get(); }
  // The metrics registry (what /metrics exports); null before Start.
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

 private:
  // The gRPC port's credentials from the TLS settings; refuses plaintext on a non-loopback
  // address without `insecure`, and tokens without TLS.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials() const;
  ServerConfig config_;
  RealClock real_clock_;
  const Clock* clock_;
  std::unique_ptr<StateStore> store_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ControllerMetrics> metrics_;
  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
  std::string metrics_address_;
};

}  // namespace hecate::controller

#endif  // HECATE_CONTROLLER_SERVER_H_
