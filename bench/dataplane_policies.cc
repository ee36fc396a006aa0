// Every policy on the real data plane: the same GPT-MoE and skewed routing on two CPU worker
// processes (each pinned to its own core, one thread; the workers' local planner, no controller),
// each policy run as its system runs it (FSSDP copies gathered and reduced on the lane, persistent
// replicas with their optimizer state and gradient AllReduce, FasterMoE's shadows after the gate).
//
//   bazel run -c opt //bench:dataplane_policies [-- --iterations=30 --layers=6]
//
// Prints a CSV:
//   policy,step_ms,speedup_vs_ep,peak_copy_bytes,sparse_bytes_per_iter
// step_ms: the median step (rank 0) over --rounds interleaved rounds; peak_copy_bytes: the most
// bytes of copies any rank held at once (an FSSDP copy's parameters; a persistent replica's
// parameters, gradient and Adam moments); sparse_bytes_per_iter: bytes every rank sent by spAG and
// spRS (or the replicas' AllReduce, or the shadows' broadcast) per iteration. Then the migration
// bytes and losses, so runs can be checked against each other (same seed: every policy trains the
// same model).
//
// The model has more layers than the bench default (--layers, default 6) so that a
// re-materialized layer's copies, freed after its forward, lower the peak below the prefetch
// window's.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/worker_group.h"
#include "common/flags.h"

ABSL_FLAG(int, iterations, 30, "Iterations per policy and round");
ABSL_FLAG(int, rounds, 2, "Interleaved rounds of every policy (a slow spell hits all, not one)");
ABSL_FLAG(int, warmup, 8, "Iterations excluded from the step times");
ABSL_FLAG(int, layers, 6, "MoE blocks of the model");
ABSL_FLAG(double, skew_bias, 6.0, "Gate bias toward rank 0's experts");

namespace hecate::bench {
namespace {

int64_t Int(const std::map<std::string, std::string>& m, const std::string& key) {
  int64_t v = -1;
  auto it = m.find(key);
  if (it == m.end() || !absl::SimpleAtoi(it->second, &v)) return -1;
  return v;
}

int Main(int argc, char** argv) {
  ParseFlags(argc, argv, "Every policy on the real data plane (two CPU worker processes).");
  const std::string worker = FindBinary("worker/hecate-worker");
  const int iters = absl::GetFlag(FLAGS_iterations);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  if (iters <= warmup || absl::GetFlag(FLAGS_layers) < 1 || rounds < 1) {
    std::fprintf(stderr, "need --iterations > --warmup, --layers >= 1 and --rounds >= 1\n");
    return 2;
  }
  std::vector<std::string> model = BenchModelFlags(iters);
  model.push_back(absl::StrCat("--layers=", absl::GetFlag(FLAGS_layers)));
  model.push_back(absl::StrCat("--gate_bias=", absl::GetFlag(FLAGS_skew_bias)));
  struct Row {
    std::string policy;
    std::vector<double> steps_ms;  // every round's kept iterations
    double step_ms = 0;
    int64_t peak = 0, sparse = 0, migration = 0;
    std::string first_loss, last_loss;
  };
  std::vector<Row> rows;
  for (const std::string policy :
       {"ep", "eplb", "flexmoe", "smartmoe", "fastermoe", "hecate", "hecate-rm"}) {
    rows.push_back(Row{policy});
  }
  for (int round = 0; round < rounds; ++round) {
    for (Row& row : rows) {
      std::vector<std::string> flags = model;
      flags.push_back(row.policy == "ep" ? "--mode=ep" : "--mode=fssdp");
      flags.push_back("--policy=" + row.policy);
      GroupResult r =
          RunWorkers(worker, 2, flags, {}, warmup, "/tmp/hecate-bench-dp-" + row.policy);
      if (!r.ok) {
        std::fprintf(stderr, "%s: %s\n", row.policy.c_str(), r.error.c_str());
        return 1;
      }
      const std::vector<double>& steps = r.samples_ms["step"];
      row.steps_ms.insert(row.steps_ms.end(), steps.begin(), steps.end());
      // Every round runs the same seed and plans: the byte figures are the same each time.
      row.peak = Int(r.summary, "job_peak_copy_bytes");
      row.sparse = Int(r.summary, "job_sparse_bytes");
      row.migration = Int(r.summary, "job_migration_bytes");
      row.first_loss = r.summary["first_loss"];
      row.last_loss = r.summary["last_loss"];
      std::fprintf(stderr, "round %d/%d %s: median step %.1f ms\n", round + 1, rounds,
                   row.policy.c_str(), Median(steps));
    }
  }
  for (Row& row : rows) row.step_ms = Median(row.steps_ms);
  const double ep = rows.front().step_ms;
  std::printf("policy,step_ms,speedup_vs_ep,peak_copy_bytes,sparse_bytes_per_iter\n");
  for (const Row& r : rows) {
    std::printf("%s,%.1f,%.2f,%lld,%lld\n", r.policy.c_str(), r.step_ms, ep / r.step_ms,
                static_cast<long long>(r.peak), static_cast<long long>(r.sparse / iters));
  }
  std::printf("\npolicy,migration_bytes_total,first_loss,last_loss\n");
  for (const Row& r : rows) {
    std::printf("%s,%lld,%s,%s\n", r.policy.c_str(), static_cast<long long>(r.migration),
                r.first_loss.c_str(), r.last_loss.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace hecate::bench

int main(int argc, char** argv) { return hecate::bench::Main(argc, argv); }
