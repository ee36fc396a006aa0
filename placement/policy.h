// Placement policies behind one interface, selectable by name:
//
//   hecate        default: FSSDP, cost-model-driven greedy materialization within overlap and
//                 memory budgets, load-aware dispatch, re-materialization chosen per layer when
//                 memory binds (DESIGN.md §5)
//   hecate-paper  FSSDP, the paper's Alg. 1 with t and m, even dispatch, replicas kept
//   hecate-rm     FSSDP like `hecate`, every layer re-gathered before backward (Hecate-RM)
//   ep            static expert parallelism: even sharding, no copies
//   fastermoe     shadowing: hot experts broadcast to every device by its greedy cost rule
//   flexmoe       persistent replicas with optimizer state, expanded/shrunk when imbalance passes
//                 a threshold
//   smartmoe      periodic placement swap (no replication) every N iterations
//   eplb          DeepSeek EPLB: replicate by load per replica, balanced packing; stateless,
//                 every N iterations
//
// A policy is a pure function of its PlanRequest: stateful baselines read their state from the
// previous plan. Policies are immutable and thread-safe.
#ifndef HECATE_PLACEMENT_POLICY_H_
#define HECATE_PLACEMENT_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/load.h"
#include "placement/plan.h"
#include "placement/sharding.h"

namespace hecate::placement {

struct PlannerConfig {
  // Split rule for FSSDP policies other than hecate-paper (which always splits evenly).
  DispatchRule dispatch_rule = DispatchRule::kLoadAware;
  // Cap on extra copies per device per layer (equal-memory comparisons); -1: memory decides.
  int extra_slots = -1;
  // `hecate`: start each layer's greedy from the previous plan's copies (when the layer's owners
  // are unchanged) and revise them, instead of starting from owners only. Steady-state planning
  // then costs a few moves per layer instead of every copy.
  bool warm_start = true;
  // Warm start: each layer, once every `revise_period` iterations (layer l when iteration %
  // period == l % period), drops the copies whose removal costs less than `revise_gain` x its
  // predicted time, and the greedy regrows what pays. This escapes the greedy's local optima (a
  // lower predicted time than a cold start; docs/placement.md) at the cost of more moves.
  int revise_period = 4;
  double revise_gain = 1e-2;
  // Warm start: a layer whose expert token shares moved by less than this (L1 distance of the
  // per-expert shares, 0-2) since it was last planned keeps its copies and its prediction and is
  // not aggregated or re-evaluated; until it settles (a revision on its turn gains less than
  // revise_gain) it still gets a warm pass every iteration, kept only when faster. 0: every layer
  // is re-planned every iteration. docs/placement.md has the measurements.
  double replan_threshold = 0.02;
  // `hecate`: the exact repair after the greedy (RepairLayer, docs/placement.md): at most
  // `repair_moves` moves per planned layer and plan, each trying `repair_candidates` receivers per
  // expert of the busiest device. The warm start keeps what earlier plans repaired, so one move a
  // plan converges over a few iterations. 0 moves: off. Each evaluation costs O(devices), so on a
  // cluster where moves x candidates x devices exceeds `repair_device_budget` both are scaled down
  // by the same factor (RepairEffort; 0: no cap).
  int repair_moves = 4;
  int repair_candidates = 16;
  int64_t repair_device_budget = int64_t{4} * 16 * 256;
  // `hecate`: the balance bound (BalanceLayer, docs/placement.md "Balance bound"). After the exact
  // repair, while a planned layer's predicted max/mean device tokens exceeds `balance_target`, up
  // to `balance_moves` moves (each trying `balance_candidates` receivers per expert) trade
  // predicted time for balance, the layer staying within
  // (1 + `balance_budget`) x its time before the pass. Plans are then ranked by how far their
  // layers are over the target before their time (warm revisions, settling, and DecidePlan, which
  // publishes a better balanced plan that costs at most `balance_budget`). The target applies to
  // the estimate; the next iteration's counts differ by the routing noise, so the default leaves a
  // margin below 1.10 (docs/placement.md has the measurements). 0: off (time alone).
  double balance_target = 1.08;
  double balance_budget = 0.04;
  int balance_moves = 16;
  int balance_candidates = 16;
  // Evaluations: a layer evaluation costs O(devices x experts) (~1.5 ns a cell here); a plan may
  // spend `balance_cell_budget` cells on the pass, split evenly over the layers: 1,024 evaluations
  // a layer at paper scale (12 x 64 on 32 devices), 6 at DeepSeek-V3 scale, 1.6 at 1,024 x 58 x
  // 256; a layer whose share buys fewer than 8 gets no pass (so the pass stays off at those
  // scales, where the controller re-plans every layer every second). 0: no cap.
  int64_t balance_cell_budget = int64_t{12} * 32 * 64 * 1024;
  // Attention forward time per block, seconds; < 0: the model spec's.
  double attention_forward_seconds = -1;
  // Whether `hecate` may re-gather layers to fit more copies.
  bool allow_remat = true;
  // The baselines run under their own rules (docs/placement.md "Baselines", with the source of
  // each): their dispatch rule, their cadence or trigger (DecidePlan publishes whatever they
  // decide, no gain gate), their memory as configured.
  // SmartMoE re-places every this many iterations (its artifact's runs: DYNAMIC_FREQ=10).
  int smartmoe_period = 10;
  // EPLB re-balances every this many iterations: vLLM's step_interval default (DeepSeek
  // re-balances about every 10 minutes). In a simulated run of tens of iterations it plans once,
  // from the first window; //bench:paper also runs it every 10 iterations and keeps the faster.
  int eplb_period = 3000;
  // EPLB's redundant experts per layer (vLLM's num_redundant_experts, whose default 0 is plain
  // EP); -1: one per device, as DeepSeek-V3 deployed it (32 redundant experts on EP32). The
  // physical slots are rounded up to a multiple of the devices (EPLB needs equal slots per GPU)
  // and capped by memory and extra_slots.
  int eplb_redundant_experts = -1;
  // FlexMoE re-arranges when max/mean device load exceeds this.
  double flexmoe_threshold = 1.1;
  // FlexMoE's expand/shrink operations per trigger; <= 0: one per device.
  int flexmoe_max_changes = 0;
};

struct PlanRequest {
  const Cluster* cluster = nullptr;
  const ModelSpec* model = nullptr;
  // Predicted [source device x expert] tokens per layer (window estimate, or actual counts).
  const ModelLoad* load = nullptr;
  // The plan in force (its owners and, for stateful baselines, its copies); may be null.
  const Plan* previous = nullptr;
  // Sharding to use for FSSDP policies; null: the previous plan's owners, else even sharding.
  const Owners* owners = nullptr;
  uint64_t iteration = 0;
  PlannerConfig config;
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;
  virtual ReplicaSemantics semantics() const = 0;
  // Builds the plan's layers, dispatch rule, migrations and prediction. Fields the controller
  // owns (job, id, iterations, sharding version) are left for it to set.
  // Precondition: CheckRequest(request).ok().
  virtual Plan Compute(const PlanRequest& request) const = 0;
  // Whether the policy works toward PlannerConfig::balance_target (`hecate`, `hecate-rm`); only
  // then does DecidePlan publish a plan for balance alone.
  virtual bool BoundsBalance() const { return false; }
  // Whether workers calibrate the policy's plans on each iteration's actual counts (Calibrate,
  // with swaps: `hecate`, `hecate-rm`). The baselines' plans run as published; `hecate-paper` is
  // Alg. 1 as written.
  virtual bool Calibrates() const { return false; }
  // Whether the policy decides after the gate, on the iteration's actual counts, rather than
  // from the window's estimate (FasterMoE's shadowing).
  virtual bool PlansAfterGate() const { return false; }
  // Whether the policy keeps its own cadence or trigger (the baselines): DecidePlan publishes
  // every plan that differs from the one in force, without Hecate's gain gate or re-shard.
  virtual bool SchedulesItself() const { return false; }
};

// Policy `name` calibrates (false for unknown names).
bool PolicyCalibrates(std::string_view name);

// INVALID_ARGUMENT when the request's pointers are null or shapes disagree.
absl::Status CheckRequest(const PlanRequest& request);

// NOT_FOUND (listing the known names) for an unknown policy.
absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(std::string_view name);

// The exact repair's (moves, candidates) on a cluster of `devices`: the configured ones while
// moves x candidates x devices <= repair_device_budget; beyond it both scaled by
// sqrt(budget / (moves x candidates x devices)), rounded down, at least 1 each (moves 0 stays 0).
// With the defaults: 4 x 16 up to 256 devices, 2 x 8 at 1,024, 1 x 4 at 4,096.
std::pair<int, int> RepairEffort(const PlannerConfig& config, int devices);
std::vector<std::string> PolicyNames();

// How far a layer's predicted max/mean device tokens is over `target`: max(0, max/mean - target);
// 0 when target <= 0 (no bound) or the layer computes nothing.
double BalanceOverage(const LayerPrediction& p, double target);
// The sum of BalanceOverage over a plan's layers.
double BalanceOverage(const Prediction& p, double target);

// Extra copies each device may hold per layer under `owners` ([device]), given its memory budget:
//   ephemeral keep:     free / (sum_l param_bytes_l + max_l param_bytes_l)
//   ephemeral regather: free / ((kPrefetchLayers + 2) * max_l param_bytes_l)
//   persistent:         free / sum_l (2 * param_bytes_l + optimizer_bytes_l)
// where free = memory - owned bytes; capped at `cap` when cap >= 0.
std::vector<int> CopyBudget(const Cluster& cluster, const ModelSpec& model, const Owners& owners,
                            ReplicaSemantics semantics, RematMode mode, int cap);

// Re-materialization planning: given layers whose copies were sized for re-gathering, choose per
// layer whether copies stay resident (kKeep) or are re-gathered (kRegather) so that every
// device's peak memory fits, keeping as many layers resident as possible, those whose re-gather
// would expose the most time first. Mutates the layers' remat fields.
void PlanRemat(const CostModel& cost, std::vector<LayerPlan>* layers);

// Global per-expert loads (column sums) of every layer, as doubles.
std::vector<std::vector<double>> ExpertLoads(const ModelLoad& load);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_POLICY_H_
