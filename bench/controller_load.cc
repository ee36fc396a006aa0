// Controller load benchmark: a separate process that starts hecate-controller, then simulates N
// workers on loopback. Every simulated second is one iteration: each worker sends its LoadReport
// (one ReportLoad stream per report, so the measured latency covers the server's validation and
// ingest), and every worker holds a WatchPlans stream.
//
//   bazel run //bench:controller_load -- --workers=1024 --layers=58 --experts=256 --seconds=20
//
// Prints: sustained reports/s, p50/p99 ingest latency, plan fan-out time (publish -> last watcher),
// plans published, controller CPU seconds and peak RSS. Targets (issue 4): p99 ingest < 10 ms,
// fan-out < 100 ms, RSS < 2 GiB.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/subprocess.h"
#include "common/wire.h"
#include "hecate/v1/controller.grpc.pb.h"
#include "placement/synthetic.h"

ABSL_FLAG(int, workers, 1024, "Simulated workers (ranks)");
ABSL_FLAG(int, layers, 58, "MoE layers");
ABSL_FLAG(int, experts, 256, "Experts per layer");
ABSL_FLAG(int, top_k, 8, "Experts per token");
ABSL_FLAG(int, seconds, 20, "Iterations to run (one per second)");
ABSL_FLAG(int, threads, 16, "Sender threads");
ABSL_FLAG(std::string, policy, "hecate", "Controller policy");
ABSL_FLAG(std::string, controller_binary, "controller/hecate-controller",
          "Path of hecate-controller (relative paths resolve in runfiles or the cwd)");

namespace hecate::bench {
namespace {

int64_t Now_us() { return absl::ToUnixMicros(absl::Now()); }

struct ProcStats {
  double cpu_s = 0;
  int64_t rss_kb = 0, hwm_kb = 0;
};

ProcStats ReadProc(pid_t pid) {
  ProcStats s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  std::istringstream in(line.substr(line.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 15; ++i) {
    in >> field;
    if (i == 14) s.cpu_s += std::stod(field) / sysconf(_SC_CLK_TCK);
    if (i == 15) s.cpu_s += std::stod(field) / sysconf(_SC_CLK_TCK);
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::stoll(line.substr(6));
    if (line.rfind("VmHWM:", 0) == 0) s.hwm_kb = std::stoll(line.substr(6));
  }
  return s;
}

// All watchers on one completion queue: one thread, thousands of streams.
class Watchers {
 public:
  Watchers(v1::Controller::Stub* stub, int n) : stub_(stub) {
    for (int i = 0; i < n; ++i) {
      auto w = std::make_unique<Watch>();
      w->id = i;
      w->req.set_job_id("bench");
      w->reader = stub_->AsyncWatchPlans(&w->ctx, w->req, &cq_, Tag(w.get(), kStarted));
      watches_.push_back(std::move(w));
    }
    thread_ = std::thread([this] { Loop(); });
  }
  ~Watchers() {
    for (auto& w : watches_) w->ctx.TryCancel();
    cq_.Shutdown();
    thread_.join();
  }
  // For each plan version: (first receive, last receive, receivers) in unix microseconds.
  std::map<uint64_t, std::tuple<int64_t, int64_t, int, double>> arrivals() {
    std::lock_guard<std::mutex> lock(mu_);
    return arrivals_;
  }

 private:
  enum Op { kStarted, kRead };
  struct Watch {
    int id;
    grpc::ClientContext ctx;
    v1::WatchPlansRequest req;
    v1::Plan plan;
    std::unique_ptr<grpc::ClientAsyncReader<v1::Plan>> reader;
  };
  static void* Tag(Watch* w, Op op) {
    return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(w) | op);
  }
  void Loop() {
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
      const uintptr_t v = reinterpret_cast<uintptr_t>(tag);
      Watch* w = reinterpret_cast<Watch*>(v & ~uintptr_t{1});
      if (!ok) continue;
      if ((v & 1) == kRead) {
        const int64_t t = Now_us();
        std::lock_guard<std::mutex> lock(mu_);
        auto& [first, last, count, published] = arrivals_[w->plan.id().version()];
        if (count == 0) first = t;
        last = std::max(last, t);
        ++count;
        published = w->plan.published_unix_seconds();
      }
      w->reader->Read(&w->plan, Tag(w, kRead));
    }
  }
  v1::Controller::Stub* stub_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::thread thread_;
  std::mutex mu_;
  std::map<uint64_t, std::tuple<int64_t, int64_t, int, double>> arrivals_;
};

int Main(int argc, char** argv) {
  ParseFlags(argc, argv, "Controller load benchmark (see the file comment).");
  const int workers = absl::GetFlag(FLAGS_workers);
  const int layers = absl::GetFlag(FLAGS_layers);
  const int experts = absl::GetFlag(FLAGS_experts);
  const int top_k = absl::GetFlag(FLAGS_top_k);
  const int seconds = absl::GetFlag(FLAGS_seconds);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int per_node = 8;

  std::string binary = absl::GetFlag(FLAGS_controller_binary);
  if (binary[0] != '/') {
    const std::string runfile = proc::Runfile(binary);
    binary = access(runfile.c_str(), X_OK) == 0 ? runfile : binary;
  }
  char tmpl[] = "/tmp/hecate-bench-XXXXXX";
  const std::string state = mkdtemp(tmpl);
  proc::Subprocess controller;
  if (!controller.Start({binary, "--listen=127.0.0.1:0", "--metrics-listen=",
                         "--state-dir=" + state, "--policy=" + absl::GetFlag(FLAGS_policy),
                         "--report-deadline-ms=2000", "--max-message-bytes=67108864"},
                        {}, state + "/controller.log")) {
    std::fprintf(stderr, "cannot start %s\n", binary.c_str());
    return 1;
  }
  std::string address;
  if (!controller.WaitForLine("listening on ", absl::Seconds(30), &address)) {
    std::fprintf(stderr, "controller did not come up (log: %s/controller.log)\n", state.c_str());
    return 1;
  }
  std::printf("controller %s pid %d; %d workers, %d layers x %d experts, top-%d\n", address.c_str(),
              controller.pid(), workers, layers, experts, top_k);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Controller::NewStub(channel);

  const int64_t tokens = 4096;
  placement::ModelSpec model =
      placement::UniformModel("bench", layers, experts, top_k, 1024, 2048, 2, tokens, 2e-3);
  for (int r = 0; r < workers; ++r) {
    v1::RegisterWorkerRequest req;
    req.set_job_id("bench");
    req.set_rank(r);
    req.set_world_size(workers);
    req.set_node(absl::StrCat("node", r / per_node));
    req.set_local_rank(r % per_node);
    req.set_device_kind("sim");
    req.set_device_memory_bytes(int64_t{80} << 30);
    req.set_incarnation(1);
    *req.mutable_model() = wire::ToProto(model);
    req.mutable_links()->set_intra_node_bandwidth_bytes_per_second(450e9);
    req.mutable_links()->set_inter_node_bandwidth_bytes_per_second(400e9);
    req.mutable_links()->set_device_nic_bandwidth_bytes_per_second(50e9);
    req.mutable_links()->add_nodes()->set_device_flops_per_second(400e12);
    grpc::ClientContext ctx;
    v1::RegisterWorkerResponse resp;
    grpc::Status s = stub->RegisterWorker(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "register %d: %s\n", r, s.error_message().c_str());
      return 1;
    }
  }
  Watchers watchers(stub.get(), workers);

  // Pre-build one report per rank (loads drift each iteration by rotating the hot set).
  placement::Cluster cluster = placement::Cluster::Uniform(workers / per_node, per_node,
                                                           int64_t{80} << 30, 400e12, 450e9, 400e9);
  std::vector<int64_t> latencies_us;
  std::mutex lat_mu;
  std::atomic<int64_t> sent{0}, failed{0};
  const ProcStats before = ReadProc(controller.pid());
  const int64_t t_start = Now_us();
  for (int it = 0; it < seconds; ++it) {
    const int64_t tick = t_start + int64_t{it} * 1'000'000;
    placement::SkewOptions opt;
    opt.zipf_s = 1.0;
    opt.drift_per_iteration = 0.5;
    const placement::ModelLoad load = placement::SkewedLoad(cluster, model, opt, it);
    v1::PlanId plan;  // reports claim no plan (fine: never from the future)
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::vector<int64_t> local;
        for (int r = t; r < workers; r += threads) {
          v1::LoadReport rep;
          rep.set_job_id("bench");
          rep.set_rank(r);
          rep.set_incarnation(1);
          rep.set_iteration(it);
          rep.set_tokens(tokens);
          for (int l = 0; l < layers; ++l) {
            v1::LayerLoad* ll = rep.add_layers();
            ll->set_layer(l);
            const int64_t* row = load[l].row(r);
            for (int e = 0; e < experts; ++e) ll->add_expert_tokens(row[e]);
          }
          rep.mutable_timings()->set_attention_seconds(2e-3);
          const int64_t t0 = Now_us();
          grpc::ClientContext ctx;
          v1::ReportLoadResponse resp;
          auto writer = stub->ReportLoad(&ctx, &resp);
          writer->Write(rep);
          writer->WritesDone();
          grpc::Status s = writer->Finish();
          local.push_back(Now_us() - t0);
          ++sent;
          if (!s.ok()) ++failed;
        }
        std::lock_guard<std::mutex> lock(lat_mu);
        latencies_us.insert(latencies_us.end(), local.begin(), local.end());
      });
    }
    for (auto& th : pool) th.join();
    const int64_t wait = tick + 1'000'000 - Now_us();
    if (wait > 0) absl::SleepFor(absl::Microseconds(wait));  // pace: one iteration per second
    std::printf("iteration %d sent (%lld reports so far)\n", it,
                static_cast<long long>(sent.load()));
    std::fflush(stdout);
  }
  const double elapsed = (Now_us() - t_start) / 1e6;
  const ProcStats after = ReadProc(controller.pid());
  std::sort(latencies_us.begin(), latencies_us.end());
  auto pct = [&](double p) {
    return latencies_us.empty()
               ? 0.0
               : latencies_us[static_cast<size_t>(p * (latencies_us.size() - 1))] / 1e3;
  };
  std::vector<double> fanout_ms;
  for (const auto& [version, a] : watchers.arrivals()) {
    const auto& [first, last, count, published] = a;
    if (count == workers && published > 0) {
      fanout_ms.push_back((last / 1e6 - published) * 1e3);
    }
  }
  std::sort(fanout_ms.begin(), fanout_ms.end());
  std::printf(
      "\nworkers,layers,experts,reports,failed,reports_per_s,ingest_p50_ms,ingest_p99_ms,"
      "plans_fully_delivered,fanout_p50_ms,fanout_max_ms,controller_cpu_s,"
      "controller_cpu_util,controller_rss_mib,controller_peak_rss_mib\n");
  std::printf("%d,%d,%d,%lld,%lld,%.0f,%.2f,%.2f,%zu,%.1f,%.1f,%.1f,%.2f,%.0f,%.0f\n", workers,
              layers, experts, static_cast<long long>(sent.load()),
              static_cast<long long>(failed.load()), sent.load() / elapsed, pct(0.5), pct(0.99),
              fanout_ms.size(), fanout_ms.empty() ? 0.0 : fanout_ms[fanout_ms.size() / 2],
              fanout_ms.empty() ? 0.0 : fanout_ms.back(), after.cpu_s - before.cpu_s,
              (after.cpu_s - before.cpu_s) / elapsed, after.rss_kb / 1024.0, after.hwm_kb / 1024.0);
  controller.Signal(SIGTERM);
  controller.Wait(absl::Seconds(30));
  return failed.load() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace hecate::bench

int main(int argc, char** argv) { return hecate::bench::Main(argc, argv); }
