// Sharding: which device owns each expert's parameters and optimizer state (DESIGN.md §5).
//
// EvenSharding is the homogeneous start (and static EP's placement). HeterogeneousSharding is the
// paper's Alg. 2 over all layers at once with byte-weighted slots: every device gets the same
// capacity in owned bytes (parameters + gradient + optimizer state), layers may differ in how
// many experts a device owns. Pure functions.
#ifndef HECATE_PLACEMENT_SHARDING_H_
#define HECATE_PLACEMENT_SHARDING_H_

#include <cstdint>
#include <vector>

#include "placement/cluster.h"
#include "placement/plan.h"

namespace hecate::placement {

// owners[layer][expert] -> device.
using Owners = std::vector<std::vector<DeviceId>>;

// The owners of every layer of `plan`.
Owners OwnersOf(const Plan& plan);

// Contiguous blocks per layer (expert e -> floor(e * D / E)); when a layer has fewer experts than
// there are devices (or they do not divide), blocks rotate by the experts of earlier layers so
// every device owns about the same number of experts overall.
Owners EvenSharding(const Cluster& cluster, const ModelSpec& model);

struct ShardingResult {
  Owners owners;
  std::vector<Migration> migrations;  // relative to `current` (empty when none was given)
  int64_t migration_bytes = 0;
  // Owned bytes per device (parameters + gradient + optimizer state).
  std::vector<int64_t> owned_bytes;
};

// Which way Alg. 2 breaks a tie between equally loaded nodes or devices: the paper's rule packs the
// one with fewer free slots (keeping freer devices for later layers); the other spreads, toward
// more free slots. When many experts carry no load (every tie), packing can fill one device early,
// and the last layers then have their hot experts forced together; DecidePlan tries both and
// keeps the faster prediction.
enum class SlotTieBreak { kFewerFree, kMoreFree };

// Alg. 2. `expert_loads[l][e]` is the predicted global load; `overlap_degree[l]` is t for layer l
// (its top-t experts are "overlappable" and placed last). Ties prefer the expert's current owner
// (`current`, may be null) to keep migration small.
//
//   1. slots: capacity per device = ceil(total owned bytes / D) (equal-size experts: ceil(N/D)
//      experts);
//   2. under-loaded experts of every layer, layers by their hottest expert (descending), experts
//      by load (descending): least-loaded node (per-layer load placed so far, per device of the
//      node), then its least-loaded device; ties toward fewer free slots (`tie_break`), then the
//      current owner, then the lower id;
//   3. the top-t experts of each layer into the remaining capacity, least-loaded device first.
ShardingResult HeterogeneousSharding(const Cluster& cluster, const ModelSpec& model,
                                     const std::vector<std::vector<double>>& expert_loads,
                                     const std::vector<int>& overlap_degree, const Owners* current,
                                     SlotTieBreak tie_break = SlotTieBreak::kFewerFree);

// Owned bytes per device under `owners`.
std::vector<int64_t> OwnedBytes(const Cluster& cluster, const ModelSpec& model,
                                const Owners& owners);

// The paper's overlap degree for layer l: t = floor(T_attn * bw / expert_param_bytes), capped at
// the layer's expert count (bw = Cluster::overlap_bw()).
int OverlapDegree(const Cluster& cluster, const ModelSpec& model, LayerId l,
                  double attention_forward_seconds);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_SHARDING_H_
