// Trace-driven cluster simulator: replays per-iteration [device x expert] loads (a recorded trace
// or the generator) on a described cluster and model under any policy, using placement/'s planners
// and cost model, and reports per-iteration time breakdowns, per-device memory and bytes moved.
//
// Per iteration i, through the same planning loop as the controller and the workers
// (placement/planning_loop.h): the policy plans from the sliding-window estimate of iterations
// < i and the previous plan (a policy that plans after the gate, FasterMoE, from iteration i's
// actual loads); FSSDP policies re-shard (Alg. 2) every `reshard_period` iterations when the gain
// covers the migration; the plan in force is then judged on iteration i's actual loads as the
// workers run it (placement::Judge). Pure (no I/O, no clocks).
#ifndef HECATE_SIM_SIMULATOR_H_
#define HECATE_SIM_SIMULATOR_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/calibration.h"
#include "placement/cluster.h"
#include "placement/load.h"
#include "placement/policy.h"
#include "placement/synthetic.h"

namespace hecate::sim {

struct SimOptions {
  std::string policy = "hecate";
  int window = 5;
  // FSSDP re-shard period (0: never). "hecate-rm" is "hecate" with every layer re-gathered.
  int reshard_period = 100;
  double damping = 0.0;
  placement::PlannerConfig planner;
  // Iterations simulated but not counted (window warm-up).
  int warmup = 5;
  // Non-MoE work per layer and iteration other than attention (gate, norms, optimizer share),
  // seconds; calibrated on measured runs (sim/calibration), 0 for the paper setups.
  double other_seconds_per_layer = 0;
  // Attention forward time per layer for the time breakdown when it differs from the overlap
  // window the planner assumes (e.g. a CPU data plane that overlaps nothing: window 0, attention
  // measured); < 0: the planner's.
  double attention_seconds = -1;
  // Replaying a recorded run: the cluster the workers planned with (the rates they assumed), so
  // the simulator takes the same decisions they took; times still come from the simulated
  // cluster. Null: plan on the simulated cluster.
  const placement::Cluster* planning_cluster = nullptr;
  // The model the planner believes, when it differs from the timed one only in cost parameters
  // (e.g. the fixed copy cost the workers assumed; same layers and experts). Null: the timed one.
  const placement::ModelSpec* planning_model = nullptr;
  // Calibration as the workers run it (on by default, for the policies that calibrate): each
  // layer of the plan in force calibrated on the iteration's actual counts with the planning
  // cluster and model, its late gather timed on the simulated one (placement::Judge).
  placement::CalibrationRule calibration;
};

// One iteration's predicted time, seconds.
struct IterationTime {
  double attention = 0;  // 3 x attention forward per layer (forward + backward)
  double all_to_all = 0;
  double expert = 0;          // expert compute, slowest device
  double exposed_sparse = 0;  // spAG/spRS (or shadow broadcast / replica AllReduce) not hidden
  double migration = 0;
  double other = 0;
  double total() const {
    return attention + all_to_all + expert + exposed_sparse + migration + other;
  }
};

struct SimResult {
  std::string policy;
  int iterations = 0;       // counted iterations
  IterationTime mean;       // per iteration
  double balancedness = 0;  // mean over layers and iterations
  double max_over_mean = 0;
  int64_t sparse_bytes_per_iter = 0;
  int64_t migration_bytes_total = 0;
  std::vector<int64_t> peak_memory_bytes;  // per device, max over iterations
  int64_t peak_memory_max = 0;
  int plans_published = 0;
  double calibrated_layer_share = 0;  // of the counted layers, the share calibration changed
  std::vector<IterationTime> per_iteration;
  // Token conservation check: tokens dispatched equals tokens routed, every iteration.
  bool tokens_conserved = true;
};

// Loads for iteration i (0-based).
using LoadSource = std::function<placement::ModelLoad(int iteration)>;

// INVALID_ARGUMENT for an unknown policy or shapes that disagree with the cluster and model.
absl::StatusOr<SimResult> Simulate(const placement::Cluster& cluster,
                                   const placement::ModelSpec& model, const LoadSource& loads,
                                   int iterations, const SimOptions& options);

// Generator parameters fitted to a trace (see Fit).
struct GeneratorFit {
  double zipf_s = 1.0;             // skew of the window-mean expert loads (mean over layers)
  std::vector<double> layer_zipf;  // per layer
  double drift_per_iteration = 0;  // hot-set rotation speed, ranks per iteration
  double source_noise = 0.1;       // relative spread of a source's shares around the mean
  double r2 = 0;                   // goodness of the log-log Zipf fit (mean over layers)
};

// Fits SkewOptions-style parameters to observed loads (one ModelLoad per iteration).
GeneratorFit Fit(const std::vector<placement::ModelLoad>& loads);

}  // namespace hecate::sim

#endif  // HECATE_SIM_SIMULATOR_H_
