#include "placement/materialization.h"

#include <algorithm>
#include <numeric>
#include <queue>
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

void InsertSorted(std::vector<DeviceId>* v, DeviceId d) {
  v->insert(std::upper_bound(v->begin(), v->end(), d), d);
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
      InsertSorted(&holders, best);
      node_has[cluster.node_of(best)] = 1;
      device_load[best] += per_copy;
      ++used[best];
    }
  }
  return out;
}

namespace {

// A sorted run of devices inside a larger buffer (one candidate set of receivers).
struct DeviceSpan {
  const DeviceId* first = nullptr;
  int n = 0;
  const DeviceId* begin() const { return first; }
  const DeviceId* end() const { return first + n; }
  int size() const { return n; }
  bool empty() const { return n == 0; }
  DeviceId operator[](int i) const { return first[i]; }
};

// Running link loads of one layer's spAG (owner -> holder), mirroring TrafficMatrix::Seconds.
class LinkState {
 public:
  explicit LinkState(const Cluster& c)
      : c_(c),
        in_intra_(c.num_devices(), 0),
        out_intra_(c.num_devices(), 0),
        in_inter_(c.num_devices(), 0),
        out_inter_(c.num_devices(), 0),
        node_in_(c.num_nodes(), 0),
        node_out_(c.num_nodes(), 0) {}

  // Link time (without latency) after adding one transfer of `bytes` from -> to.
  double WithTransfer(DeviceId from, DeviceId to, double bytes) const {
    double t = worst_;
    if (c_.same_node(from, to)) {
      t = std::max(t, (out_intra_[from] + bytes) / c_.intra_bw());
      t = std::max(t, (in_intra_[to] + bytes) / c_.intra_bw());
    } else {
      t = std::max(t, (out_inter_[from] + bytes) / c_.device_nic_bw());
      t = std::max(t, (in_inter_[to] + bytes) / c_.device_nic_bw());
      t = std::max(t, (node_out_[c_.node_of(from)] + bytes) / c_.inter_bw());
      t = std::max(t, (node_in_[c_.node_of(to)] + bytes) / c_.inter_bw());
    }
    return t;
  }
  // Link time (without latency) after adding one transfer of `bytes` from `from` to each of `to`.
  double WithTransfers(DeviceId from, const DeviceSpan& to, double bytes) const {
    double t = worst_;
    double out_intra = out_intra_[from], out_inter = out_inter_[from];
    double node_out = node_out_[c_.node_of(from)];
    for (DeviceId d : to) {
      if (c_.same_node(from, d)) {
        out_intra += bytes;
        t = std::max(t, (in_intra_[d] + bytes) / c_.intra_bw());
      } else {
        out_inter += bytes;
        node_out += bytes;
        t = std::max(t, (in_inter_[d] + bytes) / c_.device_nic_bw());
      }
    }
    t = std::max(t, out_intra / c_.intra_bw());
    t = std::max(t, out_inter / c_.device_nic_bw());
    t = std::max(t, node_out / c_.inter_bw());
    // Receivers share one node in every call here; charge that node's NIC once per transfer.
    if (!to.empty() && !c_.same_node(from, to[0])) {
      t = std::max(t, (node_in_[c_.node_of(to[0])] + bytes * to.size()) / c_.inter_bw());
    }
    return t;
  }
  void Add(DeviceId from, DeviceId to, double bytes) {
    worst_ = WithTransfer(from, to, bytes);
    if (c_.same_node(from, to)) {
      out_intra_[from] += bytes;
      in_intra_[to] += bytes;
    } else {
      out_inter_[from] += bytes;
      in_inter_[to] += bytes;
      node_out_[c_.node_of(from)] += bytes;
      node_in_[c_.node_of(to)] += bytes;
    }
  }
  double worst() const { return worst_; }

 private:
  const Cluster& c_;
  std::vector<double> in_intra_, out_intra_, in_inter_, out_inter_, node_in_, node_out_;
  double worst_ = 0;
};

}  // namespace

namespace {

// The greedy's running estimate of one layer under the load-aware dispatch: per-device tokens,
// per-node cross-node All-to-All tokens, and the spAG links.
class GreedyState {
 public:
  GreedyState(const CostModel& cost, LayerId l, LayerPlan* plan, const LoadMatrix& load,
              const GreedyBudget& budget)
      : cluster_(cost.cluster()),
        plan_(*plan),
        devices_(cluster_.num_devices()),
        nodes_(cluster_.num_nodes()),
        experts_(plan->num_experts()),
        links_(cluster_) {
    const LayerSpec& spec = cost.model().layers[l];
    attention_ = budget.attention_forward_seconds >= 0 ? budget.attention_forward_seconds
                                                       : cost.attention_forward_seconds();
    regather_ = plan->remat == RematMode::kRegather;
    pb_ = static_cast<double>(spec.expert_param_bytes);
    a2a_sec_per_token_ = 4.0 * static_cast<double>(cost.model().token_bytes) / cluster_.inter_bw();
    sec_per_token_.resize(devices_);
    for (DeviceId d = 0; d < devices_; ++d) {
      sec_per_token_[d] = 3.0 * spec.expert_flops_per_token / cluster_.flops(d);
    }
    mass_.assign(experts_, std::vector<double>(nodes_, 0.0));
    node_holders_.assign(experts_, std::vector<int>(nodes_, 0));
    remote_.assign(experts_, 0.0);
    for (DeviceId s = 0; s < devices_; ++s) {
      const int64_t* row = load.row(s);
      const NodeId n = cluster_.node_of(s);
      for (ExpertId e = 0; e < experts_; ++e) mass_[e][n] += static_cast<double>(row[e]);
    }
    tokens_.assign(devices_, 0.0);
    held_.resize(devices_);
    left_.assign(devices_, 0);
    for (DeviceId d = 0; d < devices_; ++d) {
      left_[d] = d < static_cast<int>(budget.max_copies.size()) ? budget.max_copies[d] : 0;
    }
    node_in_.assign(nodes_, 0.0);
    node_out_.assign(nodes_, 0.0);
    holds_.assign(static_cast<size_t>(experts_) * devices_, 0);
    for (ExpertId e = 0; e < experts_; ++e) {
      for (DeviceId h : plan_.replicas[e]) ++node_holders_[e][cluster_.node_of(h)];
      for (NodeId n = 0; n < nodes_; ++n) {
        if (node_holders_[e][n] == 0) {
          remote_[e] += mass_[e][n];
          node_out_[n] += mass_[e][n];
        }
      }
      const double k = static_cast<double>(plan_.replicas[e].size());
      for (NodeId n = 0; n < nodes_; ++n) node_in_[n] += remote_[e] * node_holders_[e][n] / k;
      for (DeviceId h : plan_.replicas[e]) {
        holds_[static_cast<size_t>(e) * devices_ + h] = 1;
        tokens_[h] += Share(e, h);
        held_[h].push_back(e);
        if (h != plan_.owner[e]) {
          --left_[h];
          links_.Add(plan_.owner[e], h, pb_);
        }
      }
    }
    stamp_.assign(devices_, -1);
    after_.assign(devices_, 0.0);
    node_in_after_.assign(nodes_, 0.0);
  }

  // Tokens of expert e that holder h computes.
  double Share(ExpertId e, DeviceId h) const {
    const NodeId n = cluster_.node_of(h);
    return mass_[e][n] / node_holders_[e][n] + remote_[e] / plan_.replicas[e].size();
  }
  double TimeOf(DeviceId d) const { return tokens_[d] * sec_per_token_[d]; }
  double Exposed(double link_seconds) const {
    if (link_seconds <= 0) return 0.0;
    const double t = link_seconds + cluster_.latency();
    return std::max(0.0, t - attention_) + std::max(0.0, (regather_ ? 2 * t : t) - 2 * attention_);
  }
  // The All-to-All term the greedy minimises: the busiest NIC (what the cost model charges) plus a
  // quarter of the mean NIC traffic, so that a move relieving one side of two equally busy nodes
  // still counts (the plain maximum would not move until both sides are relieved).
  static double A2aSurrogate(double worst, double total, int nodes) {
    return worst + 0.25 * total / (2.0 * nodes);
  }
  double A2a() const {
    double worst = 0, total = 0;
    for (NodeId n = 0; n < nodes_; ++n) {
      worst = std::max(worst, std::max(node_in_[n], node_out_[n]));
      total += node_in_[n] + node_out_[n];
    }
    return A2aSurrogate(worst, total, nodes_) * a2a_sec_per_token_;
  }
  // Orders the slowest devices first in by_time_ (the top kTop exactly; the rest unordered, and
  // Evaluate falls back to a full scan when every top device is affected).
  void SortDevices() {
    keyed_.resize(devices_);
    for (DeviceId d = 0; d < devices_; ++d) keyed_[d] = {TimeOf(d), d};
    auto slower = [](const std::pair<double, DeviceId>& a, const std::pair<double, DeviceId>& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    };
    const int top = std::min(devices_, kTop);
    if (top < devices_) {
      std::nth_element(keyed_.begin(), keyed_.begin() + top, keyed_.end(), slower);
    }
    std::sort(keyed_.begin(), keyed_.begin() + top, slower);
    by_time_.resize(devices_);
    for (DeviceId i = 0; i < devices_; ++i) by_time_[i] = keyed_[i].second;
  }
  static constexpr int kTop = 16;
  DeviceId slowest() const { return by_time_[0]; }
  NodeId BottleneckNode() const {
    NodeId best = 0;
    for (NodeId n = 1; n < nodes_; ++n) {
      if (std::max(node_in_[n], node_out_[n]) > std::max(node_in_[best], node_out_[best])) best = n;
    }
    return best;
  }
  bool OutBound(NodeId n) const { return node_out_[n] >= node_in_[n]; }

  // Feasible receivers for e on node n (free slot, no copy), least loaded first.
  // The result lives until the next call.
  const std::vector<DeviceId>& Receivers(ExpertId e, NodeId n) {
    std::vector<DeviceId>& out = receivers_;
    out.clear();
    for (DeviceId d : cluster_.devices_of(n)) {
      if (left_[d] > 0 && !Holds(e, d)) out.push_back(d);
    }
    std::sort(out.begin(), out.end(), [&](DeviceId a, DeviceId b) {
      return TimeOf(a) != TimeOf(b) ? TimeOf(a) < TimeOf(b) : a < b;
    });
    return out;
  }
  DeviceId LeastLoadedReceiver(ExpertId e, bool fresh_node_only) const {
    DeviceId best = -1;
    for (DeviceId d = 0; d < devices_; ++d) {
      if (left_[d] <= 0 || Holds(e, d)) continue;
      if (fresh_node_only && node_holders_[e][cluster_.node_of(d)] != 0) continue;
      if (best < 0 || TimeOf(d) < TimeOf(best)) best = d;
    }
    return best;
  }
  bool Holds(ExpertId e, DeviceId d) const {
    return holds_[static_cast<size_t>(e) * devices_ + d] != 0;
  }
  bool NodeHolds(ExpertId e, NodeId n) const { return node_holders_[e][n] > 0; }
  double Mass(ExpertId e, NodeId n) const { return mass_[e][n]; }
  double Remote(ExpertId e) const { return remote_[e]; }
  const std::vector<ExpertId>& Held(DeviceId d) const { return held_[d]; }

  struct Outcome {
    double delta = 0;      // change of predicted layer time, seconds
    bool plateau = false;  // no worse, and the slowest device strictly lighter
  };

  // Predicted change if `set` (devices of one node, ascending, feasible) receive copies of e.
  Outcome Evaluate(ExpertId e, const DeviceSpan& set) {
    const std::vector<DeviceId>& holders = plan_.replicas[e];
    const int k = static_cast<int>(holders.size());
    const int r = static_cast<int>(set.size());
    const NodeId m = cluster_.node_of(set[0]);
    const int on_m = node_holders_[e][m];
    const double remote_after = remote_[e] - (on_m == 0 ? mass_[e][m] : 0.0);
    const double max_time = TimeOf(by_time_[0]);
    ++generation_;
    for (DeviceId h : holders) stamp_[h] = generation_;
    for (DeviceId c : set) stamp_[c] = generation_;
    // Compute.
    double new_max = 0;
    for (DeviceId c : set) {
      new_max = std::max(new_max, (tokens_[c] + mass_[e][m] / (on_m + r) + remote_after / (k + r)) *
                                      sec_per_token_[c]);
    }
    for (DeviceId h : holders) {
      const NodeId n = cluster_.node_of(h);
      const double own =
          n == m ? mass_[e][n] / (node_holders_[e][n] + r) : mass_[e][n] / node_holders_[e][n];
      after_[h] = tokens_[h] - Share(e, h) + own + remote_after / (k + r);
      new_max = std::max(new_max, after_[h] * sec_per_token_[h]);
    }
    const int top = std::min(devices_, kTop);
    bool found = false;
    for (int i = 0; i < top && !found; ++i) {
      const DeviceId d = by_time_[i];
      if (stamp_[d] == generation_) continue;
      new_max = std::max(new_max, TimeOf(d));
      found = true;  // sorted prefix: the first unaffected device is the unaffected maximum
    }
    if (!found) {
      for (int i = top; i < devices_; ++i) {
        const DeviceId d = by_time_[i];
        if (stamp_[d] != generation_) new_max = std::max(new_max, TimeOf(d));
      }
    }
    // Cross-node All-to-All.
    double worst = 0, total = 0;
    for (NodeId n = 0; n < nodes_; ++n) {
      const int h_before = node_holders_[e][n];
      const int h_after = h_before + (n == m ? r : 0);
      const double in = node_in_[n] - remote_[e] * h_before / k + remote_after * h_after / (k + r);
      const double out = node_out_[n] - (n == m && on_m == 0 ? mass_[e][m] : 0.0);
      worst = std::max(worst, std::max(in, out));
      total += in + out;
    }
    const double a2a_after = A2aSurrogate(worst, total, nodes_) * a2a_sec_per_token_;
    const double exposed_now = Exposed(links_.worst());
    const double exposed_after = Exposed(links_.WithTransfers(plan_.owner[e], set, pb_));
    const double a2a_now = A2a();
    Outcome o;
    o.delta = (new_max - max_time) + (a2a_after - a2a_now) + (exposed_after - exposed_now);
    const DeviceId slow = by_time_[0];
    const bool slow_lighter = stamp_[slow] == generation_ &&
                              !std::binary_search(set.begin(), set.end(), slow) &&
                              after_[slow] < tokens_[slow] - 1e-9;
    o.plateau = !(o.delta < -1e-12) && r == 1 && new_max <= max_time * (1 + 1e-12) &&
                a2a_after <= a2a_now * (1 + 1e-12) && exposed_after <= exposed_now + 1e-15 &&
                slow_lighter;
    return o;
  }

  void Commit(ExpertId e, const DeviceSpan& set) {
    std::vector<DeviceId>& holders = plan_.replicas[e];
    const double k = static_cast<double>(holders.size());
    const NodeId m = cluster_.node_of(set[0]);
    for (NodeId n = 0; n < nodes_; ++n) node_in_[n] -= remote_[e] * node_holders_[e][n] / k;
    for (DeviceId h : holders) tokens_[h] -= Share(e, h);
    if (node_holders_[e][m] == 0) {
      remote_[e] -= mass_[e][m];
      node_out_[m] -= mass_[e][m];
    }
    node_holders_[e][m] += static_cast<int>(set.size());
    for (DeviceId c : set) InsertSorted(&holders, c);
    const double k_after = static_cast<double>(holders.size());
    for (NodeId n = 0; n < nodes_; ++n) node_in_[n] += remote_[e] * node_holders_[e][n] / k_after;
    for (DeviceId h : holders) tokens_[h] += Share(e, h);
    for (DeviceId c : set) {
      holds_[static_cast<size_t>(e) * devices_ + c] = 1;
      held_[c].push_back(e);
      --left_[c];
      links_.Add(plan_.owner[e], c, pb_);
    }
  }

 private:
  const Cluster& cluster_;
  LayerPlan& plan_;
  const int devices_, nodes_, experts_;
  LinkState links_;
  double attention_ = 0, pb_ = 0, a2a_sec_per_token_ = 0;
  bool regather_ = false;
  std::vector<double> sec_per_token_;
  std::vector<std::vector<double>> mass_;       // [expert][node] tokens
  std::vector<std::vector<int>> node_holders_;  // [expert][node] holders
  std::vector<double> remote_;                  // tokens of nodes without a holder
  std::vector<double> tokens_;                  // per device
  std::vector<double> node_in_, node_out_;      // cross-node tokens per node
  std::vector<std::vector<ExpertId>> held_;
  std::vector<int> left_;
  std::vector<DeviceId> by_time_;
  std::vector<std::pair<double, DeviceId>> keyed_;
  std::vector<char> holds_;  // [expert * devices + device]: holds a copy
  std::vector<DeviceId> receivers_;
  std::vector<int> stamp_;
  std::vector<double> after_, node_in_after_;
  int generation_ = 0;
};

// Candidate moves (expert, set of receivers), flat, reused across the greedy's steps.
class MoveList {
 public:
  void Clear() {
    experts_.clear();
    begins_.assign(1, 0);
    devices_.clear();
  }
  int size() const { return static_cast<int>(experts_.size()); }
  ExpertId expert(int i) const { return experts_[i]; }
  DeviceSpan set(int i) const {
    return DeviceSpan{devices_.data() + begins_[i], begins_[i + 1] - begins_[i]};
  }
  // Moves added for one expert from here on are deduplicated against each other.
  void StartExpert() { group_ = size(); }
  // Adds (e, sorted first j of `on_node`) unless this expert's group already has that set.
  void Add(ExpertId e, const DeviceId* on_node, int j) {
    scratch_.assign(on_node, on_node + j);
    std::sort(scratch_.begin(), scratch_.end());
    for (int i = group_; i < size(); ++i) {
      const DeviceSpan have = set(i);
      if (have.size() == j && std::equal(have.begin(), have.end(), scratch_.begin())) return;
    }
    experts_.push_back(e);
    devices_.insert(devices_.end(), scratch_.begin(), scratch_.end());
    begins_.push_back(static_cast<int>(devices_.size()));
  }
  // The j least-loaded receivers of a node for j = 1, 2, 4, ... and all.
  void AddOptions(ExpertId e, const std::vector<DeviceId>& on_node) {
    const int n = static_cast<int>(on_node.size());
    for (int j = 1; j <= n; j = (j == n ? j + 1 : std::min(2 * j, n))) Add(e, on_node.data(), j);
  }

 private:
  std::vector<ExpertId> experts_;
  std::vector<int> begins_{0};
  std::vector<DeviceId> devices_;
  std::vector<DeviceId> scratch_;
  int group_ = 0;
};

}  // namespace

LayerPlan MaterializeGreedy(const CostModel& cost, LayerId l, const LayerPlan& base,
                            const LoadMatrix& load, const GreedyBudget& budget, int* added) {
  LayerPlan out;
  out.owner = base.owner;
  out.remat = base.remat;
  out.replicas = base.replicas;
  if (added != nullptr) *added = 0;
  GreedyState state(cost, l, &out, load, budget);
  const int devices = cost.cluster().num_devices();
  constexpr int kExpertsPerClass = 3;
  MoveList moves;
  std::vector<std::pair<double, ExpertId>> ranked;
  auto by_weight = [](const std::pair<double, ExpertId>& a, const std::pair<double, ExpertId>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  for (;;) {
    state.SortDevices();
    // Moves worth trying: relieve the slowest device (compute), and unload the node whose NIC
    // carries the most All-to-All traffic.
    moves.Clear();
    {
      const DeviceId slow = state.slowest();
      ranked.clear();
      for (ExpertId e : state.Held(slow)) {
        if (static_cast<int>(out.replicas[e].size()) < devices && state.Share(e, slow) > 0) {
          ranked.push_back({state.Share(e, slow), e});
        }
      }
      std::sort(ranked.begin(), ranked.end(), by_weight);
      if (static_cast<int>(ranked.size()) > kExpertsPerClass) ranked.resize(kExpertsPerClass);
      for (const auto& [share, e] : ranked) {
        moves.StartExpert();
        const DeviceId any = state.LeastLoadedReceiver(e, false);
        if (any >= 0) moves.Add(e, &any, 1);
        const std::vector<DeviceId>& near =
            state.Receivers(e, cost.cluster().node_of(out.owner[e]));
        if (!near.empty()) moves.Add(e, near.data(), 1);
        const DeviceId fresh = state.LeastLoadedReceiver(e, true);
        if (fresh >= 0) moves.AddOptions(e, state.Receivers(e, cost.cluster().node_of(fresh)));
      }
    }
    {
      const NodeId b = state.BottleneckNode();
      ranked.clear();
      const bool outbound = state.OutBound(b);
      for (ExpertId e = 0; e < out.num_experts(); ++e) {
        if (static_cast<int>(out.replicas[e].size()) >= devices) continue;
        const double f = outbound ? (state.NodeHolds(e, b) ? 0.0 : state.Mass(e, b))
                                  : (state.NodeHolds(e, b) ? state.Remote(e) : 0.0);
        if (f > 0) ranked.push_back({f, e});
      }
      const size_t keep = std::min<size_t>(ranked.size(), kExpertsPerClass);
      std::partial_sort(ranked.begin(), ranked.begin() + keep, ranked.end(), by_weight);
      ranked.resize(keep);
      for (const auto& [flow, e] : ranked) {
        // Outbound: give b its own copies. Inbound: give the heaviest sending node copies.
        NodeId target = b;
        if (!outbound) {
          target = -1;
          for (NodeId n = 0; n < cost.cluster().num_nodes(); ++n) {
            if (state.NodeHolds(e, n)) continue;
            if (target < 0 || state.Mass(e, n) > state.Mass(e, target)) target = n;
          }
          if (target < 0) continue;
        }
        moves.StartExpert();
        moves.AddOptions(e, state.Receivers(e, target));
      }
    }
    int best = -1;
    GreedyState::Outcome best_outcome;
    for (int i = 0; i < moves.size(); ++i) {
      // Judge per copy, so a bigger set must earn its extra copies.
      GreedyState::Outcome o = state.Evaluate(moves.expert(i), moves.set(i));
      o.delta /= static_cast<double>(moves.set(i).size());
      const bool improves = o.delta < -1e-12;
      if (!improves && !o.plateau) continue;
      if (best < 0 || (improves && (best_outcome.plateau || o.delta < best_outcome.delta))) {
        best = i;
        best_outcome = o;
      }
    }
    if (best < 0) break;  // no copy lowers the predicted time
    state.Commit(moves.expert(best), moves.set(best));
    if (added != nullptr) *added += moves.set(best).size();
  }
  return out;
}

CalibrationResult Calibrate(const CostModel& cost, LayerId l, const LayerPlan& current,
                            const LoadMatrix& actual, const std::vector<int>& remaining_copies,
                            DispatchRule rule) {
  const Cluster& cluster = cost.cluster();
  const int devices = cluster.num_devices();
  CalibrationResult result;
  result.layer = current;
  Dispatcher dispatcher(cluster);
  const LayerPrediction before =
      cost.EvaluateLayer(l, current, actual, rule, ReplicaSemantics::kEphemeral, &dispatcher);
  result.before_seconds = before.total_seconds;
  result.after_seconds = before.total_seconds;

  GreedyBudget budget;
  budget.max_copies.assign(devices, 0);
  for (DeviceId d = 0; d < devices; ++d) {
    budget.max_copies[d] =
        current.ExtraCopiesOn(d) +
        (d < static_cast<int>(remaining_copies.size()) ? remaining_copies[d] : 0);
  }
  // The extra gather runs after the gate, on the critical path: nothing hides it.
  budget.attention_forward_seconds = 0;
  int added = 0;
  LayerPlan candidate = MaterializeGreedy(cost, l, current, actual, budget, &added);
  result.copies_added = added;
  if (added == 0) return result;

  // Only the new copies travel now, after the gate.
  LayerPlan extra;
  extra.owner = current.owner;
  extra.replicas.resize(current.num_experts());
  for (ExpertId e = 0; e < current.num_experts(); ++e) {
    extra.replicas[e].push_back(current.owner[e]);
    for (DeviceId d : candidate.replicas[e]) {
      if (!current.Holds(e, d)) InsertSorted(&extra.replicas[e], d);
    }
  }
  result.extra_spag_seconds = cost.SparseCollectiveSeconds(l, extra, nullptr);
  const LayerPrediction after =
      cost.EvaluateLayer(l, candidate, actual, rule, ReplicaSemantics::kEphemeral, &dispatcher);
  result.after_seconds = after.total_seconds + result.extra_spag_seconds;
  if (result.after_seconds < result.before_seconds) {
    result.accepted = true;
    result.layer = std::move(candidate);
  }
  return result;
}

}  // namespace hecate::placement
