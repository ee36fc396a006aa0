// The planning loop of one job, shared by the controller's core, the workers' local (fail-static)
// planner and the simulator, so that all three decide identically:
//
//   Observe(load)      an iteration's [source device x expert] counts enter the load window
//   MakeTask(i)        what planning needs, copied out (window snapshot, plan in force, whether a
//                      re-shard is due -- the cadence is consumed here); cheap, under the caller's
//                      lock if it has one
//   PlanStep(task)     pure: the window's estimate, the policy, DecidePlan; may run off any lock
//   Commit(plan)       the plan gets its id (epoch, next version), sharding version and
//                      iterations, and becomes the plan in force
//
// and Judge(): a plan as the workers run it on an iteration's actual counts -- calibrated under
// their CalibrationRule, its late gathers charged -- for the controller's observed balancedness,
// the simulator's times and the benchmarks.
//
// PlanningLoop is not thread-safe (its owner serializes calls); the free functions are pure and
// thread-safe.
#ifndef HECATE_PLACEMENT_PLANNING_LOOP_H_
#define HECATE_PLACEMENT_PLANNING_LOOP_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "placement/calibration.h"
#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/load.h"
#include "placement/plan.h"
#include "placement/policy.h"

namespace hecate::placement {

// Why a plan was (or was not) published.
enum class Decision {
  kFirst,     // the job had no plan
  kPolicy,    // the policy changed
  kGain,      // predicted at least `damping` faster than the plan in force
  kBalance,   // closer to the balance target within its time budget
  kReshard,   // a re-shard whose saving over one period covers its migration
  kSchedule,  // a baseline's own cadence or trigger re-placed (Policy::SchedulesItself)
  kDamped,    // kept the plan in force
  kFrozen,    // planning is frozen (the controller's)
};
// "first", "policy", "gain", "balance", "reshard", "schedule", "damped", "frozen" (logs and
// metrics).
const char* DecisionName(Decision d);

struct PlanOutcome {
  std::optional<Plan> plan;  // the plan to publish (id unset); nullopt: keep the plan in force
  Decision decision = Decision::kDamped;
  double predicted_gain = 0;  // relative, vs the plan in force on the same estimate
};

// One planning decision. A policy that schedules itself (the baselines) gets its plan published
// whenever it differs from the one in force. Otherwise: run the policy on the current sharding,
// and, when a re-shard is due, also on Alg. 2's sharding; publish the re-shard when the time it
// saves over one period covers its migration, else publish the policy's plan when it is predicted
// at least `damping` faster than the plan in force (evaluated on the same estimate), or when its
// layers are in all at least 0.01 closer to the config's balance_target (the sum over layers of
// max/mean over it) and it is predicted at most balance_budget slower than the plan the policy
// makes for time alone. `request.previous` is the plan in force (may be null); `request.owners` is
// ignored (the sharding comes from the plan in force, or even sharding at the start).
// INVALID_ARGUMENT for a malformed request. Pure.
absl::StatusOr<PlanOutcome> DecidePlan(const Policy& policy, const PlanRequest& request,
                                       bool reshard_due, int reshard_period, double damping);

struct PlanningConfig {
  std::string policy = "hecate";
  // Sliding-window length of the load estimate (paper: w = 5).
  int window = 5;
  // Consider a re-shard (Alg. 2) every this many iterations (paper: 100); 0: never.
  int reshard_period = 100;
  // Publish a plan only when it is predicted this much faster (relative) than the plan in force.
  double damping = 0.02;
  PlannerConfig planner;
};

// Everything one planning step needs, copied out of a PlanningLoop.
struct PlanningTask {
  uint64_t iteration = 0;  // the iteration planned from (the newest in the window)
  WindowSnapshot window;   // its estimate is computed in PlanStep
  // The iteration's own counts, for a policy that plans after the gate (Policy::PlansAfterGate)
  // and for the first plan when the window is still empty; may be null.
  std::shared_ptr<const ModelLoad> gate;
  std::shared_ptr<const Plan> current;  // the plan in force (may be null)
  // The plan the policy starts from and damping compares with, when not `current` (a job's
  // unpublished first plan, revised on a newer window); may be null.
  std::shared_ptr<const Plan> start;
  std::string policy;
  PlannerConfig planner;
  bool reshard_due = false;
  int reshard_period = 100;
  double damping = 0.02;
};

// The pure step: the estimate (the window's, or the gate's counts for a policy that plans after
// the gate or an empty window), then DecidePlan. Takes the task by value: the window snapshot is
// released as soon as the estimate is computed. NOT_FOUND for an unknown policy; INVALID_ARGUMENT
// when there is nothing to plan from or shapes disagree.
absl::StatusOr<PlanOutcome> PlanStep(const Cluster& cluster, const ModelSpec& model,
                                     PlanningTask task);

class PlanningLoop {
 public:
  // Plans get ids (epoch, 1), (epoch, 2), ...
  PlanningLoop(PlanningConfig config, uint64_t epoch);

  const PlanningConfig& config() const { return config_; }
  void set_policy(std::string policy) { config_.policy = std::move(policy); }
  uint64_t epoch() const { return epoch_; }

  // An iteration's counts enter the window (see LoadWindow::Push for `evicted` and `totals`).
  // INVALID_ARGUMENT (and no change) when the shape differs from earlier iterations'.
  absl::Status Observe(std::shared_ptr<const ModelLoad> load,
                       std::shared_ptr<const ModelLoad>* evicted = nullptr,
                       std::shared_ptr<const LayerTotals> totals = nullptr);
  absl::Status Observe(const ModelLoad& load);
  const LoadWindow& window() const { return window_; }

  // The task for planning from `iteration`. A re-shard is due once `reshard_period` iterations
  // have passed since the last one (or since the first plan); taking a task where it is due
  // consumes it.
  PlanningTask MakeTask(uint64_t iteration);

  // Publishes `plan`: id (epoch, next version), sharding version (the in-force one's, plus one
  // when some layer's owners changed; 1 for the first plan), `computed_from` and
  // `effective_iteration`. It becomes the plan in force.
  std::shared_ptr<const Plan> Commit(Plan plan, uint64_t computed_from,
                                     uint64_t effective_iteration);

  // A plan this loop published in an earlier epoch (restored after a restart) becomes the plan
  // in force; later versions go above it, in this loop's epoch. Restore in ascending versions.
  void Restore(std::shared_ptr<const Plan> plan);
  // Continues from a plan published elsewhere (the controller's, a checkpoint's): it becomes the
  // plan in force and later plans get (its epoch, its version + 1, + 2, ...).
  void Follow(std::shared_ptr<const Plan> plan);

  const std::shared_ptr<const Plan>& current() const { return current_; }

 private:
  PlanningConfig config_;
  uint64_t epoch_;
  uint64_t next_version_ = 1;
  LoadWindow window_;
  std::shared_ptr<const Plan> current_;
  uint64_t last_reshard_iteration_ = 0;
};

// A plan as the workers run it on one iteration's actual counts.
struct Judgement {
  // Calibrated layers (where calibration accepted), with the prediction on the actual counts
  // (the timing cost model's); migrations cleared (already paid).
  Plan plan;
  // Calibration's late gathers: time on the timing cost model (not hidden) and bytes.
  double late_seconds = 0;
  int64_t late_bytes = 0;
  int calibrated_layers = 0;
  int copies_gathered = 0;
  int copies_dropped = 0;
};

// Calibrates every layer of `plan` on `actual` as the workers do -- when the rule is enabled and
// the plan's policy calibrates (Policy::Calibrates), deciding with `decide` (the cost model the
// workers believe) -- then evaluates the result on `time` (the cluster timed; the same as
// `decide` outside the simulator). `actual` must have the plan's shape.
Judgement Judge(const Plan& plan, const ModelLoad& actual, const CalibrationRule& rule,
                const CostModel& decide, const CostModel& time);
// Only the calibration of Judge: `plan`'s layers calibrated in place; the late gathers timed on
// `time`. The prediction is left as it was.
Judgement CalibratePlan(Plan plan, const ModelLoad& actual, const CalibrationRule& rule,
                        const CostModel& decide, const CostModel& time);

// Max over mean of a layer's device tokens (1 when it computes nothing).
double MaxOverMean(const LayerPrediction& p);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_PLANNING_LOOP_H_
