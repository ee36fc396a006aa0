#include "placement/refine.h"

#include <algorithm>

#include "placement/local_search.h"

namespace hecate::placement {

namespace {

// Experts of a busy device a move tries (the heaviest per holder): two keep the balance table's
// quality at half the evaluations of all of them (docs/placement.md "Exact repair").
constexpr size_t kHeavyExperts = 2;
// Overloaded devices a balance move starts from: the busiest one of each node, at most this many
// (busiest first).
constexpr size_t kBalanceSources = 4;
// Copies of a full receiver a balance move may swap out: its least useful ones.
constexpr size_t kBalanceSwaps = 2;

}  // namespace

int RepairLayer(const CostModel& cost, LayerId l, const LoadMatrix& load,
                const LoadAggregate& aggregate, DispatchRule rule,
                const std::vector<int>& max_copies, int moves, int candidates, LayerPlan* layer) {
  if (moves <= 0) return 0;
  const int devices = cost.cluster().num_devices();
  LayerSearch search(cost, l, load, aggregate, rule, max_copies, layer);
  std::vector<DeviceId> order;
  std::vector<std::pair<double, ExpertId>> heavy;
  // Candidates: the busiest device's heaviest experts, each on the least loaded devices without
  // it -- into a free slot, or in place of each of their copies (ascending expert id).
  auto generate = [&](const LayerPrediction& now, LayerSearch::TryMove try_move) {
    const DeviceId busiest =
        static_cast<DeviceId>(std::max_element(now.device_tokens.begin(), now.device_tokens.end()) -
                              now.device_tokens.begin());
    search.HeaviestPerHolder(busiest, kHeavyExperts, &heavy);
    for (const auto& [per_holder, e] : heavy) {
      order.clear();
      for (DeviceId d = 0; d < devices; ++d) {
        if (!search.Holds(e, d)) order.push_back(d);
      }
      const size_t k = std::min<size_t>(order.size(), static_cast<size_t>(candidates));
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](DeviceId a, DeviceId b) {
        return now.device_tokens[a] != now.device_tokens[b]
                   ? now.device_tokens[a] < now.device_tokens[b]
                   : a < b;
      });
      for (size_t i = 0; i < k; ++i) {
        const DeviceId d = order[i];
        if (search.HasFreeSlot(d)) {
          if (!try_move(Move{e, d})) return;
          continue;
        }
        for (ExpertId x = 0; x < layer->num_experts(); ++x) {
          if (x == e || layer->owner[x] == d || !search.Holds(x, d)) continue;
          if (!try_move(Move{e, d, x})) return;
        }
      }
    }
  };
  // Never slower than the layer now, and strictly lower in (busiest device's tokens, time); the
  // lowest of the round wins.
  auto judge = [](const LayerPrediction& now,
                  const LayerPrediction& p) -> std::optional<MoveScore> {
    if (p.total_seconds > now.total_seconds) return std::nullopt;
    if (!(p.max_tokens < now.max_tokens ||
          (p.max_tokens == now.max_tokens && p.total_seconds < now.total_seconds))) {
      return std::nullopt;
    }
    return MoveScore{-p.max_tokens, -p.total_seconds};
  };
  SearchOptions options;
  options.max_moves = moves;
  return search.Search(options, generate, judge);
}

int BalanceLayer(const CostModel& cost, LayerId l, const LoadMatrix& load,
                 const LoadAggregate& aggregate, DispatchRule rule,
                 const std::vector<int>& max_copies, double target, double budget, int moves,
                 int candidates, int64_t max_evaluations, LayerPlan* layer) {
  if (moves <= 0) return 0;
  const Cluster& cluster = cost.cluster();
  const int devices = cluster.num_devices();
  LayerSearch search(cost, l, load, aggregate, rule, max_copies, layer);
  bool first_round = true;
  double max_seconds = 0;  // (1 + budget) x the layer's time before the pass
  double excess_now = 0;
  std::vector<DeviceId> sources, order;
  std::vector<std::pair<double, ExpertId>> heavy;
  auto generate = [&](const LayerPrediction& now, LayerSearch::TryMove try_move) {
    if (first_round) max_seconds = now.total_seconds * (1 + std::max(0.0, budget));
    first_round = false;
    excess_now = ExcessOver(now, target);
    if (excess_now <= 0) return;
    const double bound = target * now.mean_tokens;
    sources.assign(cluster.num_nodes(), -1);
    for (DeviceId d = 0; d < devices; ++d) {
      if (now.device_tokens[d] <= bound) continue;
      DeviceId& s = sources[cluster.node_of(d)];
      if (s < 0 || now.device_tokens[d] > now.device_tokens[s]) s = d;
    }
    sources.erase(std::remove(sources.begin(), sources.end(), -1), sources.end());
    std::sort(sources.begin(), sources.end(), [&](DeviceId a, DeviceId b) {
      return now.device_tokens[a] != now.device_tokens[b]
                 ? now.device_tokens[a] > now.device_tokens[b]
                 : a < b;
    });
    if (sources.size() > kBalanceSources) sources.resize(kBalanceSources);
    for (const DeviceId src : sources) {
      // Copies of its heaviest experts on its node's devices (into a free slot, or swapped for a
      // copy there) or into a free slot anywhere; its node's first, least loaded first.
      search.HeaviestPerHolder(src, kHeavyExperts, &heavy);
      for (const auto& [per_holder, e] : heavy) {
        order.clear();
        for (DeviceId d = 0; d < devices; ++d) {
          if (!search.Holds(e, d) && (cluster.same_node(d, src) || search.HasFreeSlot(d))) {
            order.push_back(d);
          }
        }
        const size_t k = std::min<size_t>(order.size(), static_cast<size_t>(candidates));
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [&](DeviceId a, DeviceId b) {
                            const bool la = cluster.same_node(a, src);
                            const bool lb = cluster.same_node(b, src);
                            if (la != lb) return la;
                            return now.device_tokens[a] != now.device_tokens[b]
                                       ? now.device_tokens[a] < now.device_tokens[b]
                                       : a < b;
                          });
        for (size_t i = 0; i < k; ++i) {
          const DeviceId d = order[i];
          if (search.HasFreeSlot(d)) {
            if (!try_move(Move{e, d})) return;
            continue;
          }
          for (const ExpertId x : search.LeastUseful(d, e, kBalanceSwaps)) {
            if (!try_move(Move{e, d, x})) return;
          }
        }
      }
      // Exchanges: one of its copies for a copy another device of its node holds (the node keeps
      // its copies, so its cross-node traffic barely changes).
      for (const auto& [per_holder, x] : heavy) {
        if (layer->owner[x] == src) continue;
        for (DeviceId d : cluster.devices_of(cluster.node_of(src))) {
          if (d == src || search.Holds(x, d)) continue;
          for (const ExpertId y : search.LeastUseful(d, x, kBalanceSwaps)) {
            if (search.Holds(y, src)) continue;
            if (!try_move(Move{x, d, y, src})) return;
          }
        }
      }
    }
  };
  // Moves not slower than the layer now first, by excess removed; then excess removed per second
  // added. Moves over max_seconds or removing nothing do not count.
  auto judge = [&](const LayerPrediction& now,
                   const LayerPrediction& p) -> std::optional<MoveScore> {
    if (p.total_seconds > max_seconds) return std::nullopt;
    const double gain = excess_now - ExcessOver(p, target);
    if (gain <= 0) return std::nullopt;
    const double added = p.total_seconds - now.total_seconds;
    const bool free = added <= 0;
    return MoveScore{free ? 1.0 : 0.0, free ? gain : gain / added};
  };
  SearchOptions options;
  options.max_moves = moves;
  options.max_evaluations = max_evaluations;
  return search.Search(options, generate, judge);
}

}  // namespace hecate::placement
