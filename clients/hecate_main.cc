// hecate: the launcher. `hecate run` is the main job: an embedded controller plus N worker
// processes on loopback training a small GPT-MoE, with live progress and a final summary.
//
//   hecate run [--workers=4] [--iterations=60] [--policy=hecate] [-- WORKER FLAGS...]
//
// Anything after "--" goes to every hecate-worker (e.g. -- --layers=4 --gate_bias=2).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
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

ABSL_FLAG(int, workers, 4, "Worker processes (ranks)");
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

namespace hecate {
namespace {

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
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
  for (const std::string& c : candidates) {
    if (access(c.c_str(), X_OK) == 0) return c;
  }
  return "";
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

int Run(const std::vector<std::string>& worker_args) {
  const int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 1) {
    std::fprintf(stderr, "hecate run: --workers must be >= 1\n");
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
  std::system(absl::StrCat("mkdir -p '", logs, "'").c_str());

  signal(SIGINT, OnInterrupt);
  signal(SIGTERM, OnInterrupt);
  proc::Subprocess controller;
  const bool with_controller = absl::GetFlag(FLAGS_mode) == "fssdp";
  std::string address, metrics;
  if (with_controller) {
    if (!controller.Start(
            {controller_bin, "--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0",
             "--state-dir=" + state + "/controller", "--policy=" + absl::GetFlag(FLAGS_policy),
             "--report-deadline-ms=2000", "--reshard-period=20"},
            {}, logs + "/controller.log")) {
      std::fprintf(stderr, "hecate run: cannot start %s\n", controller_bin.c_str());
      return 1;
    }
    if (!controller.WaitForLine("listening on ", absl::Seconds(60), &address) ||
        !controller.WaitForLine("metrics on ", absl::Seconds(10), &metrics)) {
      std::fprintf(stderr, "hecate run: the controller did not start; see %s/controller.log\n",
                   logs.c_str());
      return 1;
    }
  }
  const int port =
      absl::GetFlag(FLAGS_master_port) > 0 ? absl::GetFlag(FLAGS_master_port) : proc::FreePort();
  std::printf("Hecate: %d workers (%s, policy %s), %d iterations\n", workers,
              absl::GetFlag(FLAGS_mode).c_str(), absl::GetFlag(FLAGS_policy).c_str(),
              absl::GetFlag(FLAGS_iterations));
  if (with_controller) {
    std::printf("  controller      %s   (hecatectl --controller=%s status)\n", address.c_str(),
                address.c_str());
    std::printf("  metrics         http://%s/metrics (controller)\n", metrics.c_str());
  }
  std::vector<std::unique_ptr<proc::Subprocess>> ranks;
  for (int r = 0; r < workers; ++r) {
    std::vector<std::string> argv = {
        worker_bin,
        "--mode=" + absl::GetFlag(FLAGS_mode),
        "--policy=" + absl::GetFlag(FLAGS_policy),
        absl::StrCat("--iterations=", absl::GetFlag(FLAGS_iterations)),
        absl::StrCat("--ranks_per_node=", absl::GetFlag(FLAGS_ranks_per_node)),
        absl::StrCat("--log_every=", absl::GetFlag(FLAGS_log_every)),
        "--job=hecate-run"};
    if (r == 0) argv.push_back("--metrics_listen=127.0.0.1:0");
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
      return 1;
    }
    ranks.push_back(std::move(p));
  }
  std::printf("  logs            %s\n\n", logs.c_str());
  std::printf("%6s %8s %10s %7s %9s %8s  %s\n", "iter", "loss", "tokens/s", "balance", "plan",
              "step_ms", "phases ms (attn gate disp expert comb spAG spRS opt)");
  std::fflush(stdout);
  // Rank 0's stdout carries progress and summary lines.
  std::string line;
  std::map<std::string, std::string> summary;
  for (const std::string& l : ranks[0]->ReadLines(absl::Hours(24 * 365))) {
    if (l.rfind("progress ", 0) == 0) {
      auto kv = ParseKv(l);
      std::printf("%6s %8s %10s %7s %9s %8s  %s %s %s %s %s %s %s %s  [%s]\n", kv["iter"].c_str(),
                  kv["loss"].c_str(), kv["tokens_per_s"].c_str(), kv["balancedness"].c_str(),
                  kv["plan"].c_str(), kv["step_ms"].c_str(), kv["attention_ms"].c_str(),
                  kv["gate_ms"].c_str(), kv["dispatch_ms"].c_str(), kv["expert_ms"].c_str(),
                  kv["combine_ms"].c_str(), kv["spag_ms"].c_str(), kv["sprs_ms"].c_str(),
                  kv["optimizer_ms"].c_str(), kv["controller"].c_str());
      std::fflush(stdout);
    } else if (l.rfind("summary ", 0) == 0) {
      summary = ParseKv(l);
    }
    if (g_interrupted) break;
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
  if (with_controller) {
    controller.Signal(SIGTERM);
    controller.Wait(absl::Seconds(30));
  }
  if (g_interrupted) {
    std::fprintf(stderr, "hecate run: interrupted\n");
    return 130;
  }
  if (failed >= 0) {
    std::fprintf(stderr,
                 "hecate run: worker %d failed (exit %d%s); see %s/worker%d.log (and the other "
                 "workers' logs)\n",
                 failed, failed_code,
                 failed_code == 3 ? ": a collective failed, a peer died or timed out" : "",
                 logs.c_str(), failed);
    return 1;
  }
  std::printf(
      "\nsummary: %s iterations, loss %s -> %s, mean step %s ms, %s tokens/s, %s plan "
      "switches (final %s), spAG %s B, spRS %s B, All-to-All %s B (rank 0), calibration "
      "%s copies gathered / %s dropped\n",
      summary["iterations"].c_str(), summary["first_loss"].c_str(), summary["last_loss"].c_str(),
      summary["mean_step_ms"].c_str(), summary["tokens_per_s"].c_str(),
      summary["plans_applied"].c_str(), summary["final_plan"].c_str(),
      summary["spag_bytes"].c_str(), summary["sprs_bytes"].c_str(), summary["a2a_bytes"].c_str(),
      summary["calibration_gathered"].c_str(), summary["calibration_dropped"].c_str());
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
