#include "placement/paper_materialization.h"

#include <algorithm>
#include <numeric>
#include <utility>

namespace hecate::placement {

namespace {

std::vector<ExpertId> ByLoadDescending(const std::vector<double>& loads) {
  std::vector<ExpertId> order(loads.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](ExpertId a, ExpertId b) { return loads[a] > loads[b]; });
  return order;
}

LayerPlan OwnersOnly(const LayerPlan& base) {
  LayerPlan out;
  out.owner = base.owner;
  out.remat = base.remat;
  out.replicas.resize(base.owner.size());
  for (size_t e = 0; e < base.owner.size(); ++e) out.replicas[e] = {base.owner[e]};
  return out;
}

}  // namespace

LayerPlan MaterializePaper(const Cluster& cluster, const LayerPlan& base,
                           const std::vector<double>& expert_loads, int t, int m) {
  const int devices = cluster.num_devices();
  const int experts = base.num_experts();
  LayerPlan out = OwnersOnly(base);
  t = std::min(t, experts);
  m = std::min(m, t);
  if (t <= 0) return out;
  const std::vector<ExpertId> order = ByLoadDescending(expert_loads);

  if (t <= m) {
    // Case 1: memory covers the overlap budget; the top-t experts go to every device.
    for (int i = 0; i < t; ++i) {
      std::vector<DeviceId>& r = out.replicas[order[i]];
      r.resize(devices);
      std::iota(r.begin(), r.end(), 0);
    }
    return out;
  }
  if (m <= 0) return out;

  // Case 2: |D| * m slots apportioned by water-filling on load per copy.
  std::vector<int> copies(experts, 1);
  int64_t slots = int64_t{devices} * m;
  while (slots > 0) {
    int best = -1;
    double best_ratio = 0;
    for (int i = 0; i < t; ++i) {
      const ExpertId e = order[i];
      if (copies[e] >= devices) continue;
      const double ratio = expert_loads[e] / copies[e];
      if (ratio > best_ratio) {
        best = e;
        best_ratio = ratio;
      }
    }
    if (best < 0) break;
    ++copies[best];
    --slots;
  }

  // Place the copies: nodes without a copy first, then lowest predicted load, then most free
  // slots, then lower id.
  std::vector<double> device_load(devices, 0.0);
  for (ExpertId e = 0; e < experts; ++e) device_load[base.owner[e]] += expert_loads[e] / copies[e];
  std::vector<int> used(devices, 0);
  std::vector<char> node_has(cluster.num_nodes(), 0);
  for (int i = 0; i < t; ++i) {
    const ExpertId e = order[i];
    std::vector<DeviceId>& holders = out.replicas[e];
    const double per_copy = expert_loads[e] / copies[e];
    std::fill(node_has.begin(), node_has.end(), 0);
    node_has[cluster.node_of(base.owner[e])] = 1;
    for (int c = 1; c < copies[e]; ++c) {
      DeviceId best = -1;
      for (DeviceId d = 0; d < devices; ++d) {
        if (used[d] >= m || std::binary_search(holders.begin(), holders.end(), d)) continue;
        if (best < 0) {
          best = d;
          continue;
        }
        const bool new_node_d = !node_has[cluster.node_of(d)];
        const bool new_node_b = !node_has[cluster.node_of(best)];
        if (new_node_d != new_node_b) {
          if (new_node_d) best = d;
        } else if (device_load[d] != device_load[best]) {
          if (device_load[d] < device_load[best]) best = d;
        } else if (used[d] != used[best]) {
          if (used[d] < used[best]) best = d;
        }
      }
      if (best < 0) break;
      out.AddHolder(e, best);
      node_has[cluster.node_of(best)] = 1;
      device_load[best] += per_copy;
      ++used[best];
    }
  }
  return out;
}

LayerPlan BalancedSeed(const Cluster& cluster, const LayerPlan& base, const LoadAggregate& load,
                       const std::vector<int>& max_copies) {
  LayerPlan out = base;
  const int devices = cluster.num_devices();
  const int nodes = cluster.num_nodes();
  const int experts = base.num_experts();
  std::vector<int> left(devices, 0);
  int64_t slots = 0;
  const std::vector<int> used = base.ExtraCopies(devices);
  for (DeviceId d = 0; d < devices; ++d) {
    left[d] = std::max(0, (d < static_cast<int>(max_copies.size()) ? max_copies[d] : 0) - used[d]);
    slots += left[d];
  }
  double total = 0;
  for (ExpertId e = 0; e < experts; ++e) total += static_cast<double>(load.expert_total[e]);
  const double mean = total / devices;
  // Copy counts: the highest load per copy gets the next slot (ties: lower expert id).
  std::vector<int> copies(experts);
  std::vector<std::pair<double, ExpertId>> heap;
  for (ExpertId e = 0; e < experts; ++e) {
    copies[e] = static_cast<int>(out.replicas[e].size());
    heap.push_back({static_cast<double>(load.expert_total[e]) / copies[e], -e});
  }
  std::make_heap(heap.begin(), heap.end());
  std::vector<int> target = copies;
  while (slots > 0 && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    auto [per_copy, neg_e] = heap.back();
    heap.pop_back();
    const ExpertId e = -neg_e;
    if (per_copy <= mean) break;
    if (target[e] >= devices) continue;
    ++target[e];
    --slots;
    heap.push_back({static_cast<double>(load.expert_total[e]) / target[e], neg_e});
    std::push_heap(heap.begin(), heap.end());
  }
  // Placement, heaviest copies first.
  std::vector<double> device_load(devices, 0.0);
  for (ExpertId e = 0; e < experts; ++e) {
    for (DeviceId h : out.replicas[e]) {
      device_load[h] += static_cast<double>(load.expert_total[e]) / target[e];
    }
  }
  std::vector<ExpertId> order;
  for (ExpertId e = 0; e < experts; ++e) {
    if (target[e] > copies[e]) order.push_back(e);
  }
  std::stable_sort(order.begin(), order.end(), [&](ExpertId a, ExpertId b) {
    return load.expert_total[a] * static_cast<double>(target[b]) >
           load.expert_total[b] * static_cast<double>(target[a]);
  });
  // Per node, the device a copy of `e` would go to there: the least loaded one with a slot left
  // that does not hold `e` (ties: lower id). A copy changes only its own node's pick.
  std::vector<int> node_holders(nodes);
  std::vector<DeviceId> pick(nodes);
  std::vector<char> holds(devices, 0);
  auto pick_in = [&](NodeId n) {
    DeviceId p = -1;
    for (DeviceId d : cluster.devices_of(n)) {
      if (left[d] <= 0 || holds[d]) continue;
      if (p < 0 || device_load[d] < device_load[p]) p = d;
    }
    return p;
  };
  for (ExpertId e : order) {
    const double per = static_cast<double>(load.expert_total[e]) / target[e];
    std::fill(node_holders.begin(), node_holders.end(), 0);
    for (DeviceId h : out.replicas[e]) {
      ++node_holders[cluster.node_of(h)];
      holds[h] = 1;
    }
    for (NodeId n = 0; n < nodes; ++n) pick[n] = pick_in(n);
    for (int c = copies[e]; c < target[e]; ++c) {
      DeviceId best = -1;
      double best_node_score = -1;
      for (NodeId n = 0; n < nodes; ++n) {
        // The node's own tokens per holder if it got one more (nodes without a holder first).
        if (pick[n] < 0) continue;
        const double score = static_cast<double>(load.mass(n, e) + 1) / (node_holders[n] + 1);
        if (best < 0 || score > best_node_score ||
            (score == best_node_score && device_load[pick[n]] < device_load[best])) {
          best = pick[n];
          best_node_score = score;
        }
      }
      if (best < 0) break;
      out.AddHolder(e, best);
      const NodeId n = cluster.node_of(best);
      ++node_holders[n];
      holds[best] = 1;
      --left[best];
      device_load[best] += per;
      pick[n] = pick_in(n);
    }
    for (DeviceId h : out.replicas[e]) holds[h] = 0;
  }
  return out;
}

}  // namespace hecate::placement
