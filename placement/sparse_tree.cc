#include "placement/sparse_tree.h"

namespace hecate::placement {

void AppendSparseEdges(const Cluster* cluster, const LayerPlan& layer, ExpertId e,
                       std::vector<SparseEdge>* out) {
  const std::vector<DeviceId>& holders = layer.replicas[e];
  const DeviceId owner = layer.owner[e];
  if (holders.size() < 2) return;
  const size_t first = out->size();
  for (DeviceId h : holders) {
    if (h == owner) continue;
    if (cluster == nullptr || cluster->same_node(h, owner)) {
      out->push_back({e, owner, h, 0});
      continue;
    }
    // The relay of h's node: its lowest holder (holders ascend, so the first one seen there).
    DeviceId relay = h;
    for (DeviceId x : holders) {
      if (x != owner && cluster->same_node(x, h)) {
        relay = x;
        break;
      }
    }
    if (relay == h) {
      out->push_back({e, owner, h, 0});
    } else {
      out->push_back({e, relay, h, 1});
    }
  }
  // Phase 0 edges first, then phase 1, each in ascending `to` (stable).
  std::vector<SparseEdge> phase1;
  size_t keep = first;
  for (size_t i = first; i < out->size(); ++i) {
    if ((*out)[i].phase == 0) {
      (*out)[keep++] = (*out)[i];
    } else {
      phase1.push_back((*out)[i]);
    }
  }
  out->resize(keep);
  out->insert(out->end(), phase1.begin(), phase1.end());
}

}  // namespace hecate::placement
