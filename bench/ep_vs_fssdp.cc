// EP vs FSSDP on two CPU worker processes (each pinned to its own core, one thread), under skewed
// routing (a gate bias sends most tokens to the experts rank 0 owns under EP) and balanced
// routing, in one run, with the phase breakdown.
//
//   bazel run //bench:ep_vs_fssdp [-- --iterations=40]
//
// Ends with "ep_s=<s/iter> fssdp_s=<s/iter> speedup=<ep/fssdp>" for the skewed case and
// "spag_ms=.. spag_exposed_ms=.. sprs_ms=.. sprs_exposed_ms=.." for the skewed FSSDP run (the
// sparse collectives' time, and the time the training thread waited for them: means per step).
// Also reports the ideal speedup (EP's time if its skewed tokens were perfectly balanced, from the
// balanced run's expert phase) and FSSDP's share of it, and what the overlap is worth: the skewed
// FSSDP run again with --overlap=false (blocking collectives), same rounds.
//
// This machine is shared and noisy: the four configurations run in --rounds interleaved rounds
// (a slow spell hits all four, not one), and the ratios use the median iteration over all rounds
// (a stalled iteration does not move it). The phase table shows means.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bench/worker_group.h"
#include "common/flags.h"

ABSL_FLAG(int, iterations, 40, "Iterations per configuration and round");
ABSL_FLAG(int, rounds, 2, "Interleaved rounds of the four configurations");
ABSL_FLAG(int, warmup, 8, "Iterations excluded from the means");
ABSL_FLAG(double, skew_bias, 6.0, "Gate bias toward rank 0's experts in the skewed case");

namespace hecate::bench {
namespace {

int Main(int argc, char** argv) {
  ParseFlags(argc, argv, "EP vs FSSDP benchmark on two CPU worker processes.");
  const std::string worker = FindBinary("worker/hecate-worker");
  const int iters = absl::GetFlag(FLAGS_iterations);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  if (iters <= warmup || rounds < 1) {
    std::fprintf(stderr, "need --iterations > --warmup and --rounds >= 1\n");
    return 2;
  }
  const std::vector<std::string> model = BenchModelFlags(iters);
  struct Case {
    std::string name;
    std::string mode;
    double bias;
    bool overlap = true;
    bool reshard = true;
  };
  std::vector<Case> cases = {
      {"ep-skewed", "ep", absl::GetFlag(FLAGS_skew_bias)},
      {"fssdp-skewed", "fssdp", absl::GetFlag(FLAGS_skew_bias)},
      {"fssdp-skewed-blocking", "fssdp", absl::GetFlag(FLAGS_skew_bias),
       /*overlap=*/false},
      // Without the re-shard the copies stay: the overlap on real traffic.
      {"fssdp-skewed-copies", "fssdp", absl::GetFlag(FLAGS_skew_bias), true,
       /*reshard=*/false},
      {"fssdp-skewed-copies-blocking", "fssdp", absl::GetFlag(FLAGS_skew_bias), false, false},
      {"ep-balanced", "ep", 0},
      {"fssdp-balanced", "fssdp", 0}};
  std::map<std::string, GroupResult> results;
  const char* phases[] = {"step", "attention",    "gate", "dispatch",     "expert",   "combine",
                          "spag", "spag_exposed", "sprs", "sprs_exposed", "optimizer"};
  std::printf(
      "case,step_ms,attention_ms,gate_ms,dispatch_ms,expert_ms,combine_ms,spag_ms,"
      "spag_exposed_ms,sprs_ms,sprs_exposed_ms,optimizer_ms,balancedness,tokens_per_s,"
      "median_step_ms\n");
  for (int round = 0; round < rounds; ++round) {
    for (const Case& c : cases) {
      std::vector<std::string> flags = model;
      flags.push_back("--mode=" + c.mode);
      flags.push_back(absl::StrCat("--gate_bias=", c.bias));
      flags.push_back(c.overlap ? "--overlap=true" : "--overlap=false");
      if (!c.reshard) flags.push_back("--reshard_period=0");
      GroupResult r = RunWorkers(worker, 2, flags, {}, warmup, "/tmp/hecate-bench-" + c.name);
      if (!r.ok) {
        std::fprintf(stderr, "%s: %s\n", c.name.c_str(), r.error.c_str());
        return 1;
      }
      std::fprintf(stderr, "round %d/%d %s: median step %.2f ms\n", round + 1, rounds,
                   c.name.c_str(), Median(r.samples_ms["step"]));
      GroupResult& all = results[c.name];
      for (const auto& [phase, v] : r.samples_ms) {
        all.samples_ms[phase].insert(all.samples_ms[phase].end(), v.begin(), v.end());
      }
      all.balancedness += r.balancedness / rounds;
      all.tokens_per_s += r.tokens_per_s / rounds;
    }
  }
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return v.empty() ? 0.0 : sum / v.size();
  };
  for (const Case& c : cases) {
    GroupResult& r = results[c.name];
    std::printf("%s", c.name.c_str());
    for (const char* p : phases) std::printf(",%.2f", mean(r.samples_ms[p]));
    std::printf(",%.3f,%.0f,%.2f\n", r.balancedness, r.tokens_per_s, Median(r.samples_ms["step"]));
  }
  auto median_s = [&](const char* name, const char* phase) {
    return Median(results[name].samples_ms[phase]) / 1e3;
  };
  const double ep = median_s("ep-skewed", "step");
  const double fs = median_s("fssdp-skewed", "step");
  const double ep_bal = median_s("ep-balanced", "step");
  const double fs_bal = median_s("fssdp-balanced", "step");
  // Ideal: EP's skewed step with its expert phase replaced by the balanced run's expert phase.
  const double ideal = ep - median_s("ep-skewed", "expert") + median_s("ep-balanced", "expert");
  const double ideal_speedup = ep / ideal;
  std::printf("\nbalanced: ep %.4f s/iter, fssdp %.4f s/iter (fssdp/ep = %.3f)\n", ep_bal, fs_bal,
              fs_bal / ep_bal);
  // Two readings of "FSSDP's speedup as a share of the ideal": the ratio of the speedups, and the
  // stricter share of the gain over EP (speedup - 1 over ideal - 1).
  std::printf(
      "ideal speedup under skew (EP with balanced expert time) = %.2f; FSSDP's speedup is %.0f%% "
      "of it (%.0f%% of the ideal gain over EP)\n",
      ideal_speedup, 100.0 * (ep / fs) / ideal_speedup,
      100.0 * (ep / fs - 1) / std::max(1e-9, ideal_speedup - 1));
  for (const char* name : {"fssdp-skewed", "fssdp-skewed-copies"}) {
    const double with = median_s(name, "step");
    const double without = median_s(absl::StrCat(name, "-blocking").c_str(), "step");
    GroupResult& r = results[name];
    std::printf(
        "overlap, %s: %.4f s/iter with it, %.4f without (%.3fx); spAG %.2f ms of which %.2f "
        "exposed, spRS %.2f ms of which %.2f exposed\n",
        name, with, without, without / with, mean(r.samples_ms["spag"]),
        mean(r.samples_ms["spag_exposed"]), mean(r.samples_ms["sprs"]),
        mean(r.samples_ms["sprs_exposed"]));
  }
  std::printf("ep_s=%.4f fssdp_s=%.4f speedup=%.2f\n", ep, fs, ep / fs);
  GroupResult& skewed = results["fssdp-skewed"];
  std::printf("spag_ms=%.3f spag_exposed_ms=%.3f sprs_ms=%.3f sprs_exposed_ms=%.3f\n",
              mean(skewed.samples_ms["spag"]), mean(skewed.samples_ms["spag_exposed"]),
              mean(skewed.samples_ms["sprs"]), mean(skewed.samples_ms["sprs_exposed"]));
  return 0;
}

}  // namespace
}  // namespace hecate::bench

int main(int argc, char** argv) { return hecate::bench::Main(argc, argv); }
