// Sparse materialization (paper Alg. 1) and its cost-model-driven variant, per layer; calibration.
//
// Input: a layer's owners (and, for calibration, its current holders), the predicted global load
// per expert, and per-device budgets. Output: the holders of every expert. Never two copies of an
// expert on one device; budgets are never exceeded. Pure functions.
#ifndef HECATE_PLACEMENT_MATERIALIZATION_H_
#define HECATE_PLACEMENT_MATERIALIZATION_H_

#include <cstdint>
#include <vector>

#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

// Alg. 1 as the paper writes it, with DESIGN.md's definitions of what it leaves open:
//   t <- min(t, E), m <- min(m, t);
//   t <= m: replicate the top-t experts on every device;
//   else:   |D| * m slots, apportioned to the top-t experts by water-filling (next slot to the
//           highest load / copies, at most |D| copies); each copy placed on a node without a copy
//           first, then the device with the lowest predicted load, then the most free slots,
//           then the lower id.
// `base` supplies the owners (its replicas are ignored). `m` is the per-device slot count (the
// minimum over devices of what fits), `t` the overlap degree.
LayerPlan MaterializePaper(const Cluster& cluster, const LayerPlan& base,
                           const std::vector<double>& expert_loads, int t, int m);

// Budgets for the greedy variant.
struct GreedyBudget {
  // Extra (non-owned) copies each device may hold in this layer (memory).
  std::vector<int> max_copies;
  // Attention forward time the sparse collectives hide behind, seconds; < 0: the cost model's.
  double attention_forward_seconds = -1;
  // Warm start: `base` holds last iteration's copies, which the greedy may also drop. Among the
  // least useful copies (smallest share of their holder's compute), it first drops every one whose
  // removal costs less than `keep_gain` x the layer's objective (0: only copies that no longer
  // pay), adds as usual, then tries up to `max_swaps` swaps (drop the least useful copy, take the
  // best move) while a swap gains more than `swap_gain` x the objective. Off: `base`'s copies are
  // kept and only added to (calibration).
  bool revise = false;
  double keep_gain = 0;
  int max_swaps = 8;
  double swap_gain = 1e-3;
};

// The default policy's materialization, cost-model driven. Repeatedly relieve the slowest device:
// among the experts it holds (largest share first), add one copy on the most promising receiver
// (the least-loaded feasible device overall, on the owner's node, or on a node without a copy)
// when that lowers the predicted layer time
//     3 * max_d(tokens_d * flops_per_token / flops_d) + exposed spAG/spRS time.
// Device tokens are estimated the way the load-aware dispatcher routes them: a node holding the
// expert splits its own tokens over its holders; nodes without a copy split theirs over all
// holders. spAG uses the cost model's links; it hides behind attention up to its length
// (re-gathered layers pay it twice in backward). Moves that keep the maximum but unload a maximal
// device without exposing more traffic are taken too (plateaus). Never exceeds `max_copies`,
// never two copies on one device. Starts from `base`'s holders (so calibration can extend a
// materialized layer); `base.remat` selects the exposure rule. `added` (optional) receives the
// number of copies added.
LayerPlan MaterializeGreedy(const CostModel& cost, LayerId l, const LayerPlan& base,
                            const LoadMatrix& load, const GreedyBudget& budget,
                            int* added = nullptr, const LoadAggregate* aggregate = nullptr);

// A balance-first starting point for the greedy (EPLB-like, for the load-aware dispatch): copy
// counts by water-filling load per copy over the free slots (only while an expert's load per copy
// exceeds the mean device load), then each copy on the node whose tokens per holder of the expert
// are highest, least-loaded device with a free slot there. Never exceeds `max_copies`, never two
// copies on one device. Starts from `base`'s holders.
LayerPlan BalancedSeed(const Cluster& cluster, const LayerPlan& base, const LoadAggregate& load,
                       const std::vector<int>& max_copies);

// The exact bottleneck repair run after the greedy (docs/placement.md "Exact repair"). The greedy
// estimates each holder's tokens by an even split inside its node; the dispatcher water-fills, so
// the greedy's plan can leave moves it does not see. Up to `moves` times: evaluate the layer with
// the real dispatch (CostModel::EvaluateLayer on `load`), take the busiest device (ties: lowest
// id), and for its two experts with the most tokens per holder (`aggregate`'s totals) try a copy
// on each of the `candidates` least-loaded devices
// without one (ties: lower id) -- added to a free slot, or swapped for one of that device's
// copies when its slots are full; keep the move with the lowest (busiest device's tokens, layer
// time) among those that do not raise the layer time and lower one of the two. Stops when none
// does. Never exceeds `max_copies`, never two copies on one device, never drops an owner. Returns
// the number of moves made.
int RepairLayer(const CostModel& cost, LayerId l, const LoadMatrix& load,
                const LoadAggregate& aggregate, DispatchRule rule,
                const std::vector<int>& max_copies, int moves, int candidates, LayerPlan* layer);

// The balance pass run after the exact repair when a balance target is set (docs/placement.md
// "Balance bound"). The repair and the greedy minimise predicted time, which on a cluster whose
// node NICs bound the All-to-All leaves the hottest experts' holders above the mean: balancing them
// needs copies that move tokens across NICs. Up to `moves` times, while some device's tokens exceed
// target x mean (on `load`, with the real dispatch): from the busiest such device of each node (at
// most 4, busiest first), try a copy of each of its two experts with the most tokens per holder on
// the `candidates` first of the devices without one -- on its node (into a free slot or swapped for
// a copy there, one of its two least useful: fewest tokens per holder), or with a free slot
// anywhere; its node's first, then least loaded -- and exchanges of those two experts' copies with
// the two least useful copies of each other device of its node. Take the move that removes the most
// excess tokens (those above target x mean) among moves not slower than the layer now, else the
// most per second added; never one whose layer time exceeds (1 + `budget`) x its time before the
// pass. Stops when no device is over, no move removes excess within that, or `max_evaluations`
// layer evaluations are
// spent (> 0; the candidates are tried in the order above, so a small budget tries the busiest
// device's own node first). Never exceeds `max_copies`, never two copies on one device, never
// drops an owner. Returns the number of moves made.
int BalanceLayer(const CostModel& cost, LayerId l, const LoadMatrix& load,
                 const LoadAggregate& aggregate, DispatchRule rule,
                 const std::vector<int>& max_copies, double target, double budget, int moves,
                 int candidates, int64_t max_evaluations, LayerPlan* layer);

// The swap stage's defaults: 128 layer evaluations at paper scale (32 devices x 64 experts);
// none at DeepSeek-V3 scale (256 x 256: 4), where fewer than kMinCalibrationEvaluations remain.
inline constexpr int64_t kCalibrationCellBudget = int64_t{128} * 32 * 64;
inline constexpr int64_t kMinCalibrationEvaluations = 8;

struct CalibrationOptions {
  // The swap stage: while the layer is over `target` x mean device tokens on the actual counts, a
  // copy of one of the busiest device's experts replaces the least useful copy (fewest tokens
  // per holder) of a light device -- its slot reused, the new copy gathered after the gate --
  // whenever that takes tokens off the devices over the target and the layer, late gather
  // included, is not slower than before calibration. It may spend `swap_cell_budget` device x
  // expert cells (one layer evaluation costs devices x experts); fewer than
  // kMinCalibrationEvaluations evaluations: no swap stage. 0: none (the paper's calibration,
  // copies into free memory only).
  int64_t swap_cell_budget = kCalibrationCellBudget;
  double target = 1.06;
  // Receivers tried per expert: the least loaded devices of the busy device's node, then as
  // many on other nodes.
  int candidates = 2;
};

struct CalibrationResult {
  bool accepted = false;
  LayerPlan layer;  // the calibrated layer when accepted, else the input layer
  // Predicted layer time on the actual counts, current holders (0 when there was nothing to try:
  // no free memory and no swap budget).
  double before_seconds = 0;
  double after_seconds = 0;       // predicted layer time with the extra copies, their spAG included
  double extra_spag_seconds = 0;  // the extra, unhidden spAG on the critical path
  int64_t extra_spag_bytes = 0;   // and its bytes
  int copies_added = 0;           // copies gathered after the gate (swaps included)
  int copies_dropped = 0;         // planned copies given up for them
  int64_t evaluations = 0;
};

// The copies `calibrated` holds that `planned` does not, as a layer plan of its own (owners plus
// those copies): what calibration gathers after the gate.
LayerPlan LateCopies(const LayerPlan& planned, const LayerPlan& calibrated);

// Calibration (paper §4.2): after the gate, re-run materialization on this iteration's actual
// counts with the memory that remains (`remaining_copies[d]` extra copies per device), then the
// swap stage (`options`); accept only when predicted layer time + the extra, unhidden spAG time
// is lower than without it (docs/placement.md "Calibration"). Never exceeds the plan's copies +
// `remaining_copies` on a device, never two copies on one device, never drops an owner.
// Deterministic: every rank computes the same answer from the same all-gathered counts.
CalibrationResult Calibrate(const CostModel& cost, LayerId l, const LayerPlan& current,
                            const LoadMatrix& actual, const std::vector<int>& remaining_copies,
                            DispatchRule rule, const CalibrationOptions& options = {});

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_MATERIALIZATION_H_
