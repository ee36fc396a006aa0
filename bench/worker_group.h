// Benchmark helper: runs W hecate-worker processes (each pinned to a core with taskset, one
// intra-op thread) and parses rank 0's progress and summary lines.
#ifndef HECATE_BENCH_WORKER_GROUP_H_
#define HECATE_BENCH_WORKER_GROUP_H_

#include <map>
#include <string>
#include <vector>

namespace hecate::bench {

struct GroupResult {
  bool ok = false;
  std::string error;
  // Means over the iterations after `skip` warm-up iterations, milliseconds.
  std::map<std::string, double> mean_ms;  // step, attention, gate, dispatch, expert, ...
  // Every kept iteration's value, in order, milliseconds (for medians and for pooling runs).
  std::map<std::string, std::vector<double>> samples_ms;
  double tokens_per_s = 0;
  double balancedness = 0;
  std::map<std::string, std::string> summary;
};

// `extra` flags go to every worker; env adds e.g. HECATE_CONTROLLER. Cores are assigned
// rank % ncores.
GroupResult RunWorkers(const std::string& worker_binary, int world,
                       const std::vector<std::string>& extra, const std::vector<std::string>& env,
                       int skip, const std::string& log_prefix);

// The median of `v` (the mean of the middle two for an even count); 0 when empty.
double Median(std::vector<double> v);

std::string FindBinary(const std::string& runfile_path);

// The local planner's re-sharding period in the CPU benchmarks: a run of 2 x 40 iterations never
// reaches the default 100, so without it the benchmarks would measure FSSDP without its
// heterogeneous sharding (paper Alg. 2). The simulator replaying them uses the same period.
inline constexpr int kBenchReshardPeriod = 10;

// The GPT-MoE every CPU benchmark trains (ep_vs_fssdp, job_bench, calibration: the calibration
// fits the simulator to exactly this model). Expert compute dominates: wide experts, few heads,
// short sequences. 4 experts: EP puts 0,1 on rank 0 and 2,3 on rank 1; the skew (--gate_bias)
// favours experts 0 and 1.
std::vector<std::string> BenchModelFlags(int iterations);

}  // namespace hecate::bench

#endif  // HECATE_BENCH_WORKER_GROUP_H_
