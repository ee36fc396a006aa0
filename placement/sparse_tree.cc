#include "placement/sparse_tree.h"

namespace hecate::placement {

// Devices are numbered node by node (Cluster), so an ascending holder list visits each node's
// holders as one run: the first of a run on another node than the owner's is its relay.
void AppendSparseEdges(const Cluster* cluster, const LayerPlan& layer, ExpertId e,
                       std::vector<SparseEdge>* out) {
  const std::vector<DeviceId>& holders = layer.replicas[e];
  const DeviceId owner = layer.owner[e];
  if (holders.size() < 2) return;
  auto direct = [&](DeviceId h) { return cluster == nullptr || cluster->same_node(h, owner); };
  NodeId run = -1;
  for (DeviceId h : holders) {  // phase 0: the owner's node, and one relay per other node
    if (h == owner) continue;
    if (direct(h)) {
      out->push_back({e, owner, h, 0});
    } else if (cluster->node_of(h) != run) {
      run = cluster->node_of(h);
      out->push_back({e, owner, h, 0});
    }
  }
  run = -1;
  DeviceId relay = -1;
  for (DeviceId h : holders) {  // phase 1: each relay to the rest of its run
    if (h == owner || direct(h)) continue;
    if (cluster->node_of(h) != run) {
      run = cluster->node_of(h);
      relay = h;
    } else {
      out->push_back({e, relay, h, 1});
    }
  }
}

}  // namespace hecate::placement
