// Refinements of a materialized layer, each a configuration of the local-search engine
// (placement/local_search.h) judged with the real dispatch: the exact repair of the greedy's
// bottleneck, and the balance pass toward PlannerConfig::balance_target. Pure functions;
// thread-safe.
#ifndef HECATE_PLACEMENT_REFINE_H_
#define HECATE_PLACEMENT_REFINE_H_

#include <cstdint>
#include <vector>

#include "placement/cost_model.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

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

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_REFINE_H_
