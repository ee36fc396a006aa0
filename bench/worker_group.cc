#include "bench/worker_group.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/subprocess.h"

namespace hecate::bench {

namespace {
using ::hecate::proc::FreePort;
}  // namespace

std::string FindBinary(const std::string& rel) {
  const std::string runfile = proc::Runfile(rel);
  if (access(runfile.c_str(), X_OK) == 0) return runfile;
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) {
    std::string self(buf, n);
    const std::string sibling = self.substr(0, self.rfind('/')) + "/../" + rel;
    if (access(sibling.c_str(), X_OK) == 0) return sibling;
    const std::string runfiles = self + ".runfiles/hecate/" + rel;
    if (access(runfiles.c_str(), X_OK) == 0) return runfiles;
  }
  return rel;
}

GroupResult RunWorkers(const std::string& worker_binary, int world,
                       const std::vector<std::string>& extra, const std::vector<std::string>& env,
                       int skip, const std::string& log_prefix) {
  GroupResult out;
  const int port = FreePort();
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<proc::Subprocess>> ranks;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv = {"/usr/bin/taskset", "-c",          absl::StrCat(r % cores),
                                     worker_binary,      "--threads=1", "--log_every=1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::vector<std::string> e = {absl::StrCat("RANK=", r), absl::StrCat("WORLD_SIZE=", world),
                                  "MASTER_ADDR=127.0.0.1",  absl::StrCat("MASTER_PORT=", port),
                                  "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1"};
    e.insert(e.end(), env.begin(), env.end());
    auto p = std::make_unique<proc::Subprocess>();
    if (!p->Start(argv, e, absl::StrCat(log_prefix, ".rank", r, ".log"))) {
      out.error = "cannot start worker";
      return out;
    }
    ranks.push_back(std::move(p));
  }
  std::map<std::string, double> sums;
  int n = 0;
  for (const std::string& line : ranks[0]->ReadLines(absl::Hours(2))) {
    std::map<std::string, std::string> kv;
    for (absl::string_view part : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      const size_t eq = part.find('=');
      if (eq != absl::string_view::npos)
        kv[std::string(part.substr(0, eq))] = std::string(part.substr(eq + 1));
    }
    if (line.rfind("summary ", 0) == 0) {
      out.summary = kv;
      continue;
    }
    if (line.rfind("progress ", 0) != 0) continue;
    int it = 0;
    (void)absl::SimpleAtoi(kv["iter"], &it);
    if (it < skip) continue;
    for (const auto& [k, v] : kv) {
      double d;
      if (absl::SimpleAtod(v, &d) && k != "iter" && k != "loss") {
        sums[k] += d;
        if (absl::EndsWith(k, "_ms")) out.samples_ms[k.substr(0, k.size() - 3)].push_back(d);
      }
    }
    ++n;
  }
  bool all_ok = true;
  for (auto& p : ranks) all_ok = p->Wait(absl::Seconds(120)) == 0 && all_ok;
  if (!all_ok || n == 0) {
    out.error = absl::StrCat("a worker failed; see ", log_prefix, ".rank*.log");
    return out;
  }
  for (const auto& [k, v] : sums) {
    if (absl::EndsWith(k, "_ms")) out.mean_ms[k.substr(0, k.size() - 3)] = v / n;
  }
  out.tokens_per_s = sums["tokens_per_s"] / n;
  out.balancedness = sums["balancedness"] / n;
  out.ok = true;
  return out;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  if (v.size() % 2 == 1) return v[mid];
  const double hi = v[mid];
  return (hi + *std::max_element(v.begin(), v.begin() + mid)) / 2;
}

std::vector<std::string> BenchModelFlags(int iterations) {
  return {"--iterations=" + std::to_string(iterations), "--layers=2", "--d_model=128", "--heads=2",
          "--experts=4", "--top_k=2", "--d_ffn=2048", "--seq_len=32", "--batch=16",
          "--skew_experts=2", "--attention_ms=0", "--device_gflops=90", "--link_gbytes=2.4",
          // A copy's fixed cost (replica and gradient buffers, one more GEMM per pass), as
          // //bench:calibration's balanced A/B measures it (docs/benchmarks.md): the planner
          // then leaves the balanced case alone and places the skewed copies that pay.
          "--copy_overhead_ms=4", "--reshard_period=" + std::to_string(kBenchReshardPeriod)};
}

}  // namespace hecate::bench
