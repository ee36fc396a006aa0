// Whole-job comparison on two CPU workers (each pinned to its own core) under skewed routing:
// static EP vs controller-driven Hecate vs local planning only, and the overhead of the agent's
// reporting (EP with the agent streaming reports vs without), in one run.
//
//   bazel run //bench:job_bench [-- --iterations=40]
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bench/worker_group.h"
#include "common/flags.h"
#include "common/subprocess.h"

ABSL_FLAG(int, iterations, 40, "Iterations per configuration");
ABSL_FLAG(int, warmup, 8, "Iterations excluded from the means");
ABSL_FLAG(int, repeats, 2, "Runs of each configuration (interleaved; means reported)");

namespace hecate::bench {
namespace {

int Main(int argc, char** argv) {
  ParseFlags(argc, argv, "Job-level benchmark: ep vs hecate (controller) vs local planning.");
  const std::string worker = FindBinary("worker/hecate-worker");
  const std::string controller_bin = FindBinary("controller/hecate-controller");
  std::vector<std::string> model = BenchModelFlags(absl::GetFlag(FLAGS_iterations));
  model.push_back("--gate_bias=6");
  char tmpl[] = "/tmp/hecate-jobbench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  proc::Subprocess controller;
  if (!controller.Start({controller_bin, "--listen=127.0.0.1:0",
                         "--metrics-listen=", "--state-dir=" + dir + "/state", "--policy=hecate",
                         "--report-deadline-ms=1000",
                         // The workers' local planner re-shards on this period too.
                         absl::StrCat("--reshard_period=", kBenchReshardPeriod)},
                        {}, dir + "/controller.log")) {
    return 1;
  }
  std::string address;
  if (!controller.WaitForLine("listening on ", absl::Seconds(30), &address)) return 1;
  struct Case {
    std::string name;
    std::vector<std::string> flags;
    bool with_controller;
  };
  std::vector<Case> cases = {
      {"ep", {"--mode=ep"}, false},
      {"ep+agent", {"--mode=ep"}, true},
      {"hecate(controller)", {"--mode=fssdp", "--local_planning=false"}, true},
      {"local-planning", {"--mode=fssdp", "--local_planning=true"}, false},
  };
  std::map<std::string, std::vector<double>> step, tps;
  for (int rep = 0; rep < absl::GetFlag(FLAGS_repeats); ++rep) {
    for (const Case& c : cases) {
      std::vector<std::string> flags = model;
      flags.insert(flags.end(), c.flags.begin(), c.flags.end());
      flags.push_back(absl::StrCat("--job=bench", rep, c.name.substr(0, 2)));
      std::vector<std::string> env;
      if (c.with_controller) env.push_back("HECATE_CONTROLLER=" + address);
      GroupResult r = RunWorkers(worker, 2, flags, env, absl::GetFlag(FLAGS_warmup),
                                 dir + "/" + std::to_string(rep) + c.name.substr(0, 2));
      if (!r.ok) {
        std::fprintf(stderr, "%s: %s\n", c.name.c_str(), r.error.c_str());
        return 1;
      }
      step[c.name].push_back(r.mean_ms["step"]);
      tps[c.name].push_back(r.tokens_per_s);
    }
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0 : s / v.size();
  };
  std::printf("case,step_ms,tokens_per_s,speedup_vs_ep\n");
  const double ep = mean(step["ep"]);
  for (const Case& c : cases) {
    std::printf("%s,%.2f,%.0f,%.2f\n", c.name.c_str(), mean(step[c.name]), mean(tps[c.name]),
                ep / mean(step[c.name]));
  }
  std::printf("reporting overhead (ep+agent vs ep): %+.2f%%\n",
              100.0 * (mean(step["ep+agent"]) / ep - 1));
  controller.Signal(SIGTERM);
  controller.Wait(absl::Seconds(20));
  std::error_code ignored;  // a clean run leaves nothing behind; failures keep their logs
  std::filesystem::remove_all(dir, ignored);
  return 0;
}

}  // namespace
}  // namespace hecate::bench

int main(int argc, char** argv) { return hecate::bench::Main(argc, argv); }
