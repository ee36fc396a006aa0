#include "placement/sharding.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace hecate::placement {

namespace {

int64_t OwnedExpertBytes(const LayerSpec& spec) {
  return 2 * spec.expert_param_bytes + spec.expert_optimizer_bytes;
}

}  // namespace

Owners OwnersOf(const Plan& plan) {
  Owners owners;
  for (const LayerPlan& l : plan.layers) owners.push_back(l.owner);
  return owners;
}

Owners EvenSharding(const Cluster& cluster, const ModelSpec& model) {
  const int devices = cluster.num_devices();
  Owners owners;
  int64_t experts_before = 0;
  for (const LayerSpec& layer : model.layers) {
    const int experts = layer.num_experts;
    const bool rotate = experts % devices != 0;
    const int offset = rotate ? static_cast<int>(experts_before % devices) : 0;
    std::vector<DeviceId> o(experts);
    for (ExpertId e = 0; e < experts; ++e) {
      if (experts >= devices) {
        o[e] = (static_cast<int>(int64_t{e} * devices / experts) + offset) % devices;
      } else {
        o[e] = (e + offset) % devices;
      }
    }
    owners.push_back(std::move(o));
    experts_before += experts;
  }
  return owners;
}

std::vector<int64_t> OwnedBytes(const Cluster& cluster, const ModelSpec& model,
                                const Owners& owners) {
  std::vector<int64_t> bytes(cluster.num_devices(), 0);
  for (LayerId l = 0; l < static_cast<int>(owners.size()); ++l) {
    for (DeviceId d : owners[l]) bytes[d] += OwnedExpertBytes(model.layers[l]);
  }
  return bytes;
}

int OverlapDegree(const Cluster& cluster, const ModelSpec& model, LayerId l,
                  double attention_forward_seconds) {
  const LayerSpec& spec = model.layers[l];
  const double t = attention_forward_seconds * cluster.overlap_bw() /
                   static_cast<double>(spec.expert_param_bytes);
  if (!(t > 0)) return 0;
  return static_cast<int>(std::min<double>(std::floor(t), spec.num_experts));
}

ShardingResult HeterogeneousSharding(const Cluster& cluster, const ModelSpec& model,
                                     const std::vector<std::vector<double>>& expert_loads,
                                     const std::vector<int>& overlap_degree, const Owners* current,
                                     SlotTieBreak tie_break) {
  const bool pack = tie_break == SlotTieBreak::kFewerFree;
  const int devices = cluster.num_devices();
  const int nodes = cluster.num_nodes();
  const int layers = model.num_layers();

  int64_t total_bytes = 0;
  for (const LayerSpec& spec : model.layers) {
    total_bytes += int64_t{spec.num_experts} * OwnedExpertBytes(spec);
  }
  const int64_t capacity = (total_bytes + devices - 1) / devices;
  std::vector<int64_t> free_bytes(devices, capacity);

  ShardingResult result;
  result.owners.resize(layers);
  for (LayerId l = 0; l < layers; ++l) result.owners[l].assign(model.layers[l].num_experts, -1);

  // Rank experts within each layer by predicted load (descending, then id).
  std::vector<std::vector<ExpertId>> by_load(layers);
  std::vector<double> hottest(layers, 0);
  for (LayerId l = 0; l < layers; ++l) {
    std::vector<ExpertId>& order = by_load[l];
    order.resize(model.layers[l].num_experts);
    std::iota(order.begin(), order.end(), 0);
    const std::vector<double>& load = expert_loads[l];
    std::stable_sort(order.begin(), order.end(),
                     [&](ExpertId a, ExpertId b) { return load[a] > load[b]; });
    hottest[l] = order.empty() ? 0 : load[order[0]];
  }
  std::vector<LayerId> layer_order(layers);
  std::iota(layer_order.begin(), layer_order.end(), 0);
  std::stable_sort(layer_order.begin(), layer_order.end(),
                   [&](LayerId a, LayerId b) { return hottest[a] > hottest[b]; });

  std::vector<double> device_load(devices);
  std::vector<double> node_load(nodes);
  auto current_owner = [&](LayerId l, ExpertId e) -> DeviceId {
    if (current == nullptr || l >= static_cast<int>(current->size()) ||
        e >= static_cast<int>((*current)[l].size())) {
      return -1;
    }
    return (*current)[l][e];
  };
  // Strict-weak "better" for two candidate devices: lower load, fewer free bytes (more, when
  // spreading), the current owner, lower id.
  auto better_device = [&](DeviceId a, DeviceId b, DeviceId sticky) {
    if (device_load[a] != device_load[b]) return device_load[a] < device_load[b];
    if (free_bytes[a] != free_bytes[b]) return pack == (free_bytes[a] < free_bytes[b]);
    if ((a == sticky) != (b == sticky)) return a == sticky;
    return a < b;
  };
  auto place = [&](LayerId l, ExpertId e, DeviceId d) {
    const int64_t bytes = OwnedExpertBytes(model.layers[l]);
    result.owners[l][e] = d;
    free_bytes[d] -= bytes;
    const double load = expert_loads[l][e];
    device_load[d] += load;
    node_load[cluster.node_of(d)] += load;
  };
  // Fallback when no device has room (only possible with unequal expert sizes): most free bytes.
  auto roomiest = [&]() {
    DeviceId best = 0;
    for (DeviceId d = 1; d < devices; ++d) {
      if (free_bytes[d] > free_bytes[best]) best = d;
    }
    return best;
  };

  // Phase 1: under-loaded experts, node first then device.
  for (LayerId l : layer_order) {
    std::fill(device_load.begin(), device_load.end(), 0.0);
    std::fill(node_load.begin(), node_load.end(), 0.0);
    const int t = std::min<int>(std::max(0, overlap_degree[l]), model.layers[l].num_experts);
    const int64_t bytes = OwnedExpertBytes(model.layers[l]);
    for (size_t i = t; i < by_load[l].size(); ++i) {
      const ExpertId e = by_load[l][i];
      const DeviceId sticky = current_owner(l, e);
      NodeId best_node = -1;
      double best_node_load = 0;
      int64_t best_node_free = 0;
      for (NodeId n = 0; n < nodes; ++n) {
        int64_t node_free = 0;
        bool fits = false;
        for (DeviceId d : cluster.devices_of(n)) {
          node_free += free_bytes[d];
          fits = fits || free_bytes[d] >= bytes;
        }
        if (!fits) continue;
        const double per_device = node_load[n] / cluster.devices_of(n).size();
        const bool sticky_here = sticky >= 0 && cluster.node_of(sticky) == n;
        bool take = best_node < 0;
        if (!take) {
          if (per_device != best_node_load) {
            take = per_device < best_node_load;
          } else if (node_free != best_node_free) {
            take = pack == (node_free < best_node_free);
          } else {
            take = sticky_here;  // equal: prefer the current owner's node
          }
        }
        if (take) {
          best_node = n;
          best_node_load = per_device;
          best_node_free = node_free;
        }
      }
      DeviceId best = -1;
      if (best_node >= 0) {
        for (DeviceId d : cluster.devices_of(best_node)) {
          if (free_bytes[d] < bytes) continue;
          if (best < 0 || better_device(d, best, sticky)) best = d;
        }
      }
      place(l, e, best >= 0 ? best : roomiest());
    }
  }

  // Phase 2: the top-t (overlappable) experts of each layer into the remaining capacity.
  for (LayerId l : layer_order) {
    // Rebuild this layer's device loads from phase 1.
    std::fill(device_load.begin(), device_load.end(), 0.0);
    std::fill(node_load.begin(), node_load.end(), 0.0);
    for (ExpertId e = 0; e < model.layers[l].num_experts; ++e) {
      const DeviceId d = result.owners[l][e];
      if (d >= 0) {
        device_load[d] += expert_loads[l][e];
        node_load[cluster.node_of(d)] += expert_loads[l][e];
      }
    }
    const int t = std::min<int>(std::max(0, overlap_degree[l]), model.layers[l].num_experts);
    const int64_t bytes = OwnedExpertBytes(model.layers[l]);
    for (int i = 0; i < t; ++i) {
      const ExpertId e = by_load[l][i];
      const DeviceId sticky = current_owner(l, e);
      DeviceId best = -1;
      for (DeviceId d = 0; d < devices; ++d) {
        if (free_bytes[d] < bytes) continue;
        if (best < 0) {
          best = d;
          continue;
        }
        // Least-loaded first; then MORE free room (these experts will be replicated anyway,
        // so spread the leftover capacity); then the current owner; then the lower id.
        if (device_load[d] != device_load[best]) {
          if (device_load[d] < device_load[best]) best = d;
        } else if (free_bytes[d] != free_bytes[best]) {
          if (free_bytes[d] > free_bytes[best]) best = d;
        } else if (d == sticky) {
          best = d;
        }
      }
      place(l, e, best >= 0 ? best : roomiest());
    }
  }
  result.owned_bytes = OwnedBytes(cluster, model, result.owners);
  if (current != nullptr) {
    result.migrations = Migrations(*current, result.owners, model);
    for (const Migration& m : result.migrations) result.migration_bytes += m.bytes;
  }
  return result;
}

}  // namespace hecate::placement
