// The default policy's materialization: a cost-model-driven greedy over one layer, and its warm
// start (revise a previous plan's copies instead of starting from the owners). Pure functions;
// thread-safe.
#ifndef HECATE_PLACEMENT_GREEDY_H_
#define HECATE_PLACEMENT_GREEDY_H_

#include <vector>

#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

// Budgets for the greedy variant.
struct GreedyBudget {
  // Extra (non-owned) copies each device may hold in this layer (memory).
  std::vector<int> max_copies;
  // Attention forward time the sparse collectives hide behind, seconds; < 0: the cost model's.
  double attention_forward_seconds = -1;
  // Whether the layer's compute and All-to-Alls hide them too (the workers' schedule: the lane
  // runs beside the whole forward and backward cycle); false: the attention window alone
  // (calibration's late gather, which follows the gate).
  bool hide_behind_compute = true;
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

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_GREEDY_H_
