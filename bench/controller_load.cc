// Controller load benchmark: a separate process that starts hecate-controller, then simulates N
// workers on loopback. Every simulated second is one iteration: each worker sends its LoadReport
// (one ReportLoad stream per report, so the measured latency covers the server's validation and
// ingest), and every worker holds a WatchPlans stream.
//
//   bazel run //bench:controller_load -- --workers=1024 --layers=58 --experts=256 --seconds=20
//
// Prints: sustained reports/s, p50/p99 ingest latency, plan fan-out time (publish -> last watcher),
// plans published, controller CPU seconds and peak RSS. Targets: p99 ingest < 10 ms, fan-out
// < 100 ms, RSS < 2 GiB.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/subprocess.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "hecate/v1/controller.grpc.pb.h"
#include "placement/synthetic.h"
#include "wire/convert.h"
#include "wire/plan_codec.h"

ABSL_FLAG(int, workers, 1024, "Simulated workers (ranks)");
ABSL_FLAG(int, layers, 58, "MoE layers");
ABSL_FLAG(int, experts, 256, "Experts per layer");
ABSL_FLAG(int, top_k, 8, "Experts per token");
ABSL_FLAG(int, seconds, 20, "Iterations to run (one per second)");
ABSL_FLAG(int, threads, 16, "Sender threads");
ABSL_FLAG(bool, deltas, true,
          "Watchers ask for plan deltas (WatchPlansRequest.accept_deltas), as worker agents do");
ABSL_FLAG(
    bool, compact, true,
    "Watchers ask for compact holder lists (WatchPlansRequest.compact_holders), as workers do");
ABSL_FLAG(bool, acknowledge, true,
          "Watchers ask for the stream's acknowledgement (WatchPlansRequest.acknowledge), as "
          "workers do");
ABSL_FLAG(int, watch_connections, 64, "Connections the WatchPlans streams are spread over");
ABSL_FLAG(int, watch_threads, 4, "Completion-queue threads receiving plans");
ABSL_FLAG(std::string, policy, "hecate", "Controller policy");
ABSL_FLAG(bool, keep_state, false,
          "Keep the controller's state directory and log (its path is printed) after a clean run");
ABSL_FLAG(std::vector<std::string>, controller_flags, {},
          "Extra flags for the controller, comma-separated (e.g. --balance_target=0)");
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

// What the load generator reads of each pushed plan: its version and publication time. The
// generator stands in for thousands of worker machines on 2 shared cores, so it skips the full
// decode (a worker decodes its plan on its own CPU).
struct PlanHeader {
  uint64_t version = 0;
  double published = 0;
  size_t bytes = 0;
};

// Reads the header fields from `data`; false if a field is malformed or cut off.
bool ParseFields(const uint8_t* data, size_t size, PlanHeader* out, bool* have_version) {
  google::protobuf::io::CodedInputStream in(data, static_cast<int>(size));
  using WFL = google::protobuf::internal::WireFormatLite;
  while (uint32_t tag = in.ReadTag()) {
    const int field = WFL::GetTagFieldNumber(tag);
    if (field == v1::Plan::kIdFieldNumber) {
      // The id must lie whole in `data`: a sub-message cut off by the end of a slice would parse
      // as a shorter one (epoch read, version missing: "version 0"), not fail.
      uint32_t length = 0;
      if (!in.ReadVarint32(&length) || length > size - static_cast<size_t>(in.CurrentPosition())) {
        return false;
      }
      v1::PlanId id;
      const auto limit = in.PushLimit(static_cast<int>(length));
      if (!id.MergePartialFromCodedStream(&in) || !in.ConsumedEntireMessage()) return false;
      in.PopLimit(limit);
      out->version = id.version();
      *have_version = true;
    } else if (field == v1::Plan::kPublishedUnixSecondsFieldNumber) {
      if (!WFL::ReadPrimitive<double, WFL::TYPE_DOUBLE>(&in, &out->published)) return false;
    } else if (!WFL::SkipField(&in, tag)) {
      return false;
    }
  }
  return true;
}

// The slices of `slices` joined into one string.
std::string Join(const std::vector<grpc::Slice>& slices) {
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

// `full`: decode every top-level field (version, publication time, size). Otherwise only the
// version, from the message's first slice when it holds it (the id is the second field, a few
// bytes in): the other watchers only time their arrival, without copying the plan.
bool ParseHeader(const grpc::ByteBuffer& buffer, PlanHeader* out, bool full) {
  out->bytes = buffer.Length();
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return false;
  bool have_version = false;
  if (!full && !slices.empty()) {
    // A cut-off field at the slice's end fails the parse; the version may still be read.
    (void)ParseFields(slices[0].begin(), slices[0].size(), out, &have_version);
    if (have_version) return true;
  }
  const std::string bytes = Join(slices);
  return ParseFields(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), out,
                     &have_version) &&
         have_version;
}

// Watchers spread over several connections (a real cluster has one per worker process) and
// completion-queue threads: each thread drives its share of the streams.
class Watchers {
 public:
  Watchers(const std::vector<std::shared_ptr<grpc::Channel>>& channels, int n, int threads)
      : method_("/hecate.v1.Controller/WatchPlans", grpc::internal::RpcMethod::SERVER_STREAMING),
        queues_(threads) {
    for (int i = 0; i < n; ++i) {
      auto w = std::make_unique<Watch>();
      w->id = i;
      w->req.set_job_id("bench");
      w->req.set_accept_deltas(absl::GetFlag(FLAGS_deltas));
      w->req.set_compact_holders(absl::GetFlag(FLAGS_compact));
      w->req.set_acknowledge(absl::GetFlag(FLAGS_acknowledge));
      grpc::CompletionQueue* cq = &queues_[i % threads];
      w->reader.reset(grpc::internal::ClientAsyncReaderFactory<grpc::ByteBuffer>::Create(
          channels[i % channels.size()].get(), cq, method_, &w->ctx, w->req, true,
          Tag(w.get(), kStarted)));
      watches_.push_back(std::move(w));
    }
    for (grpc::CompletionQueue& cq : queues_) threads_.emplace_back([this, &cq] { Loop(&cq); });
  }
  ~Watchers() {
    for (auto& w : watches_) w->ctx.TryCancel();
    for (grpc::CompletionQueue& cq : queues_) cq.Shutdown();
    for (std::thread& t : threads_) t.join();
  }
  // For each plan version: (first receive, last receive, receivers, published) in unix
  // microseconds / seconds.
  std::map<uint64_t, std::tuple<int64_t, int64_t, int, double>> arrivals() {
    std::lock_guard<std::mutex> lock(mu_);
    return arrivals_;
  }
  // Bytes of each plan version as watcher 0 received it (a delta after the first, with --deltas).
  std::map<uint64_t, size_t> bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_;
  }

 private:
  enum Op { kStarted, kRead };
  struct Watch {
    int id;
    grpc::ClientContext ctx;
    v1::WatchPlansRequest req;
    grpc::ByteBuffer plan;
    std::unique_ptr<grpc::ClientAsyncReader<grpc::ByteBuffer>> reader;
  };
  static void* Tag(Watch* w, Op op) {
    return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(w) | op);
  }
  void Loop(grpc::CompletionQueue* cq) {
    void* tag;
    bool ok;
    while (cq->Next(&tag, &ok)) {
      const uintptr_t v = reinterpret_cast<uintptr_t>(tag);
      Watch* w = reinterpret_cast<Watch*>(v & ~uintptr_t{1});
      if (!ok) continue;
      PlanHeader h;
      // The acknowledgement (version 0) opens the stream; it is not a plan.
      const bool plan = (v & 1) == kRead && ParseHeader(w->plan, &h, w->id == 0) && h.version > 0;
      if ((v & 1) == kRead && !plan) {
        std::lock_guard<std::mutex> lock(mu_);
        ++acknowledged_;
      }
      if (plan) {
        const int64_t t = Now_us();
        std::lock_guard<std::mutex> lock(mu_);
        auto& [first, last, count, published] = arrivals_[h.version];
        if (count == 0) first = t;
        last = std::max(last, t);
        ++count;
        if (h.published > 0) published = h.published;
        if (w->id == 0) bytes_[h.version] = h.bytes;
      }
      if (plan && w->id == 0) Rebuild(w->plan);
      // Drop the plan before the next read: a worker keeps one plan in its own process, while
      // holding thousands of them here would make every plan's receive fault fresh pages in and
      // inflate the fan-out time measured.
      w->plan.Clear();
      w->reader->Read(&w->plan, Tag(w, kRead));
    }
  }
  // Watcher 0 rebuilds every plan as a worker does (delta and compact holder lists) and checks
  // that each expert gets a holder list back.
  void Rebuild(const grpc::ByteBuffer& buffer) {
    v1::Plan pushed;
    std::vector<grpc::Slice> slices;
    const bool dumped = buffer.Dump(&slices).ok();
    absl::StatusOr<v1::Plan> full = dumped && pushed.ParseFromString(Join(slices))
                                        ? wire::ApplyDelta(rebuilt_, pushed)
                                        : absl::InvalidArgumentError("does not parse");
    bool whole = full.ok() && full->layers_size() > 0;
    for (int l = 0; whole && l < full->layers_size(); ++l) {
      whole = full->layers(l).replicas_size() == full->layers(l).owner_size();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!whole) {
      std::fprintf(stderr, "watcher 0 could not rebuild a plan: %s\n",
                   full.ok() ? "holder lists missing" : full.status().ToString().c_str());
      ++rebuild_failures_;
      return;
    }
    rebuilt_ = *std::move(full);
  }

 public:
  // Streams that opened with the acknowledgement (WatchPlansRequest.acknowledge).
  int acknowledged() {
    std::lock_guard<std::mutex> lock(mu_);
    return acknowledged_;
  }
  int rebuild_failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return rebuild_failures_;
  }

 private:
  v1::Plan rebuilt_;
  int rebuild_failures_ = 0;
  int acknowledged_ = 0;
  const grpc::internal::RpcMethod method_;
  std::vector<grpc::CompletionQueue> queues_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::map<uint64_t, std::tuple<int64_t, int64_t, int, double>> arrivals_;
  std::map<uint64_t, size_t> bytes_;
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
  std::vector<std::string> command = {binary, "--listen=127.0.0.1:0",
                                      "--metrics-listen=", "--state-dir=" + state,
                                      "--policy=" + absl::GetFlag(FLAGS_policy),
                                      "--report-deadline-ms=2000", "--max-message-bytes=67108864",
                                      // Every simulated worker shares this process's address.
                                      "--max-streams-per-peer=0"};
  for (const std::string& f : absl::GetFlag(FLAGS_controller_flags)) command.push_back(f);
  if (!controller.Start(command, {}, state + "/controller.log")) {
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
  std::vector<std::string> secrets(workers);  // each rank's, from its registration
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
    secrets[r] = resp.worker_secret();
  }
  std::vector<std::shared_ptr<grpc::Channel>> watch_channels;
  for (int i = 0; i < absl::GetFlag(FLAGS_watch_connections); ++i) {
    grpc::ChannelArguments a = args;
    a.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    watch_channels.push_back(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), a));
  }
  Watchers watchers(watch_channels, workers, absl::GetFlag(FLAGS_watch_threads));

  // Pre-build one report per rank (loads drift each iteration by rotating the hot set).
  placement::Cluster cluster = placement::Cluster::Uniform(workers / per_node, per_node,
                                                           int64_t{80} << 30, 400e12, 450e9, 400e9);
  std::vector<int64_t> latencies_us;
  std::mutex lat_mu;
  std::atomic<int64_t> sent{0}, failed{0};
  // Build and serialize every iteration's reports before the clock starts, so that neither the
  // ingest latency nor a plan's fan-out pays for the generator's own work on the same 2 cores
  // (building iteration i's reports while the first plan went out cost that fan-out ~20%).
  std::vector<std::vector<grpc::ByteBuffer>> all_reports(seconds);
  for (int it = 0; it < seconds; ++it) {
    placement::SkewOptions opt;
    opt.zipf_s = 1.0;
    opt.drift_per_iteration = 0.5;
    const placement::ModelLoad load = placement::SkewedLoad(cluster, model, opt, it);
    std::vector<grpc::ByteBuffer>& reports = all_reports[it];
    reports.resize(workers);
    std::vector<std::thread> builders;
    for (int t = 0; t < threads; ++t) {
      builders.emplace_back([&, t] {
        for (int r = t; r < workers; r += threads) {
          v1::LoadReport rep;
          rep.set_job_id("bench");
          rep.set_rank(r);
          rep.set_incarnation(1);
          rep.set_worker_secret(secrets[r]);
          rep.set_iteration(it);
          rep.set_tokens(tokens);
          for (int l = 0; l < layers; ++l) {
            v1::LayerLoad* ll = rep.add_layers();
            ll->set_layer(l);
            const int64_t* row = load[l].row(r);
            for (int e = 0; e < experts; ++e) ll->add_expert_tokens(row[e]);
          }
          rep.mutable_timings()->set_attention_seconds(2e-3);
          grpc::Slice slice(rep.SerializeAsString());
          reports[r] = grpc::ByteBuffer(&slice, 1);
        }
      });
    }
    for (auto& b : builders) b.join();
    std::printf("built the reports of iteration %d of %d\n", it + 1, seconds);
    std::fflush(stdout);
  }
  const ProcStats before = ReadProc(controller.pid());
  const int64_t t_start = Now_us();
  for (int it = 0; it < seconds; ++it) {
    const int64_t tick = t_start + int64_t{it} * 1'000'000;
    const std::vector<grpc::ByteBuffer>& reports = all_reports[it];
    const grpc::internal::RpcMethod report_method("/hecate.v1.Controller/ReportLoad",
                                                  grpc::internal::RpcMethod::CLIENT_STREAMING);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::vector<int64_t> local;
        for (int r = t; r < workers; r += threads) {
          const int64_t t0 = Now_us();
          grpc::ClientContext ctx;
          grpc::ByteBuffer resp;
          std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
              grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
                  channel.get(), report_method, &ctx, &resp));
          writer->Write(reports[r]);
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
  double first_fanout_ms = 0;
  const std::map<uint64_t, size_t> bytes = watchers.bytes();
  std::printf("\nplan,bytes_to_watcher_0,first_watcher_ms,fanout_ms\n");
  for (const auto& [version, a] : watchers.arrivals()) {
    const auto& [first, last, count, published] = a;
    if (count != workers) {
      // Only the last plan may still be on its way when the run ends.
      std::printf("(plan %llu reached %d of %d watchers)\n",
                  static_cast<unsigned long long>(version), count, workers);
    }
    if (count == workers && published > 0) {
      const double ms = (last / 1e6 - published) * 1e3;
      if (fanout_ms.empty()) first_fanout_ms = ms;
      fanout_ms.push_back(ms);
      auto b = bytes.find(version);
      std::printf("%llu,%zu,%.1f,%.1f\n", static_cast<unsigned long long>(version),
                  b == bytes.end() ? size_t{0} : b->second, (first / 1e6 - published) * 1e3, ms);
    }
  }
  size_t last_bytes = bytes.empty() ? 0 : bytes.rbegin()->second;
  std::sort(fanout_ms.begin(), fanout_ms.end());
  std::printf(
      "\nworkers,layers,experts,reports,failed,reports_per_s,ingest_p50_ms,ingest_p99_ms,"
      "plans_fully_delivered,last_plan_bytes,first_fanout_ms,fanout_p50_ms,fanout_max_ms,"
      "controller_cpu_s,controller_cpu_util,controller_rss_mib,controller_peak_rss_mib\n");
  std::printf("%d,%d,%d,%lld,%lld,%.0f,%.2f,%.2f,%zu,%zu,%.1f,%.1f,%.1f,%.1f,%.2f,%.0f,%.0f\n",
              workers, layers, experts, static_cast<long long>(sent.load()),
              static_cast<long long>(failed.load()), sent.load() / elapsed, pct(0.5), pct(0.99),
              fanout_ms.size(), last_bytes, first_fanout_ms,
              fanout_ms.empty() ? 0.0 : fanout_ms[fanout_ms.size() / 2],
              fanout_ms.empty() ? 0.0 : fanout_ms.back(), after.cpu_s - before.cpu_s,
              (after.cpu_s - before.cpu_s) / elapsed, after.rss_kb / 1024.0, after.hwm_kb / 1024.0);
  controller.Signal(SIGTERM);
  controller.Wait(absl::Seconds(30));
  std::printf("watch streams acknowledged: %d of %d\n", watchers.acknowledged(), workers);
  std::printf("watcher 0 rebuilt every plan: %s\n",
              watchers.rebuild_failures() == 0 ? "yes" : "NO");
  // A clean run leaves nothing behind; a failed one keeps the controller's log and state.
  if (failed.load() != 0 || watchers.rebuild_failures() != 0) {
    std::printf("controller state and log kept in %s\n", state.c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_keep_state)) {
    std::printf("controller state and log kept in %s\n", state.c_str());
    return 0;
  }
  std::error_code ignored;
  std::filesystem::remove_all(state, ignored);
  return 0;
}

}  // namespace
}  // namespace hecate::bench

int main(int argc, char** argv) { return hecate::bench::Main(argc, argv); }
