// A minimal HTTP/1.0 server for Prometheus scrapes: every GET is answered with the text
// exposition (version 0.0.4) of one registry. One accept thread, one request at a time (scrapes
// are rare and small). Used by the worker, whose process cannot start civetweb's Exposer next to
// LibTorch: civetweb's fixed small thread stacks cannot hold the static TLS that LibTorch's
// dependencies bring, and pthread_create refuses them (docs/operations.md "Metrics"). Thread-safe.
#ifndef HECATE_COMMON_METRICS_HTTP_H_
#define HECATE_COMMON_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace hecate {

class MetricsHttpServer {
 public:
  // Binds "host:port" (port 0: any free port). UNAVAILABLE if it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();
  // "host:port" actually bound.
  const std::string& address() const { return address_; }

 private:
  MetricsHttpServer(int fd, std::string address, std::shared_ptr<prometheus::Registry> registry);
  void Loop();
  int fd_;
  std::string address_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace hecate

#endif  // HECATE_COMMON_METRICS_HTTP_H_
