// hecate: the launcher. `hecate run` is the main job: an embedded controller plus one worker
// process per available core (each pinned to its core, so a rank's load is its own time, as on a
// GPU) training a small GPT-MoE under skewed routing, with live progress and a final summary;
// `--compare=POLICY` runs the same job again under another policy and prints the step-time ratio.
//
//   hecate run [--workers=N] [--iterations=60] [--policy=hecate] [--compare=ep]
//              [-- WORKER FLAGS...]
//
// Anything after "--" goes to every hecate-worker and wins over the launcher's defaults (e.g.
// -- --layers=4 --gate_bias=2).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/subprocess.h"

ABSL_FLAG(int, workers, 0,
          "Worker processes (ranks); 0: one per available core (at least 2), or one with "
          "--device=cuda over NCCL");
ABSL_FLAG(std::string, device, "cpu",
          "cpu or cuda: where every worker's model runs (docs/gpu.md); cuda needs a build with "
          "CUDA and a visible GPU");
ABSL_FLAG(std::string, comm, "",
          "nccl or gloo: the workers' collectives (default: nccl on cuda, gloo on cpu); "
          "--device=cuda --comm=gloo runs several ranks on one GPU through pinned host memory");
ABSL_FLAG(bool, pin, true, "Pin worker r to the r-th available core (round robin)");
ABSL_FLAG(double, skew, 6.0,
          "Gate bias toward the experts rank 0 owns under expert parallelism (skewed routing; 0: "
          "the router's own balance)");
ABSL_FLAG(std::string, compare, "",
          "Run the job again under this policy (ep: static expert parallelism) with the same seed "
          "and print the step-time ratio");
ABSL_FLAG(int, ranks_per_node, 2, "Ranks per simulated node (topology for dispatch; 0: one node)");
ABSL_FLAG(int, iterations, 60, "Training iterations");
ABSL_FLAG(std::string, policy, "hecate",
          "Controller policy: hecate, hecate-paper, hecate-rm, ep, fastermoe, flexmoe, smartmoe, "
          "eplb");
ABSL_FLAG(std::string, mode, "fssdp", "Worker mode: fssdp or ep (static, no controller plans)");
ABSL_FLAG(std::string, state_dir, "", "Controller state dir (default: a fresh temporary one)");
ABSL_FLAG(std::string, log_dir, "", "Worker and controller logs (default: inside the state dir)");
ABSL_FLAG(std::string, checkpoint_dir, "", "Worker checkpoints (--checkpoint_every needed)");
ABSL_FLAG(int, checkpoint_every, 0, "Checkpoint every N iterations");
ABSL_FLAG(bool, resume, false, "Resume every worker from --checkpoint_dir");
ABSL_FLAG(int, master_port, 0, "Rendezvous port (0: a free one)");
ABSL_FLAG(std::string, bin_dir, "", "Directory holding controller/ and worker/ binaries");
ABSL_FLAG(int, log_every, 5, "Progress line every N iterations");
ABSL_FLAG(std::string, controller, "",
          "Train against this running controller (host:port) instead of an embedded one");
ABSL_FLAG(
    std::string, tls_ca_file, "",
    "With --controller: TLS to it, the CA its certificate chains to (passed to every worker)");
ABSL_FLAG(std::string, tls_cert_file, "", "mTLS: the workers' client certificate (PEM)");
ABSL_FLAG(std::string, tls_key_file, "", "mTLS: its private key (PEM)");
ABSL_FLAG(std::string, token_file, "", "A bearer token file for the workers (sent over TLS)");
ABSL_FLAG(bool, worker_metrics, true,
          "Every rank serves /metrics on a free loopback port (printed at start)");
ABSL_FLAG(
    bool, prometheus, false,
    "Start a local Prometheus (/usr/bin/prometheus) with deploy/prometheus's rules and alerts, "
    "scraping the controller and every rank each second; it stays up after the job until "
    "Ctrl-C");
ABSL_FLAG(int, prometheus_port, 0, "Port of --prometheus's web UI and API (0: a free one)");

namespace hecate {
namespace {

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

// The first of `candidates` that access(2) allows with `mode`; "" if none.
std::string FirstAccessible(const std::vector<std::string>& candidates, int mode) {
  for (const std::string& c : candidates) {
    if (access(c.c_str(), mode) == 0) return c;
  }
  return "";
}

// The sibling binary: bazel-bin/clients/hecate -> bazel-bin/controller/hecate-controller, or the
// runfiles tree when run by `bazel run`.
std::string FindBinary(const std::string& rel) {
  std::vector<std::string> candidates;
  if (!absl::GetFlag(FLAGS_bin_dir).empty())
    candidates.push_back(absl::GetFlag(FLAGS_bin_dir) + "/" + rel);
  const std::string self = SelfDir();
  candidates.push_back(self + "/../" + rel);
  candidates.push_back(self + "/hecate.runfiles/hecate/" + rel);
  return FirstAccessible(candidates, X_OK);
}

// A data file shipped with the launcher: the runfiles tree of whoever runs it (a Bazel test that
// depends on the files), the launcher's own runfiles (built by `bazel build`, not guaranteed when
// it is only another target's data dependency), or the execroot it was built in
// (<execroot>/bazel-out/<config>/bin/clients/hecate -> <execroot>/deploy/...).
std::string FindData(const std::string& rel) {
  std::vector<std::string> candidates;
  for (const char* env : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    const char* dir = std::getenv(env);
    if (dir != nullptr && *dir != '\0') candidates.push_back(absl::StrCat(dir, "/hecate/", rel));
  }
  const std::string self = SelfDir();
  candidates.push_back(self + "/hecate.runfiles/hecate/" + rel);
  candidates.push_back(self + "/../../../../" + rel);
  return FirstAccessible(candidates, R_OK);
}

// GET http://127.0.0.1:port/path: the HTTP status (0 when nothing answers) and the body.
int HttpGet(int port, const std::string& path, std::string* body = nullptr) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) response.append(buf, n);
    }
  }
  close(fd);
  int status = 0;
  if (response.size() > 12)
    (void)absl::SimpleAtoi(absl::string_view(response).substr(9, 3), &status);
  if (body != nullptr) {
    const size_t at = response.find("\r\n\r\n");
    *body = at == std::string::npos ? "" : response.substr(at + 4);
  }
  return status;
}

// A local Prometheus scraping the job: the shipped rules and alerts, one-second scrapes.
struct LocalPrometheus {
  proc::Subprocess process;
  int port = 0;
};

std::unique_ptr<LocalPrometheus> StartPrometheus(const std::string& dir,
                                                 const std::string& controller_metrics,
                                                 const std::vector<std::string>& worker_metrics,
                                                 const std::string& logs) {
  const std::string rules = FindData("deploy/prometheus/hecate-rules.yml");
  const std::string alerts = FindData("deploy/prometheus/hecate-alerts.yml");
  if (rules.empty() || alerts.empty() || access("/usr/bin/prometheus", X_OK) != 0) {
    std::fprintf(stderr,
                 "hecate run: --prometheus needs /usr/bin/prometheus (scripts/setup.sh installs "
                 "it) and deploy/prometheus next to the launcher\n");
    return nullptr;
  }
  std::error_code ignored;
  std::filesystem::create_directories(dir + "/data", ignored);
  std::ofstream cfg(dir + "/prometheus.yml");
  cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "rule_files:\n  - " << rules << "\n  - " << alerts << "\n"
      << "scrape_configs:\n";
  if (!controller_metrics.empty()) {
    cfg << "  - job_name: hecate-controller\n    static_configs:\n      - targets: [\""
        << controller_metrics << "\"]\n";
  }
  if (!worker_metrics.empty()) {
    cfg << "  - job_name: hecate-workers\n    static_configs:\n      - targets: [";
    for (size_t i = 0; i < worker_metrics.size(); ++i) {
      cfg << (i ? ", " : "") << "\"" << worker_metrics[i] << "\"";
    }
    cfg << "]\n";
  }
  cfg.close();
  auto p = std::make_unique<LocalPrometheus>();
  p->port = absl::GetFlag(FLAGS_prometheus_port) > 0 ? absl::GetFlag(FLAGS_prometheus_port)
                                                     : proc::FreePort();
  if (!p->process.Start({"/usr/bin/prometheus", "--config.file=" + dir + "/prometheus.yml",
                         "--storage.tsdb.path=" + dir + "/data",
                         absl::StrCat("--web.listen-address=127.0.0.1:", p->port)},
                        {}, logs + "/prometheus.log")) {
    return nullptr;
  }
  // Ready once /-/ready answers 200: polled, bounded (Prometheus prints nothing on stdout).
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  // Then until every target is discovered: Prometheus applies new targets at most every five
  // seconds, and a short job must not finish before its first scrape.
  const size_t targets = (controller_metrics.empty() ? 0 : 1) + worker_metrics.size();
  auto discovered = [&] {
    std::string body;
    if (HttpGet(p->port, "/api/v1/targets?state=active", &body) != 200) return false;
    size_t n = 0;
    for (size_t at = 0; (at = body.find("\"scrapeUrl\"", at)) != std::string::npos; ++at) ++n;
    return n >= targets;
  };
  while (!discovered()) {
    if (absl::Now() > deadline || p->process.Wait(absl::ZeroDuration()) >= 0) {
      std::fprintf(stderr, "hecate run: Prometheus did not start; see %s/prometheus.log\n",
                   logs.c_str());
      return nullptr;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return p;
}

std::map<std::string, std::string> ParseKv(const std::string& line) {
  std::map<std::string, std::string> kv;
  for (absl::string_view part : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    const size_t eq = part.find('=');
    if (eq != absl::string_view::npos) {
      kv[std::string(part.substr(0, eq))] = std::string(part.substr(eq + 1));
    }
  }
  return kv;
}

volatile sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

// The CPUs this process may run on, ascending.
std::vector<int> AvailableCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
    }
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

// The job's model when the user gives none: expert compute dominates (wide experts, few heads,
// short sequences), two experts per rank, and --skew biases the gate toward rank 0's two under
// expert parallelism; the planners assume this machine's rates (scripts/run_python.sh gives the
// PyTorch front end the same).
std::vector<std::string> DefaultWorkerFlags(int workers) {
  return {"--layers=2",         "--d_model=128",
          "--heads=2",          absl::StrCat("--experts=", 2 * workers),
          "--top_k=2",          "--d_ffn=2048",
          "--seq_len=32",       "--batch=16",
          "--skew_experts=2",   absl::StrCat("--gate_bias=", absl::GetFlag(FLAGS_skew)),
          "--attention_ms=0",   "--device_gflops=90",
          "--link_gbytes=2.4",  "--copy_overhead_ms=4",
          "--reshard_period=10"};
}

struct RunResult {
  int code = 0;  // the launcher's exit code
  std::map<std::string, std::string> summary;
  std::vector<std::map<std::string, std::string>> rows;  // progress rows, as shown
  std::vector<std::string> worker_metrics;               // each rank's /metrics address
  std::unique_ptr<LocalPrometheus> prometheus;           // with --prometheus
};

// One job: an embedded controller (unless `mode` is ep) and the workers, to their summary.
RunResult RunJob(const std::string& policy, const std::string& mode, int workers,
                 const std::vector<std::string>& worker_args, const std::string& controller_bin,
                 const std::string& worker_bin, const std::string& state, const std::string& logs) {
  RunResult result;
  std::error_code ignored;
  std::filesystem::create_directories(logs, ignored);
  proc::Subprocess controller;
  const std::string external = absl::GetFlag(FLAGS_controller);
  const bool with_controller = mode == "fssdp";
  const bool embedded = with_controller && external.empty();
  std::string address = external, metrics;
  // Without Prometheus every process binds a free port and reports it; with it, the ports are
  // chosen first so that Prometheus knows its targets before the job starts.
  std::string controller_metrics_listen = "127.0.0.1:0";
  std::vector<std::string> worker_listen(workers, "127.0.0.1:0");
  if (absl::GetFlag(FLAGS_prometheus)) {
    if (embedded) controller_metrics_listen = absl::StrCat("127.0.0.1:", proc::FreePort());
    for (std::string& w : worker_listen) w = absl::StrCat("127.0.0.1:", proc::FreePort());
    result.prometheus = StartPrometheus(
        state + "/prometheus", embedded ? controller_metrics_listen : "",
        absl::GetFlag(FLAGS_worker_metrics) ? worker_listen : std::vector<std::string>{}, logs);
    if (result.prometheus == nullptr) {
      result.code = 1;
      return result;
    }
  }
  if (embedded) {
    if (!controller.Start({controller_bin, "--listen=127.0.0.1:0",
                           "--metrics-listen=" + controller_metrics_listen,
                           "--state-dir=" + state + "/controller", "--policy=" + policy,
                           "--report-deadline-ms=2000", "--reshard-period=10"},
                          {}, logs + "/controller.log")) {
      std::fprintf(stderr, "hecate run: cannot start %s\n", controller_bin.c_str());
      result.code = 1;
      return result;
    }
    if (!controller.WaitForLine("listening on ", absl::Seconds(60), &address) ||
        !controller.WaitForLine("metrics on ", absl::Seconds(10), &metrics)) {
      std::fprintf(stderr, "hecate run: the controller did not start; see %s/controller.log\n",
                   logs.c_str());
      result.code = 1;
      return result;
    }
  }
  const int port =
      absl::GetFlag(FLAGS_master_port) > 0 ? absl::GetFlag(FLAGS_master_port) : proc::FreePort();
  const std::vector<int> cpus = AvailableCpus();
  std::printf("Hecate: %d workers (%s, policy %s), %d iterations%s\n", workers, mode.c_str(),
              policy.c_str(), absl::GetFlag(FLAGS_iterations),
              absl::GetFlag(FLAGS_pin)
                  ? absl::StrCat(", pinned to cores of ", cpus.size(), " available").c_str()
                  : "");
  if (with_controller) {
    std::printf("  controller      %s%s   (hecatectl --controller=%s status)\n", address.c_str(),
                embedded ? "" : " (external)", address.c_str());
    if (embedded)
      std::printf("  metrics         http://%s/metrics (controller)\n", metrics.c_str());
  }
  std::vector<std::unique_ptr<proc::Subprocess>> ranks;
  for (int r = 0; r < workers; ++r) {
    std::vector<std::string> argv = {
        worker_bin,
        "--mode=" + mode,
        "--policy=" + policy,
        absl::StrCat("--iterations=", absl::GetFlag(FLAGS_iterations)),
        absl::StrCat("--ranks_per_node=", absl::GetFlag(FLAGS_ranks_per_node)),
        absl::StrCat("--log_every=", absl::GetFlag(FLAGS_log_every)),
        "--job=hecate-run"};
    const std::vector<std::string> defaults = DefaultWorkerFlags(workers);
    argv.insert(argv.end(), defaults.begin(), defaults.end());
    argv.push_back("--device=" + absl::GetFlag(FLAGS_device));
    if (!absl::GetFlag(FLAGS_comm).empty()) argv.push_back("--comm=" + absl::GetFlag(FLAGS_comm));
    if (absl::GetFlag(FLAGS_pin)) argv.push_back(absl::StrCat("--cpu=", cpus[r % cpus.size()]));
    if (absl::GetFlag(FLAGS_worker_metrics)) argv.push_back("--metrics_listen=" + worker_listen[r]);
    for (const auto& [flag, value] :
         {std::pair<const char*, std::string>{"--tls_ca_file=", absl::GetFlag(FLAGS_tls_ca_file)},
          {"--tls_cert_file=", absl::GetFlag(FLAGS_tls_cert_file)},
          {"--tls_key_file=", absl::GetFlag(FLAGS_tls_key_file)},
          {"--token_file=", absl::GetFlag(FLAGS_token_file)}}) {
      if (!value.empty()) argv.push_back(flag + value);
    }
    if (!absl::GetFlag(FLAGS_checkpoint_dir).empty()) {
      argv.push_back("--checkpoint_dir=" + absl::GetFlag(FLAGS_checkpoint_dir));
      argv.push_back(absl::StrCat("--checkpoint_every=", absl::GetFlag(FLAGS_checkpoint_every)));
    }
    if (absl::GetFlag(FLAGS_resume)) argv.push_back("--resume");
    argv.insert(argv.end(), worker_args.begin(), worker_args.end());
    std::vector<std::string> env = {absl::StrCat("RANK=", r), absl::StrCat("WORLD_SIZE=", workers),
                                    absl::StrCat("LOCAL_RANK=", r), "MASTER_ADDR=127.0.0.1",
                                    absl::StrCat("MASTER_PORT=", port)};
    if (with_controller) env.push_back("HECATE_CONTROLLER=" + address);
    auto p = std::make_unique<proc::Subprocess>();
    if (!p->Start(argv, env, absl::StrCat(logs, "/worker", r, ".log"))) {
      std::fprintf(stderr, "hecate run: cannot start worker %d\n", r);
      result.code = 1;
      return result;
    }
    ranks.push_back(std::move(p));
  }
  // Each rank prints the address it bound before it joins the rendezvous.
  if (absl::GetFlag(FLAGS_worker_metrics)) {
    for (int r = 0; r < workers; ++r) {
      std::string at;
      if (!ranks[r]->WaitForLine("metrics on ", absl::Seconds(120), &at)) {
        std::fprintf(stderr, "hecate run: worker %d did not start; see %s/worker%d.log\n", r,
                     logs.c_str(), r);
        result.code = 1;
        return result;
      }
      result.worker_metrics.push_back(at);
      std::printf("  metrics         http://%s/metrics (rank %d)\n", at.c_str(), r);
    }
  }
  if (result.prometheus != nullptr) {
    std::printf("  prometheus      http://127.0.0.1:%d   (rules and alerts: deploy/prometheus)\n",
                result.prometheus->port);
  }
  std::printf("  logs            %s\n\n", logs.c_str());
  std::printf("%6s %8s %10s %7s %9s %8s  %s\n", "iter", "loss", "tokens/s", "balance", "plan",
              "step_ms", "phases ms (attn gate disp expert comb spAG/exposed spRS/exposed opt)");
  std::fflush(stdout);
  // Rank 0's stdout carries progress and summary lines; each row is shown as it arrives.
  std::string l;
  while (!g_interrupted && ranks[0]->ReadLine(absl::InfiniteFuture(), &l)) {
    if (l.rfind("progress ", 0) == 0) {
      auto kv = ParseKv(l);
      std::printf("%6s %8s %10s %7s %9s %8s  %s %s %s %s %s %s/%s %s/%s %s  [%s]\n",
                  kv["iter"].c_str(), kv["loss"].c_str(), kv["tokens_per_s"].c_str(),
                  kv["balancedness"].c_str(), kv["plan"].c_str(), kv["step_ms"].c_str(),
                  kv["attention_ms"].c_str(), kv["gate_ms"].c_str(), kv["dispatch_ms"].c_str(),
                  kv["expert_ms"].c_str(), kv["combine_ms"].c_str(), kv["spag_ms"].c_str(),
                  kv["spag_exposed_ms"].c_str(), kv["sprs_ms"].c_str(),
                  kv["sprs_exposed_ms"].c_str(), kv["optimizer_ms"].c_str(),
                  kv["controller"].c_str());
      std::fflush(stdout);
      result.rows.push_back(std::move(kv));
    } else if (l.rfind("summary ", 0) == 0) {
      result.summary = ParseKv(l);
    }
  }
  int failed = -1, failed_code = 0;
  for (int r = 0; r < workers; ++r) {
    if (g_interrupted) ranks[r]->Signal(SIGTERM);
    const int code = ranks[r]->Wait(absl::Seconds(180));
    if (code != 0 && failed < 0) {
      failed = r;
      failed_code = code;
    }
  }
  if (embedded) {
    controller.Signal(SIGTERM);
    controller.Wait(absl::Seconds(30));
  }
  if (g_interrupted) {
    // The rows so far stand as a summary of the interrupted run.
    std::vector<double> steps;
    for (auto& row : result.rows) {
      double ms = 0;
      if (absl::SimpleAtod(row["step_ms"], &ms)) steps.push_back(ms);
    }
    std::sort(steps.begin(), steps.end());
    if (!result.rows.empty()) {
      std::printf(
          "\nsummary (interrupted): %zu progress rows, last iteration %s, loss %s -> %s, step "
          "%.1f ms median over the rows shown\n",
          result.rows.size(), result.rows.back()["iter"].c_str(),
          result.rows.front()["loss"].c_str(), result.rows.back()["loss"].c_str(),
          steps.empty() ? 0.0 : steps[steps.size() / 2]);
    } else {
      std::printf("\nsummary (interrupted): no iteration finished\n");
    }
    std::fflush(stdout);
    std::fprintf(stderr, "hecate run: interrupted; logs in %s\n", logs.c_str());
    result.code = 130;
    return result;
  }
  if (failed >= 0) {
    std::fprintf(stderr,
                 "hecate run: worker %d failed (exit %d%s); see %s/worker%d.log (and the other "
                 "workers' logs)\n",
                 failed, failed_code,
                 failed_code == 3 ? ": a collective failed, a peer died or timed out" : "",
                 logs.c_str(), failed);
    result.code = 1;
    return result;
  }
  auto& sm = result.summary;
  std::printf(
      "\nsummary: %s iterations, loss %s -> %s, step %s ms median (%s ms mean), %s tokens/s, "
      "%s plan switches (final %s), spAG %s B, spRS %s B, All-to-All %s B (rank 0), spAG "
      "%s ms/step of which %s exposed, spRS %s ms of which %s exposed, peak copies %s B "
      "(plan predicted %s B), calibration %s copies gathered / %s dropped; iteration %s ms "
      "median (plan agreement, switch and load report included)\n",
      sm["iterations"].c_str(), sm["first_loss"].c_str(), sm["last_loss"].c_str(),
      sm["median_step_ms"].c_str(), sm["mean_step_ms"].c_str(), sm["tokens_per_s"].c_str(),
      sm["plans_applied"].c_str(), sm["final_plan"].c_str(), sm["spag_bytes"].c_str(),
      sm["sprs_bytes"].c_str(), sm["a2a_bytes"].c_str(), sm["mean_spag_ms"].c_str(),
      sm["mean_spag_exposed_ms"].c_str(), sm["mean_sprs_ms"].c_str(),
      sm["mean_sprs_exposed_ms"].c_str(), sm["peak_copy_bytes"].c_str(),
      sm["predicted_copy_bytes"].c_str(), sm["calibration_gathered"].c_str(),
      sm["calibration_dropped"].c_str(), sm["median_iteration_ms"].c_str());
  std::fflush(stdout);
  return result;
}

// Every numeric and enumerated flag, before anything starts: a usage error names the flag.
std::string CheckFlags() {
  const std::vector<std::string> policies = {"hecate",    "hecate-paper", "hecate-rm", "ep",
                                             "fastermoe", "flexmoe",      "smartmoe",  "eplb"};
  auto known = [&](const std::string& p) {
    return std::find(policies.begin(), policies.end(), p) != policies.end();
  };
  if (absl::GetFlag(FLAGS_workers) < 0)
    return "--workers must be >= 0 (0: one per available core; one with NCCL)";
  if (absl::GetFlag(FLAGS_iterations) < 1) return "--iterations must be >= 1";
  const std::string device = absl::GetFlag(FLAGS_device), comm = absl::GetFlag(FLAGS_comm);
  if (device != "cpu" && device != "cuda") return "--device must be cpu or cuda";
  if (!comm.empty() && comm != "nccl" && comm != "gloo") return "--comm must be nccl or gloo";
  if (comm == "nccl" && device != "cuda") return "--comm=nccl needs --device=cuda";
  if (absl::GetFlag(FLAGS_log_every) < 1) return "--log_every must be >= 1";
  if (absl::GetFlag(FLAGS_ranks_per_node) < 0) return "--ranks_per_node must be >= 0";
  if (absl::GetFlag(FLAGS_checkpoint_every) < 0) return "--checkpoint_every must be >= 0";
  if (absl::GetFlag(FLAGS_master_port) < 0 || absl::GetFlag(FLAGS_master_port) > 65535)
    return "--master_port must be 0 (a free one) or a port, 1-65535";
  const double skew = absl::GetFlag(FLAGS_skew);
  if (!(skew >= 0 && skew < 100)) return "--skew must be in [0, 100)";
  if (!known(absl::GetFlag(FLAGS_policy))) return "--policy: unknown policy";
  if (!absl::GetFlag(FLAGS_compare).empty() && !known(absl::GetFlag(FLAGS_compare)))
    return "--compare: unknown policy";
  if (absl::GetFlag(FLAGS_prometheus_port) < 0 || absl::GetFlag(FLAGS_prometheus_port) > 65535)
    return "--prometheus_port must be 0 (a free one) or a port, 1-65535";
  if (absl::GetFlag(FLAGS_prometheus) && !absl::GetFlag(FLAGS_compare).empty())
    return "--prometheus and --compare do not go together (Prometheus watches one job)";
  if ((absl::GetFlag(FLAGS_checkpoint_every) > 0 || absl::GetFlag(FLAGS_resume)) &&
      absl::GetFlag(FLAGS_checkpoint_dir).empty())
    return "--checkpoint_every and --resume need --checkpoint_dir";
  const std::string c = absl::GetFlag(FLAGS_controller);
  if (!c.empty() && (c.rfind(':') == std::string::npos || c.rfind(':') + 1 == c.size()))
    return "--controller must be host:port";
  const bool tls =
      !absl::GetFlag(FLAGS_tls_ca_file).empty() || !absl::GetFlag(FLAGS_tls_cert_file).empty() ||
      !absl::GetFlag(FLAGS_tls_key_file).empty() || !absl::GetFlag(FLAGS_token_file).empty();
  if (tls && c.empty())
    return "--tls_* and --token_file are for --controller (the embedded one is plaintext on "
           "loopback)";
  return "";
}

int Run(const std::vector<std::string>& worker_args) {
  if (const std::string bad = CheckFlags(); !bad.empty()) {
    std::fprintf(stderr, "hecate run: %s (hecate --help)\n", bad.c_str());
    return 2;
  }
  const std::vector<int> cpus = AvailableCpus();
  int workers = absl::GetFlag(FLAGS_workers);
  // NCCL takes one GPU per rank; this launcher starts one node's ranks, and the machines we test
  // on have one GPU.
  const bool nccl = absl::GetFlag(FLAGS_device) == "cuda" && absl::GetFlag(FLAGS_comm) != "gloo";
  if (workers == 0) workers = nccl ? 1 : std::max<int>(2, cpus.size());
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "fssdp" && mode != "ep") {
    std::fprintf(stderr, "hecate run: --mode must be fssdp or ep, not '%s'\n", mode.c_str());
    return 2;
  }
  const std::string controller_bin = FindBinary("controller/hecate-controller");
  const std::string worker_bin = FindBinary("worker/hecate-worker");
  if (controller_bin.empty() || worker_bin.empty()) {
    std::fprintf(stderr,
                 "hecate run: cannot find hecate-controller / hecate-worker next to %s "
                 "(build //controller:hecate-controller //worker:hecate-worker, or pass "
                 "--bin_dir)\n",
                 SelfDir().c_str());
    return 2;
  }
  std::string state = absl::GetFlag(FLAGS_state_dir);
  if (state.empty()) {
    char tmpl[] = "/tmp/hecate-run-XXXXXX";
    state = mkdtemp(tmpl);
  }
  std::string logs = absl::GetFlag(FLAGS_log_dir);
  if (logs.empty()) logs = state + "/logs";
  signal(SIGINT, OnInterrupt);
  signal(SIGTERM, OnInterrupt);
  const std::string policy = absl::GetFlag(FLAGS_policy);
  const std::string compare = absl::GetFlag(FLAGS_compare);
  RunResult main_run = RunJob(policy, mode, workers, worker_args, controller_bin, worker_bin, state,
                              compare.empty() ? logs : logs + "/" + policy);
  if (main_run.prometheus != nullptr && main_run.code == 0) {
    std::printf(
        "\nprometheus stays up at http://127.0.0.1:%d with the run's data; Ctrl-C stops it\n",
        main_run.prometheus->port);
    std::fflush(stdout);
    while (!g_interrupted) pause();
    main_run.prometheus->process.Signal(SIGTERM);
    main_run.prometheus->process.Wait(absl::Seconds(30));
    return 0;
  }
  if (main_run.code != 0 || compare.empty()) return main_run.code;
  std::printf("\n-- the same job under %s --\n", compare.c_str());
  RunResult other = RunJob(compare, compare == "ep" ? "ep" : "fssdp", workers, worker_args,
                           controller_bin, worker_bin, state + "/" + compare, logs + "/" + compare);
  if (other.code != 0) return other.code;
  double ours = 0, theirs = 0;
  if (!absl::SimpleAtod(main_run.summary["median_step_ms"], &ours) ||
      !absl::SimpleAtod(other.summary["median_step_ms"], &theirs) || ours <= 0) {
    std::fprintf(stderr, "hecate run: a run printed no step time to compare\n");
    return 1;
  }
  std::printf("\ncompare: %s %.1f ms/step, %s %.1f ms/step (median): %s is %.2fx %s\n",
              policy.c_str(), ours, compare.c_str(), theirs, policy.c_str(),
              theirs >= ours ? theirs / ours : ours / theirs, theirs >= ours ? "faster" : "slower");
  return 0;
}

}  // namespace
}  // namespace hecate

int main(int argc, char** argv) {
  // Split "hecate run [flags] [-- worker flags]".
  std::vector<char*> mine;
  std::vector<std::string> worker_args;
  bool rest = false;
  for (int i = 0; i < argc; ++i) {
    if (rest) {
      worker_args.push_back(argv[i]);
    } else if (std::string(argv[i]) == "--") {
      rest = true;
    } else {
      mine.push_back(argv[i]);
    }
  }
  const std::vector<std::string> args = hecate::ParseFlags(
      static_cast<int>(mine.size()), mine.data(),
      "Hecate launcher.\nUsage: hecate run [flags] [-- hecate-worker flags]\n"
      "  Starts an embedded controller and --workers worker processes on loopback that train a "
      "small GPT-MoE with FSSDP, shows live progress and a summary.");
  if (args.empty() || args[0] != "run") {
    std::fprintf(stderr, "usage: hecate run [flags] [-- worker flags]   (hecate --help)\n");
    return 2;
  }
  if (args.size() > 1) {
    std::fprintf(stderr, "hecate run: unexpected argument '%s'\n", args[1].c_str());
    return 2;
  }
  return hecate::Run(worker_args);
}
