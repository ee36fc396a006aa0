#include "common/metrics_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/numbers.h"
#include "prometheus/counter.h"

namespace hecate {
namespace {

// One HTTP/1.0 request to "127.0.0.1:port"; the whole response (the server closes the connection).
std::string Get(const std::string& address, const std::string& request) {
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(fd);
    return "";
  }
  (void)!write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(MetricsHttpServerTest, ServesTheRegistryToEveryScrape) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::Counter& c = prometheus::BuildCounter()
                               .Name("hecate_test_events_total")
                               .Help("Events.")
                               .Register(*registry)
                               .Add({{"kind", "a"}});
  c.Increment(3);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = (*server)->address();
  ASSERT_NE(address.find("127.0.0.1:"), std::string::npos);
  EXPECT_NE(address, "127.0.0.1:0") << "the bound port is reported back";

  std::string r = Get(address, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.", 0), 0u) << r;
  EXPECT_NE(r.find(" 200 "), std::string::npos) << r;
  EXPECT_NE(r.find("text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(r.find("hecate_test_events_total{kind=\"a\"} 3"), std::string::npos) << r;

  // A later scrape sees the registry as it is then.
  c.Increment();
  r = Get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(r.find("hecate_test_events_total{kind=\"a\"} 4"), std::string::npos) << r;
}

TEST(MetricsHttpServerTest, ReportsWhenItCannotBind) {
  auto registry = std::make_shared<prometheus::Registry>();
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> first =
      MetricsHttpServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok());
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start((*first)->address(), registry);
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace hecate
