#include "placement/dispatch.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace hecate::placement {

namespace {
// Re-levelling sweeps of the load-aware rule (Dispatcher::SplitAll).
constexpr int kRelevelSweeps = 3;
}  // namespace

void SplitEven(int64_t tokens, int num_candidates, int rotation, std::vector<int64_t>* shares) {
  shares->assign(num_candidates, 0);
  if (num_candidates == 0) return;
  const int64_t base = tokens / num_candidates;
  const int64_t rest = tokens % num_candidates;
  const int rot = rotation % num_candidates;
  for (int i = 0; i < num_candidates; ++i) {
    const int slot = (i - rot + num_candidates) % num_candidates;
    (*shares)[i] = base + (slot < rest ? 1 : 0);
  }
}

void SplitWaterFill(int64_t tokens, const std::vector<DeviceId>& candidates,
                    const std::vector<int64_t>& device_load, std::vector<int>* order,
                    std::vector<int64_t>* shares) {
  const int k = static_cast<int>(candidates.size());
  shares->assign(k, 0);
  if (k == 0) return;
  order->resize(k);
  std::iota(order->begin(), order->end(), 0);
  std::sort(order->begin(), order->end(), [&](int a, int b) {
    const int64_t la = device_load[candidates[a]], lb = device_load[candidates[b]];
    return la != lb ? la < lb : candidates[a] < candidates[b];
  });
  // Fill the j least-loaded candidates up to a common level; j is the first count for which the
  // level would not exceed the next candidate's load.
  int64_t sum = 0;
  int j = 0;
  while (j < k) {
    sum += device_load[candidates[(*order)[j]]];
    ++j;
    if (j == k || tokens + sum <= static_cast<int64_t>(j) * device_load[candidates[(*order)[j]]]) {
      break;
    }
  }
  const int64_t level = (tokens + sum) / j;
  const int64_t rest = (tokens + sum) % j;
  for (int i = 0; i < j; ++i) {
    const int c = (*order)[i];
    (*shares)[c] = level - device_load[candidates[c]] + (i < rest ? 1 : 0);
  }
}

Dispatcher::Dispatcher(const Cluster& cluster) : cluster_(cluster) {
  stamp_.assign(cluster.num_devices(), -1);
  pool_tokens_.assign(cluster.num_nodes(), 0);
}

template <typename Emit>
void Dispatcher::RunReplicaEven(const LayerPlan& layer, const LoadMatrix& load, Emit emit) {
  const int devices = cluster_.num_devices();
  for (ExpertId e = 0; e < layer.num_experts(); ++e) {
    const std::vector<DeviceId>& holders = layer.replicas[e];
    const int h = static_cast<int>(holders.size());
    for (DeviceId s = 0; s < devices; ++s) {
      const int64_t k = load.at(s, e);
      if (k == 0) continue;
      SplitEven(k, h, s + e, &shares_);
      for (int j = 0; j < h; ++j) {
        if (shares_[j] > 0) emit(s, e, holders[j], shares_[j]);
      }
    }
  }
}

template <typename Sink>
void Dispatcher::Run(const LayerPlan& layer, const LoadMatrix& load, DispatchRule rule,
                     Sink& sink) {
  const int devices = cluster_.num_devices();
  const int experts = layer.num_experts();
  if (rule == DispatchRule::kReplicaEven) {
    RunReplicaEven(layer, load, [&sink](DeviceId s, ExpertId e, DeviceId h, int64_t k) {
      if (s == h) {
        sink.Local(s, e, k);
      } else {
        sink.Send(s, e, h, k);
      }
    });
    return;
  }
  const bool even = rule == DispatchRule::kEven;
  if (!even) {
    // The load-aware rule's pools, splits and spill are Summarize's (one code path, so the two
    // agree); below, every token is emitted.
    const LoadAggregate agg = LoadAggregate::Of(load, cluster_);
    Summarize(layer, load, rule, &scratch_, &agg);
  } else {
    load_.assign(devices, 0);
    pools_.clear();
    spills_.clear();
    spill_begin_.clear();
    std::fill(stamp_.begin(), stamp_.end(), -1);
  }

  // Pass 1: single-holder experts; under the even rule also the tokens that stay on a holding
  // source, and the pools.
  for (ExpertId e = 0; e < experts; ++e) {
    const std::vector<DeviceId>& holders = layer.replicas[e];
    if (holders.size() == 1) {
      const DeviceId h = holders[0];
      for (DeviceId s = 0; s < devices; ++s) {
        const int64_t k = load.at(s, e);
        if (k == 0) continue;
        if (even) load_[h] += k;
        if (s == h) {
          sink.Local(s, e, k);
        } else {
          sink.Send(s, e, h, k);
        }
      }
      continue;
    }
    if (!even) continue;
    for (DeviceId h : holders) stamp_[h] = e;
    std::fill(pool_tokens_.begin(), pool_tokens_.end(), 0);
    for (DeviceId s = 0; s < devices; ++s) {
      const int64_t k = load.at(s, e);
      if (k == 0) continue;
      if (stamp_[s] == e) {
        load_[s] += k;
        sink.Local(s, e, k);
      } else {
        pool_tokens_[cluster_.node_of(s)] += k;
      }
    }
    AddPools(layer, e);
  }

  // Pass 2: pooled tokens, the largest pools first so they see the fullest picture of the loads.
  if (even) {
    SortPools();
    SplitAll(layer, /*even=*/true);
  }
  EmitPools(layer, /*include_holders=*/!even, sink);
}

template <typename Sink>
void Dispatcher::EmitPools(const LayerPlan& layer, bool include_holders, Sink& sink) {
  const int devices = cluster_.num_devices();
  for (size_t p = 0; p < pools_.size(); ++p) {
    const Pool& pool = pools_[p];
    LoadSplit(p);
    sources_.clear();
    if (pool.node != kRemote) {
      sources_ = cluster_.devices_of(pool.node);
    } else {
      node_flag_.assign(cluster_.num_nodes(), 0);
      for (DeviceId h : layer.replicas[pool.expert]) node_flag_[cluster_.node_of(h)] = 1;
      for (DeviceId s = 0; s < devices; ++s) {
        if (!node_flag_[cluster_.node_of(s)]) sources_.push_back(s);
      }
    }
    sink.Pool(pool.node, pool.expert, sources_, candidates_, shares_, include_holders);
  }
}

void Dispatcher::AddPools(const LayerPlan& layer, ExpertId e) {
  // Nodes holding e pool for their own holders; the nodes without a holder pool together.
  node_flag_.assign(pool_tokens_.size(), 0);
  for (DeviceId h : layer.replicas[e]) node_flag_[cluster_.node_of(h)] = 1;
  int64_t remote = 0;
  for (NodeId n = 0; n < static_cast<NodeId>(pool_tokens_.size()); ++n) {
    if (pool_tokens_[n] <= 0) continue;
    if (node_flag_[n]) {
      pools_.push_back(Pool{e, n, pool_tokens_[n]});
    } else {
      remote += pool_tokens_[n];
    }
  }
  if (remote > 0) pools_.push_back(Pool{e, kRemote, remote});
}

void Dispatcher::SortPools() {
  std::sort(pools_.begin(), pools_.end(), [](const Pool& a, const Pool& b) {
    if (a.tokens != b.tokens) return a.tokens > b.tokens;
    if (a.expert != b.expert) return a.expert < b.expert;
    return a.node < b.node;
  });
}

void Dispatcher::Split(const LayerPlan& layer, const Pool& pool, bool even) {
  const std::vector<DeviceId>& holders = layer.replicas[pool.expert];
  if (pool.node == kRemote) {
    candidates_ = holders;
  } else {
    candidates_.clear();
    for (DeviceId h : holders) {
      if (cluster_.node_of(h) == pool.node) candidates_.push_back(h);
    }
  }
  if (even) {
    const int rotation = (pool.node == kRemote ? cluster_.num_nodes() : pool.node) + pool.expert;
    SplitEven(pool.tokens, static_cast<int>(candidates_.size()), rotation, &shares_);
  } else {
    SplitWaterFill(pool.tokens, candidates_, load_, &order_, &shares_);
  }
  for (size_t i = 0; i < candidates_.size(); ++i) load_[candidates_[i]] += shares_[i];
}

void Dispatcher::SplitAll(const LayerPlan& layer, bool even) {
  pool_begin_.assign(1, 0);
  pool_cands_.clear();
  pool_shares_.clear();
  for (const Pool& pool : pools_) {
    Split(layer, pool, even);
    pool_cands_.insert(pool_cands_.end(), candidates_.begin(), candidates_.end());
    pool_shares_.insert(pool_shares_.end(), shares_.begin(), shares_.end());
    pool_begin_.push_back(pool_cands_.size());
  }
  if (even) return;
  // One pass fills each pool against the pools before it only: a holder that looked light to a
  // big pool may take a later pool's tokens on top. Each sweep takes every pool out in turn and
  // water-fills it again against all the others. A re-fill never raises the busiest of its
  // candidates, so the layer's busiest device never gets busier; the sweep stops early once no
  // pool's split changes.
  for (int sweep = 0; sweep < kRelevelSweeps; ++sweep) {
    bool changed = false;
    for (size_t p = 0; p < pools_.size(); ++p) {
      const size_t b = pool_begin_[p], n = pool_begin_[p + 1] - b;
      if (n < 2) continue;
      candidates_.assign(pool_cands_.begin() + b, pool_cands_.begin() + b + n);
      for (size_t i = 0; i < n; ++i) load_[candidates_[i]] -= pool_shares_[b + i];
      SplitWaterFill(pools_[p].tokens, candidates_, load_, &order_, &shares_);
      for (size_t i = 0; i < n; ++i) {
        load_[candidates_[i]] += shares_[i];
        changed = changed || shares_[i] != pool_shares_[b + i];
        pool_shares_[b + i] = shares_[i];
      }
    }
    if (!changed) break;
  }
}

void Dispatcher::LoadSplit(size_t i) {
  candidates_.assign(pool_cands_.begin() + pool_begin_[i],
                     pool_cands_.begin() + pool_begin_[i + 1]);
  shares_.assign(pool_shares_.begin() + pool_begin_[i], pool_shares_.begin() + pool_begin_[i + 1]);
  if (i + 1 < spill_begin_.size()) {
    for (size_t k = spill_begin_[i]; k < spill_begin_[i + 1]; ++k) {
      candidates_.push_back(spills_[k].to);
      shares_.push_back(spills_[k].tokens);
    }
  }
}

void Dispatcher::Spill(const LayerPlan& layer, const LoadMatrix& load, DispatchSummary* pre) {
  const int devices = cluster_.num_devices();
  const int nodes = cluster_.num_nodes();
  if (nodes < 2) return;  // (Summarize cleared spills_ before pass 2)
  // The slowest link of the All-to-All as it stands, in tokens per byte/s (the cost model's
  // links: each device's intra- and cross-node traffic, each node's NIC).
  const double intra_bw = cluster_.intra_bw(), nic_bw = cluster_.inter_bw();
  const double dev_bw = cluster_.device_nic_bw();
  const bool device_cap = dev_bw < nic_bw;
  std::vector<int64_t> node_in(nodes, 0), node_out(nodes, 0);
  double worst = 0;
  for (DeviceId d = 0; d < devices; ++d) {
    const double intra = static_cast<double>(std::max(pre->in_intra[d], pre->out_intra[d]));
    const double inter = static_cast<double>(std::max(pre->in_inter[d], pre->out_inter[d]));
    worst = std::max(worst, std::max(intra / intra_bw, inter / dev_bw));
    node_in[cluster_.node_of(d)] += pre->in_inter[d];
    node_out[cluster_.node_of(d)] += pre->out_inter[d];
  }
  for (NodeId n = 0; n < nodes; ++n) {
    worst = std::max(worst, static_cast<double>(std::max(node_in[n], node_out[n])) / nic_bw);
  }
  if (worst <= 0) return;
  // Room under it, in tokens (rounded down, so nothing ends over it).
  auto room = [&](double bw, int64_t used) {
    return std::max<int64_t>(
        0, static_cast<int64_t>(std::floor(worst * bw - static_cast<double>(used) - 1e-6)));
  };
  constexpr int64_t kNoCap = std::numeric_limits<int64_t>::max();
  std::vector<int64_t> out_room(nodes), in_room(nodes), source_room(nodes, kNoCap);
  std::vector<int64_t> device_in_room(devices, kNoCap);
  for (NodeId n = 0; n < nodes; ++n) {
    out_room[n] = room(nic_bw, node_out[n]);
    in_room[n] = room(nic_bw, node_in[n]);
  }
  if (device_cap) {
    // Which of a node's sources a spill draws on follows the apportionment; every source of the
    // node is charged the whole of it (safe, if cautious).
    for (DeviceId d = 0; d < devices; ++d) {
      device_in_room[d] = room(dev_bw, pre->in_inter[d]);
      const NodeId n = cluster_.node_of(d);
      source_room[n] = std::min(source_room[n], room(dev_bw, pre->out_inter[d]));
    }
  }
  bool out_any = false, in_any = false;
  for (NodeId n = 0; n < nodes; ++n) {
    out_any = out_any || out_room[n] > 0;
    in_any = in_any || in_room[n] > 0;
  }
  if (!out_any || !in_any) return;
  // Which node pools each device is a holder in (indices into pool_cands_, grouped by device).
  holder_begin_.assign(devices + 1, 0);
  pool_at_.resize(pool_cands_.size());
  for (size_t p = 0; p < pools_.size(); ++p) {
    for (size_t k = pool_begin_[p]; k < pool_begin_[p + 1]; ++k) {
      pool_at_[k] = static_cast<int>(p);
      if (pools_[p].node != kRemote) ++holder_begin_[pool_cands_[k] + 1];
    }
  }
  for (DeviceId d = 0; d < devices; ++d) holder_begin_[d + 1] += holder_begin_[d];
  holder_k_.resize(holder_begin_[devices]);
  fill_.assign(holder_begin_.begin(), holder_begin_.end() - 1);
  for (size_t p = 0; p < pools_.size(); ++p) {
    if (pools_[p].node == kRemote) continue;
    for (size_t k = pool_begin_[p]; k < pool_begin_[p + 1]; ++k) {
      holder_k_[fill_[pool_cands_[k]]++] = static_cast<int>(k);
    }
  }
  std::vector<int64_t>& tokens = pre->device_tokens;
  for (int step = 0; step < 2 * devices; ++step) {
    const DeviceId x =
        static_cast<DeviceId>(std::max_element(tokens.begin(), tokens.end()) - tokens.begin());
    int best_k = -1;
    DeviceId best_y = -1;
    int64_t best_t = 0;
    for (int h = holder_begin_[x]; h < holder_begin_[x + 1]; ++h) {
      const int k = holder_k_[h];
      const Pool& pool = pools_[pool_at_[k]];
      // Only what x received from other sources: its own tokens stay with it, so no link inside
      // the node carries more than before.
      const int64_t spare = pool_shares_[k] - load.at(x, pool.expert);
      const int64_t cap = std::min({spare, out_room[pool.node], source_room[pool.node]});
      if (cap <= best_t) continue;
      for (DeviceId y : layer.replicas[pool.expert]) {
        const NodeId c = cluster_.node_of(y);
        if (c == pool.node) continue;
        const int64_t t =
            std::min({cap, in_room[c], device_in_room[y], (tokens[x] - tokens[y]) / 2});
        if (t > best_t) {
          best_t = t;
          best_k = k;
          best_y = y;
        }
      }
    }
    if (best_t <= 0) break;
    const int p = pool_at_[best_k];
    const NodeId a = pools_[p].node, c = cluster_.node_of(best_y);
    pool_shares_[best_k] -= best_t;
    spills_.push_back(SpillEntry{p, best_y, best_t});
    tokens[x] -= best_t;
    tokens[best_y] += best_t;
    out_room[a] -= best_t;
    in_room[c] -= best_t;
    if (device_cap) {
      source_room[a] -= best_t;
      device_in_room[best_y] -= best_t;
    }
    pre->in_intra[x] -= best_t;  // x's room in the pool shrank; its own tokens stay kept
    pre->in_inter[best_y] += best_t;
  }
  if (spills_.empty()) return;
  // One entry per (pool, receiver), ascending.
  std::sort(spills_.begin(), spills_.end(), [](const SpillEntry& a, const SpillEntry& b) {
    return a.pool != b.pool ? a.pool < b.pool : a.to < b.to;
  });
  size_t w = 0;
  for (size_t r = 0; r < spills_.size(); ++r) {
    if (w > 0 && spills_[w - 1].pool == spills_[r].pool && spills_[w - 1].to == spills_[r].to) {
      spills_[w - 1].tokens += spills_[r].tokens;
    } else {
      spills_[w++] = spills_[r];
    }
  }
  spills_.resize(w);
  spill_begin_.assign(pools_.size() + 1, 0);
  for (const SpillEntry& e : spills_) ++spill_begin_[e.pool + 1];
  for (size_t p = 0; p < pools_.size(); ++p) spill_begin_[p + 1] += spill_begin_[p];
  // The sources: the apportionment fills the node's holders first (after each holder keeps its
  // own tokens), so the last `spilled` tokens in source order leave the node.
  for (size_t p = 0; p < pools_.size(); ++p) {
    if (spill_begin_[p] == spill_begin_[p + 1]) continue;
    const Pool& pool = pools_[p];
    int64_t spilled = 0;
    for (size_t k = spill_begin_[p]; k < spill_begin_[p + 1]; ++k) spilled += spills_[k].tokens;
    int64_t kept = 0;
    for (size_t k = pool_begin_[p]; k < pool_begin_[p + 1]; ++k) {
      kept += std::min(load.at(pool_cands_[k], pool.expert), pool_shares_[k]);
    }
    const int64_t start = pool.tokens - kept - spilled;  // the tokens that leave begin here
    int64_t at = 0;
    size_t k = pool_begin_[p];
    for (DeviceId s : cluster_.devices_of(pool.node)) {
      int64_t left = load.at(s, pool.expert);
      if (k < pool_begin_[p + 1] && pool_cands_[k] == s) {
        left -= std::min(left, pool_shares_[k]);
        ++k;
      }
      const int64_t moved = std::max<int64_t>(0, at + left - std::max(at, start));
      pre->out_inter[s] += moved;
      pre->out_intra[s] -= moved;
      at += left;
    }
  }
}

namespace {

// Apportions one pool to its holders: holders that are pooled sources keep their own tokens up to
// their share, then pooled sources in ascending order fill the holders' remaining shares in
// ascending order (north-west corner). Calls emit(src, dst, tokens) for every piece.
template <typename Emit>
void Apportion(const Cluster& cluster, const LayerPlan& layer, const LoadMatrix& load, NodeId n,
               ExpertId e, const std::vector<DeviceId>& sources, const std::vector<DeviceId>& cands,
               const std::vector<int64_t>& shares, bool include_holders, std::vector<int64_t>* left,
               std::vector<int64_t>* room, Emit emit) {
  left->assign(sources.size(), 0);
  for (size_t i = 0; i < sources.size(); ++i) {
    const DeviceId s = sources[i];
    if (include_holders || !layer.Holds(e, s)) (*left)[i] = load.at(s, e);
  }
  *room = shares;
  if (include_holders) {
    for (size_t j = 0; j < cands.size(); ++j) {
      if (cluster.node_of(cands[j]) != n) continue;
      const size_t i = static_cast<size_t>(cands[j] - sources.front());
      const int64_t keep = std::min((*left)[i], (*room)[j]);
      if (keep > 0) {
        emit(cands[j], cands[j], keep);
        (*left)[i] -= keep;
        (*room)[j] -= keep;
      }
    }
  }
  size_t j = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    int64_t k = (*left)[i];
    while (k > 0) {
      while ((*room)[j] == 0) ++j;
      const int64_t moved = std::min(k, (*room)[j]);
      emit(sources[i], cands[j], moved);
      k -= moved;
      (*room)[j] -= moved;
    }
  }
}

struct FlowSink {
  const Cluster& cluster;
  const LayerPlan& layer;
  const LoadMatrix& load;
  LayerDispatch* out;
  std::vector<int64_t> left, room;
  void Local(DeviceId s, ExpertId e, int64_t k) {
    out->by_expert[e].push_back(Flow{s, s, k});
    out->device_tokens[s] += k;
  }
  void Send(DeviceId s, ExpertId e, DeviceId h, int64_t k) {
    out->by_expert[e].push_back(Flow{s, h, k});
    out->device_tokens[h] += k;
  }
  void Pool(NodeId n, ExpertId e, const std::vector<DeviceId>& sources,
            const std::vector<DeviceId>& cands, const std::vector<int64_t>& shares,
            bool include_holders) {
    Apportion(cluster, layer, load, n, e, sources, cands, shares, include_holders, &left, &room,
              [this, e](DeviceId s, DeviceId d, int64_t k) { Send(s, e, d, k); });
  }
};

}  // namespace

void Dispatcher::Summarize(const LayerPlan& layer, const LoadMatrix& load, DispatchRule rule,
                           DispatchSummary* out, const LoadAggregate* aggregate) {
  const int devices = cluster_.num_devices();
  const int nodes = cluster_.num_nodes();
  const int experts = layer.num_experts();
  const bool even = rule == DispatchRule::kEven;
  LoadAggregate computed;
  if (aggregate == nullptr) {
    computed = LoadAggregate::Of(load, cluster_);
    aggregate = &computed;
  }
  const LoadAggregate& agg = *aggregate;
  for (std::vector<int64_t>* v :
       {&out->device_tokens, &out->out_intra, &out->out_inter, &out->in_intra, &out->in_inter}) {
    v->assign(devices, 0);
  }
  if (rule == DispatchRule::kReplicaEven) {
    RunReplicaEven(layer, load, [&](DeviceId s, ExpertId, DeviceId h, int64_t k) {
      out->device_tokens[h] += k;
      if (s == h) return;
      const bool intra = cluster_.node_of(s) == cluster_.node_of(h);
      (intra ? out->out_intra : out->out_inter)[s] += k;
      (intra ? out->in_intra : out->in_inter)[h] += k;
    });
    return;
  }
  load_.assign(devices, 0);
  kept_.assign(devices, 0);
  pools_.clear();
  node_mark_.assign(nodes, -1);
  node_held_.resize(nodes);
  for (std::vector<ExpertId>& v : node_held_) v.clear();

  // Pass 1, as Run: single-holder experts take their whole column; multi-holder experts pool per
  // node (the even rule keeps a holder's own tokens local first).
  for (ExpertId e = 0; e < experts; ++e) {
    const std::vector<DeviceId>& holders = layer.replicas[e];
    for (DeviceId h : holders) {
      const NodeId n = cluster_.node_of(h);
      if (node_mark_[n] != e) {
        node_mark_[n] = e;
        node_held_[n].push_back(e);
      }
    }
    if (holders.size() == 1) {
      const DeviceId h = holders[0];
      const int64_t total = agg.expert_total[e];
      const int64_t near = agg.mass(cluster_.node_of(h), e);
      const int64_t own = load.at(h, e);
      load_[h] += total;
      out->device_tokens[h] += total;
      kept_[h] += own;
      out->in_intra[h] += near - own;
      out->in_inter[h] += total - near;
      continue;
    }
    std::fill(pool_tokens_.begin(), pool_tokens_.end(), 0);
    for (NodeId n = 0; n < nodes; ++n) pool_tokens_[n] = agg.mass(n, e);
    if (even) {
      for (DeviceId h : holders) {
        const int64_t k = load.at(h, e);
        load_[h] += k;
        out->device_tokens[h] += k;
        kept_[h] += k;
        pool_tokens_[cluster_.node_of(h)] -= k;
      }
    }
    AddPools(layer, e);
  }

  // Pass 2, as Run; a pool's shares arrive from its node's sources (intra-node when the node holds
  // the expert, where a holder first keeps its own tokens under the load-aware rule).
  SortPools();
  SplitAll(layer, even);
  spills_.clear();
  spill_begin_.clear();
  for (size_t p = 0; p < pools_.size(); ++p) {
    const Pool& pool = pools_[p];
    LoadSplit(p);
    const bool on_node = pool.node != kRemote;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      const DeviceId d = candidates_[i];
      const int64_t share = shares_[i];
      out->device_tokens[d] += share;
      if (on_node) {
        const int64_t keep = even ? 0 : std::min(load.at(d, pool.expert), share);
        kept_[d] += keep;
        out->in_intra[d] += share - keep;
      } else {
        out->in_inter[d] += share;
      }
    }
  }

  // Sources: tokens for experts their node holds stay inside the node (or on the source itself).
  for (NodeId n = 0; n < nodes; ++n) {
    for (DeviceId s : cluster_.devices_of(n)) {
      const int64_t* row = load.row(s);
      int64_t near = 0;
      for (ExpertId e : node_held_[n]) near += row[e];
      out->out_inter[s] = agg.source_total[s] - near;
      out->out_intra[s] = near - kept_[s];
    }
  }
  if (!even && spill_on_) Spill(layer, load, out);
}

LayerDispatch Dispatcher::Compute(const LayerPlan& layer, const LoadMatrix& load,
                                  DispatchRule rule) {
  LayerDispatch out;
  out.by_expert.resize(layer.num_experts());
  out.device_tokens.assign(cluster_.num_devices(), 0);
  FlowSink sink{cluster_, layer, load, &out, {}, {}};
  Run(layer, load, rule, sink);
  for (std::vector<Flow>& flows : out.by_expert) {
    std::sort(flows.begin(), flows.end(), [](const Flow& a, const Flow& b) {
      return a.src != b.src ? a.src < b.src : a.dst < b.dst;
    });
  }
  return out;
}

}  // namespace hecate::placement
