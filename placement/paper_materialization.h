// The paper's sparse materialization (Alg. 1) and the balance-first seed the default policy's
// greedy may start from. Per layer: owners in, holders of every expert out. Never two copies of
// an expert on one device; budgets are never exceeded. Pure functions; thread-safe.
#ifndef HECATE_PLACEMENT_PAPER_MATERIALIZATION_H_
#define HECATE_PLACEMENT_PAPER_MATERIALIZATION_H_

#include <vector>

#include "placement/cluster.h"
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

// A balance-first starting point for the greedy (EPLB-like, for the load-aware dispatch): copy
// counts by water-filling load per copy over the free slots (only while an expert's load per copy
// exceeds the mean device load), then each copy on the node whose tokens per holder of the expert
// are highest, least-loaded device with a free slot there. Never exceeds `max_copies`, never two
// copies on one device. Starts from `base`'s holders.
LayerPlan BalancedSeed(const Cluster& cluster, const LayerPlan& base, const LoadAggregate& load,
                       const std::vector<int>& max_copies);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_PAPER_MATERIALIZATION_H_
