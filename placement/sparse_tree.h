// The transfers of the sparse collectives (DESIGN.md §6; docs/cost-model.md "Hierarchical spAG"),
// shared by the cost model and the workers' schedules so both describe the same bytes.
//
// For each expert with copies, the owner's chunk travels down a two-level tree:
//   phase 0: owner -> every other holder on the owner's node, and owner -> one relay on every other
//            node that holds the expert (its lowest device id);
//   phase 1: each relay -> the other holders on its node.
// SparseReduceScatter runs the same edges upwards: phase 1 (each relay sums its node's gradients),
// then phase 0 (the owner sums its children's). A cross-node link carries one chunk per node and
// expert, not one per holder; the bytes moved in all are still (holders - 1) chunks per expert.
// With every device on one node (or no cluster) the tree is the flat owner -> holder fan-out.
#ifndef HECATE_PLACEMENT_SPARSE_TREE_H_
#define HECATE_PLACEMENT_SPARSE_TREE_H_

#include <vector>

#include "placement/cluster.h"
#include "placement/plan.h"

namespace hecate::placement {

struct SparseEdge {
  ExpertId expert = 0;
  DeviceId from = 0;  // the parent: the owner (phase 0) or a relay (phase 1)
  DeviceId to = 0;
  int phase = 0;
};

// Appends the edges of expert e of `layer` (nothing when it has one holder). `cluster` null: one
// node. Edges come in ascending `to` order within each phase. Precondition: the holder list is
// ascending and contains the owner.
void AppendSparseEdges(const Cluster* cluster, const LayerPlan& layer, ExpertId e,
                       std::vector<SparseEdge>* out);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_SPARSE_TREE_H_
