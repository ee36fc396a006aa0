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

// Precondition: v (ascending) holds d.
void EraseSorted(std::vector<DeviceId>* v, DeviceId d) {
  v->erase(std::lower_bound(v->begin(), v->end(), d));
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
  void Remove(DeviceId from, DeviceId to, double bytes) {
    // The busiest link stays the busiest unless this transfer uses (one of) the busiest.
    const bool rescan = Touched(from, to) >= worst_;
    if (c_.same_node(from, to)) {
      out_intra_[from] -= bytes;
      in_intra_[to] -= bytes;
    } else {
      out_inter_[from] -= bytes;
      in_inter_[to] -= bytes;
      node_out_[c_.node_of(from)] -= bytes;
      node_in_[c_.node_of(to)] -= bytes;
    }
    if (rescan) worst_ = WithoutTransfer(from, to, 0);
  }
  // Time of the busiest link a transfer from -> to uses.
  double Touched(DeviceId from, DeviceId to) const {
    return c_.same_node(from, to)
               ? std::max(out_intra_[from], in_intra_[to]) / c_.intra_bw()
               : std::max(std::max(out_inter_[from], in_inter_[to]) / c_.device_nic_bw(),
                          std::max(node_out_[c_.node_of(from)], node_in_[c_.node_of(to)]) /
                              c_.inter_bw());
  }
  // Link time (without latency) after removing one transfer of `bytes` from -> to. Unchanged unless
  // a link the transfer uses is (one of) the busiest; then a full scan.
  double WithoutTransfer(DeviceId from, DeviceId to, double bytes) const {
    const bool intra = c_.same_node(from, to);
    if (bytes > 0 && Touched(from, to) < worst_) return worst_;
    double t = 0;
    for (DeviceId d = 0; d < c_.num_devices(); ++d) {
      double oi = out_intra_[d], ii = in_intra_[d], oe = out_inter_[d], ie = in_inter_[d];
      if (d == from) (intra ? oi : oe) -= bytes;
      if (d == to) (intra ? ii : ie) -= bytes;
      t = std::max(
          t, std::max(std::max(oi, ii) / c_.intra_bw(), std::max(oe, ie) / c_.device_nic_bw()));
    }
    for (NodeId n = 0; n < c_.num_nodes(); ++n) {
      double no = node_out_[n], ni = node_in_[n];
      if (!intra && n == c_.node_of(from)) no -= bytes;
      if (!intra && n == c_.node_of(to)) ni -= bytes;
      t = std::max(t, std::max(no, ni) / c_.inter_bw());
    }
    return t;
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
  GreedyState(const CostModel& cost, LayerId l, LayerPlan* plan, const LoadAggregate& load,
              const GreedyBudget& budget)
      : cluster_(cost.cluster()),
        plan_(*plan),
        devices_(cluster_.num_devices()),
        nodes_(cluster_.num_nodes()),
        experts_(plan->num_experts()),
        tree0_(cluster_),
        tree1_(cluster_) {
    const LayerSpec& spec = cost.model().layers[l];
    attention_ = budget.attention_forward_seconds >= 0 ? budget.attention_forward_seconds
                                                       : cost.attention_forward_seconds();
    regather_ = plan->remat == RematMode::kRegather;
    pb_ = static_cast<double>(spec.expert_param_bytes);
    a2a_sec_per_token_ = 4.0 * static_cast<double>(cost.model().token_bytes) / cluster_.inter_bw();
    copy_s_ = spec.copy_seconds;
    sec_per_token_.resize(devices_);
    for (DeviceId d = 0; d < devices_; ++d) {
      sec_per_token_[d] = 3.0 * spec.expert_flops_per_token / cluster_.flops(d);
    }
    mass_.assign(static_cast<size_t>(experts_) * nodes_, 0.0);
    node_holders_.assign(static_cast<size_t>(experts_) * nodes_, 0);
    remote_.assign(experts_, 0.0);
    for (NodeId n = 0; n < nodes_; ++n) {
      for (ExpertId e = 0; e < experts_; ++e)
        mass_[Idx(e, n)] = static_cast<double>(load.mass(n, e));
    }
    tokens_.assign(devices_, 0.0);
    copies_.assign(devices_, 0);
    left_.assign(devices_, 0);
    for (DeviceId d = 0; d < devices_; ++d) {
      left_[d] = d < static_cast<int>(budget.max_copies.size()) ? budget.max_copies[d] : 0;
    }
    node_in_.assign(nodes_, 0.0);
    node_out_.assign(nodes_, 0.0);
    relay_.assign(static_cast<size_t>(experts_) * nodes_, -1);
    holds_.assign(static_cast<size_t>(experts_) * devices_, 0);
    for (ExpertId e = 0; e < experts_; ++e) {
      for (DeviceId h : plan_.replicas[e]) ++node_holders_[Idx(e, cluster_.node_of(h))];
      for (NodeId n = 0; n < nodes_; ++n) {
        if (node_holders_[Idx(e, n)] == 0) {
          remote_[e] += mass_[Idx(e, n)];
          node_out_[n] += mass_[Idx(e, n)];
        }
      }
      const double k = static_cast<double>(plan_.replicas[e].size());
      for (NodeId n = 0; n < nodes_; ++n) node_in_[n] += remote_[e] * node_holders_[Idx(e, n)] / k;
      for (DeviceId h : plan_.replicas[e]) {
        holds_[static_cast<size_t>(h) * experts_ + e] = 1;
        tokens_[h] += Share(e, h);
        if (h != plan_.owner[e]) {
          --left_[h];
          ++copies_[h];
          AddCopyLinks(e, h);
        }
      }
    }
    stamp_.assign(devices_, -1);
    SortDevices();
    SortNodes();
  }

  // The spAG's link time: its two phases, one after the other.
  double TreeSeconds() const { return tree0_.worst() + tree1_.worst(); }
  // The same after `set` (devices of one node, ascending, without e) receives copies of e.
  double TreeSecondsWith(ExpertId e, const DeviceSpan& set) const {
    const DeviceId owner = plan_.owner[e];
    if (cluster_.same_node(owner, set[0])) {
      return tree0_.WithTransfers(owner, set, pb_) + tree1_.worst();
    }
    const DeviceId relay = relay_[Idx(e, cluster_.node_of(set[0]))];
    if (relay >= 0) return tree0_.worst() + tree1_.WithTransfers(relay, set, pb_);
    const DeviceSpan rest{set.first + 1, set.n - 1};
    return tree0_.WithTransfer(owner, set[0], pb_) +
           (rest.empty() ? tree1_.worst() : tree1_.WithTransfers(set[0], rest, pb_));
  }
  // The same after holder c (not the owner) drops its copy of e. A relay that leaves others on its
  // node hands over to one of them: counted as one transfer inside the node fewer.
  double TreeSecondsWithout(ExpertId e, DeviceId c) const {
    const DeviceId owner = plan_.owner[e];
    if (cluster_.same_node(owner, c)) {
      return tree0_.WithoutTransfer(owner, c, pb_) + tree1_.worst();
    }
    const DeviceId relay = relay_[Idx(e, cluster_.node_of(c))];
    if (relay != c) return tree0_.worst() + tree1_.WithoutTransfer(relay, c, pb_);
    const DeviceId next = NextRelay(e, c);
    if (next < 0) return tree0_.WithoutTransfer(owner, c, pb_) + tree1_.worst();
    return tree0_.worst() + tree1_.WithoutTransfer(c, next, pb_);
  }
  // Another holder of e on c's node than c (the lowest), or -1.
  DeviceId NextRelay(ExpertId e, DeviceId c) const {
    for (DeviceId x : plan_.replicas[e]) {
      if (x != c && x != plan_.owner[e] && cluster_.same_node(x, c)) return x;
    }
    return -1;
  }
  void AddCopyLinks(ExpertId e, DeviceId c) {
    const DeviceId owner = plan_.owner[e];
    if (cluster_.same_node(owner, c)) {
      tree0_.Add(owner, c, pb_);
      return;
    }
    DeviceId& relay = relay_[Idx(e, cluster_.node_of(c))];
    if (relay < 0) {
      relay = c;
      tree0_.Add(owner, c, pb_);
    } else {
      tree1_.Add(relay, c, pb_);
    }
  }
  void RemoveCopyLinks(ExpertId e, DeviceId c) {
    const DeviceId owner = plan_.owner[e];
    if (cluster_.same_node(owner, c)) {
      tree0_.Remove(owner, c, pb_);
      return;
    }
    DeviceId& relay = relay_[Idx(e, cluster_.node_of(c))];
    if (relay != c) {
      tree1_.Remove(relay, c, pb_);
      return;
    }
    const DeviceId next = NextRelay(e, c);
    tree0_.Remove(owner, c, pb_);
    relay = next;
    if (next < 0) return;
    tree0_.Add(owner, next, pb_);
    tree1_.Remove(c, next, pb_);
    for (DeviceId x : plan_.replicas[e]) {
      if (x == c || x == next || x == owner || !cluster_.same_node(x, c)) continue;
      tree1_.Remove(c, x, pb_);
      tree1_.Add(next, x, pb_);
    }
  }

  // Tokens of expert e that holder h computes.
  double Share(ExpertId e, DeviceId h) const {
    const NodeId n = cluster_.node_of(h);
    return mass_[Idx(e, n)] / node_holders_[Idx(e, n)] + remote_[e] / plan_.replicas[e].size();
  }
  // Compute time of device d: its tokens, plus the fixed cost of the copies it holds.
  double TimeOf(DeviceId d) const { return tokens_[d] * sec_per_token_[d] + Fixed(d); }
  double Fixed(DeviceId d) const { return copies_[d] * copy_s_; }
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
    return A2aSurrogate(node_key_[busiest_], node_total_, nodes_) * a2a_sec_per_token_;
  }
  // Refreshes the nodes' cross-node traffic keys after a commit: the keys, their total and the
  // busiest node (ties by id) in one pass (the same sums as from scratch). The full order
  // (busiest first) is only needed by Evaluate's walk, so it is brought up to date there
  // (SortedNodes): a run of removals (Prune) re-sorts nothing.
  void SortNodes() {
    const bool fresh = node_key_.size() != static_cast<size_t>(nodes_);
    node_key_.resize(nodes_);
    node_moved_.resize(nodes_, 0);
    node_total_ = 0;
    busiest_ = 0;
    for (NodeId n = 0; n < nodes_; ++n) {
      const double key = std::max(node_in_[n], node_out_[n]);
      if ((fresh || key != node_key_[n]) && !node_moved_[n]) {
        node_moved_[n] = 1;
        moved_nodes_.push_back(n);
      }
      node_key_[n] = key;
      node_total_ += node_in_[n] + node_out_[n];
      if (key > node_key_[busiest_]) busiest_ = n;
    }
    if (fresh) {
      node_order_.resize(nodes_);
      for (NodeId n = 0; n < nodes_; ++n) node_order_[n] = n;
    }
  }
  // Every node, busiest first (ties by id). Only the nodes whose key changed since the last call
  // are taken out, sorted and merged back, so a commit touching a few nodes costs a pass over the
  // nodes, not a sort of them.
  const std::vector<NodeId>& SortedNodes() {
    if (moved_nodes_.empty()) return node_order_;
    auto busier = [&](NodeId a, NodeId b) {
      return node_key_[a] != node_key_[b] ? node_key_[a] > node_key_[b] : a < b;
    };
    if (moved_nodes_.size() * 8 > static_cast<size_t>(nodes_)) {
      for (NodeId n : moved_nodes_) node_moved_[n] = 0;
      moved_nodes_.clear();
      for (NodeId n = 0; n < nodes_; ++n) node_order_[n] = n;
      std::sort(node_order_.begin(), node_order_.end(), busier);
      return node_order_;
    }
    node_rest_.clear();
    for (NodeId n : node_order_) {
      if (!node_moved_[n]) node_rest_.push_back(n);
    }
    for (NodeId n : moved_nodes_) node_moved_[n] = 0;
    std::sort(moved_nodes_.begin(), moved_nodes_.end(), busier);
    std::merge(node_rest_.begin(), node_rest_.end(), moved_nodes_.begin(), moved_nodes_.end(),
               node_order_.begin(), busier);
    moved_nodes_.clear();
    return node_order_;
  }
  // by_time_ orders every device slowest first (ties: lower id first): sorted once here, then
  // kept sorted as commits change device times (Touch).
  void SortDevices() {
    key_.resize(devices_);
    by_time_.resize(devices_);
    for (DeviceId d = 0; d < devices_; ++d) {
      key_[d] = TimeOf(d);
      by_time_[d] = d;
    }
    std::sort(by_time_.begin(), by_time_.end(),
              [&](DeviceId a, DeviceId b) { return Before(a, key_[a], b); });
    pos_.resize(devices_);
    for (int i = 0; i < devices_; ++i) pos_[by_time_[i]] = i;
  }
  // Whether device a with time ta sorts before device b (slower first, then lower id).
  bool Before(DeviceId a, double ta, DeviceId b) const {
    return ta != key_[b] ? ta > key_[b] : a < b;
  }
  // Re-sorts d after its tokens changed.
  void Touch(DeviceId d) {
    const double t = TimeOf(d);
    if (t == key_[d]) return;
    key_[d] = t;
    const int from = pos_[d];
    const auto at = by_time_.begin() + from;
    int lo = from, hi = from;
    if (from > 0 && Before(d, t, by_time_[from - 1])) {
      // Slower now: moves towards the front, before the first device it now sorts before.
      lo =
          static_cast<int>(std::partition_point(by_time_.begin(), at,
                                                [&](DeviceId x) { return Before(x, key_[x], d); }) -
                           by_time_.begin());
      std::rotate(by_time_.begin() + lo, at, at + 1);
    } else if (from + 1 < devices_ && Before(by_time_[from + 1], key_[by_time_[from + 1]], d)) {
      // Faster now: moves towards the back, after the last device that still sorts before it.
      hi =
          static_cast<int>(std::partition_point(at + 1, by_time_.end(),
                                                [&](DeviceId x) { return Before(x, key_[x], d); }) -
                           by_time_.begin()) -
          1;
      std::rotate(at, at + 1, by_time_.begin() + hi + 1);
    }
    for (int i = lo; i <= hi; ++i) pos_[by_time_[i]] = i;
  }
  DeviceId slowest() const { return by_time_[0]; }
  NodeId BottleneckNode() const { return busiest_; }
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
    auto feasible = [&](DeviceId d) {
      return left_[d] > 0 && !Holds(e, d) &&
             !(fresh_node_only && node_holders_[Idx(e, cluster_.node_of(d))] != 0);
    };
    // From the fast end of by_time_: the least time, and within its tie block (ids ascend to the
    // right) the lowest id.
    DeviceId best = -1;
    for (int i = devices_ - 1; i >= 0; --i) {
      const DeviceId d = by_time_[i];
      if (best >= 0 && key_[d] != key_[best]) break;
      if (feasible(d)) best = d;
    }
    return best;
  }
  bool Holds(ExpertId e, DeviceId d) const {
    return holds_[static_cast<size_t>(d) * experts_ + e] != 0;
  }
  bool NodeHolds(ExpertId e, NodeId n) const { return node_holders_[Idx(e, n)] > 0; }
  double Mass(ExpertId e, NodeId n) const { return mass_[Idx(e, n)]; }
  double Remote(ExpertId e) const { return remote_[e]; }
  // Experts d holds, ascending. The result lives until the next call.
  const std::vector<ExpertId>& Held(DeviceId d) {
    held_.clear();
    const char* row = holds_.data() + static_cast<size_t>(d) * experts_;
    for (ExpertId e = 0; e < experts_; ++e) {
      if (row[e]) held_.push_back(e);
    }
    return held_;
  }

  // The largest time among devices not stamped with the current generation.
  double UnaffectedMax() const {
    for (DeviceId d : by_time_) {
      // Sorted: the first unaffected device is the unaffected maximum.
      if (stamp_[d] != generation_) return TimeOf(d);
    }
    return 0.0;
  }
  // The largest time after adding copies of e, given `best` over the recomputed (stamped)
  // devices: walks the slowest devices first; unstamped holders of e get `after(h)` (never more
  // than their time now), anything else keeps its time, which bounds everything after it.
  template <typename After>
  double WalkMax(ExpertId e, double best, const After& after) const {
    for (DeviceId d : by_time_) {
      const double t = TimeOf(d);
      if (t <= best) return best;
      if (stamp_[d] == generation_) continue;
      if (!Holds(e, d)) return t;
      best = std::max(best, after(d) * sec_per_token_[d] + Fixed(d));
    }
    return best;
  }

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
    const int on_m = node_holders_[Idx(e, m)];
    const double remote_after = remote_[e] - (on_m == 0 ? mass_[Idx(e, m)] : 0.0);
    const double max_time = TimeOf(by_time_[0]);
    ++generation_;
    // Compute: the receivers and the holders on their node are recomputed; holders elsewhere only
    // lose part of their remote share, so they matter only where they are the slowest (walk).
    auto after = [&](DeviceId h) {
      const NodeId n = cluster_.node_of(h);
      const double own = n == m ? mass_[Idx(e, n)] / (node_holders_[Idx(e, n)] + r)
                                : mass_[Idx(e, n)] / node_holders_[Idx(e, n)];
      return tokens_[h] - Share(e, h) + own + remote_after / (k + r);
    };
    double new_max = 0;
    for (DeviceId c : set) {
      stamp_[c] = generation_;
      new_max =
          std::max(new_max, (tokens_[c] + mass_[Idx(e, m)] / (on_m + r) + remote_after / (k + r)) *
                                    sec_per_token_[c] +
                                Fixed(c) + copy_s_);
    }
    if (on_m > 0) {
      for (DeviceId h : cluster_.devices_of(m)) {
        if (!Holds(e, h)) continue;
        stamp_[h] = generation_;
        new_max = std::max(new_max, after(h) * sec_per_token_[h] + Fixed(h));
      }
    }
    new_max = WalkMax(e, new_max, after);
    // Cross-node All-to-All. Node m gains r holders (and, if it had none, stops sending); every
    // other node holding e receives delta less per holder (delta <= 0): only nodes that stay
    // busiest need a look, slowest first, and the total moves by a closed form.
    const double delta = remote_after / (k + r) - remote_[e] / k;
    const double in_m = node_in_[m] - remote_[e] * on_m / k + remote_after * (on_m + r) / (k + r);
    const double out_m = node_out_[m] - (on_m == 0 ? mass_[Idx(e, m)] : 0.0);
    double worst = std::max(in_m, out_m);
    for (NodeId n : SortedNodes()) {
      if (n == m) continue;
      if (node_key_[n] <= worst) break;
      const int h = node_holders_[Idx(e, n)];
      if (h == 0) {
        worst = node_key_[n];
        break;
      }
      worst = std::max(worst, std::max(node_in_[n] + h * delta, node_out_[n]));
    }
    const double total =
        node_total_ + delta * (k - on_m) + (in_m - node_in_[m]) + (out_m - node_out_[m]);
    const double a2a_after = A2aSurrogate(worst, total, nodes_) * a2a_sec_per_token_;
    const double exposed_now = Exposed(TreeSeconds());
    const double exposed_after = Exposed(TreeSecondsWith(e, set));
    const double a2a_now = A2a();
    Outcome o;
    o.delta = (new_max - max_time) + (a2a_after - a2a_now) + (exposed_after - exposed_now);
    const DeviceId slow = by_time_[0];
    const bool slow_lighter = Holds(e, slow) && after(slow) < tokens_[slow] - 1e-9;
    o.plateau = !(o.delta < -1e-12) && r == 1 && new_max <= max_time * (1 + 1e-12) &&
                a2a_after <= a2a_now * (1 + 1e-12) && exposed_after <= exposed_now + 1e-15 &&
                slow_lighter;
    return o;
  }

  // Predicted change of the layer time if non-owner holder c of e drops its copy.
  double EvaluateRemove(ExpertId e, DeviceId c) {
    const std::vector<DeviceId>& holders = plan_.replicas[e];
    const int k = static_cast<int>(holders.size());
    const NodeId m = cluster_.node_of(c);
    const int on_m = node_holders_[Idx(e, m)];
    const double remote_after = remote_[e] + (on_m == 1 ? mass_[Idx(e, m)] : 0.0);
    const double max_time = TimeOf(by_time_[0]);
    ++generation_;
    double new_max = 0;
    for (DeviceId h : holders) {
      stamp_[h] = generation_;
      const NodeId n = cluster_.node_of(h);
      double after = tokens_[h] - Share(e, h);
      if (h != c) {
        // n == m here implies on_m >= 2.
        after +=
            (n == m ? mass_[Idx(e, n)] / (on_m - 1) : mass_[Idx(e, n)] / node_holders_[Idx(e, n)]) +
            remote_after / (k - 1);
      }
      new_max = std::max(new_max, after * sec_per_token_[h] + Fixed(h) - (h == c ? copy_s_ : 0.0));
    }
    new_max = std::max(new_max, UnaffectedMax());
    double worst = 0, total = 0;
    for (NodeId n = 0; n < nodes_; ++n) {
      const int h_before = node_holders_[Idx(e, n)];
      const int h_after = h_before - (n == m ? 1 : 0);
      const double in = node_in_[n] - remote_[e] * h_before / k + remote_after * h_after / (k - 1);
      const double out = node_out_[n] + (n == m && on_m == 1 ? mass_[Idx(e, m)] : 0.0);
      worst = std::max(worst, std::max(in, out));
      total += in + out;
    }
    const double a2a_after = A2aSurrogate(worst, total, nodes_) * a2a_sec_per_token_;
    const double exposed_now = Exposed(TreeSeconds());
    // Dropping a transfer never exposes more; when nothing is exposed now, nothing changes.
    const double exposed_after = exposed_now > 0 ? Exposed(TreeSecondsWithout(e, c)) : 0.0;
    return (new_max - max_time) + (a2a_after - A2a()) + (exposed_after - exposed_now);
  }

  void CommitRemove(ExpertId e, DeviceId c) {
    std::vector<DeviceId>& holders = plan_.replicas[e];
    const double k = static_cast<double>(holders.size());
    const NodeId m = cluster_.node_of(c);
    for (NodeId n = 0; n < nodes_; ++n) node_in_[n] -= remote_[e] * node_holders_[Idx(e, n)] / k;
    for (DeviceId h : holders) tokens_[h] -= Share(e, h);
    if (--node_holders_[Idx(e, m)] == 0) {
      remote_[e] += mass_[Idx(e, m)];
      node_out_[m] += mass_[Idx(e, m)];
    }
    holders.erase(std::find(holders.begin(), holders.end(), c));
    const double k_after = static_cast<double>(holders.size());
    for (NodeId n = 0; n < nodes_; ++n)
      node_in_[n] += remote_[e] * node_holders_[Idx(e, n)] / k_after;
    for (DeviceId h : holders) tokens_[h] += Share(e, h);
    holds_[static_cast<size_t>(c) * experts_ + e] = 0;
    ++left_[c];
    --copies_[c];
    RemoveCopyLinks(e, c);
    for (DeviceId h : holders) Touch(h);
    Touch(c);
    SortNodes();
  }

  // The k non-owner copies that take the least compute off their holder (share x seconds per
  // token), least first, ties by (expert, device): the ones worth trying to drop.
  void LeastUseful(int k, std::vector<std::pair<ExpertId, DeviceId>>* out) {
    scored_.clear();
    for (ExpertId e = 0; e < experts_; ++e) {
      for (DeviceId c : plan_.replicas[e]) {
        if (c != plan_.owner[e]) scored_.push_back({Share(e, c) * sec_per_token_[c], {e, c}});
      }
    }
    const size_t keep = std::min<size_t>(scored_.size(), static_cast<size_t>(k));
    std::partial_sort(scored_.begin(), scored_.begin() + keep, scored_.end());
    out->clear();
    for (size_t i = 0; i < keep; ++i) out->push_back(scored_[i].second);
  }

  // The greedy's objective for the layer as it stands (for relative thresholds).
  double Objective() const { return TimeOf(by_time_[0]) + A2a() + Exposed(TreeSeconds()); }

  void Commit(ExpertId e, const DeviceSpan& set) {
    std::vector<DeviceId>& holders = plan_.replicas[e];
    const double k = static_cast<double>(holders.size());
    const NodeId m = cluster_.node_of(set[0]);
    for (NodeId n = 0; n < nodes_; ++n) node_in_[n] -= remote_[e] * node_holders_[Idx(e, n)] / k;
    for (DeviceId h : holders) tokens_[h] -= Share(e, h);
    if (node_holders_[Idx(e, m)] == 0) {
      remote_[e] -= mass_[Idx(e, m)];
      node_out_[m] -= mass_[Idx(e, m)];
    }
    node_holders_[Idx(e, m)] += static_cast<int>(set.size());
    for (DeviceId c : set) InsertSorted(&holders, c);
    const double k_after = static_cast<double>(holders.size());
    for (NodeId n = 0; n < nodes_; ++n)
      node_in_[n] += remote_[e] * node_holders_[Idx(e, n)] / k_after;
    for (DeviceId h : holders) tokens_[h] += Share(e, h);
    for (DeviceId c : set) {
      holds_[static_cast<size_t>(c) * experts_ + e] = 1;
      --left_[c];
      ++copies_[c];
      AddCopyLinks(e, c);
    }
    for (DeviceId h : holders) Touch(h);
    SortNodes();
  }

 private:
  const Cluster& cluster_;
  LayerPlan& plan_;
  const int devices_, nodes_, experts_;
  // The spAG's relay tree (placement/sparse_tree.h), phase by phase: owner -> its node's holders
  // and one relay per other node (tree0_), relays -> their node's other holders (tree1_). The
  // greedy's relay of a node is the first holder placed there (the data plane's is the lowest id:
  // the same links between nodes, a different device inside one).
  LinkState tree0_, tree1_;
  std::vector<DeviceId> relay_;  // [expert * nodes + node], -1: none (and on the owner's node)
  double attention_ = 0, pb_ = 0, a2a_sec_per_token_ = 0, copy_s_ = 0;
  bool regather_ = false;
  std::vector<double> sec_per_token_;
  size_t Idx(ExpertId e, NodeId n) const { return static_cast<size_t>(e) * nodes_ + n; }
  std::vector<double> mass_;                     // [expert * nodes + node] tokens
  std::vector<int> node_holders_;                // [expert * nodes + node] holders
  std::vector<double> remote_;                   // tokens of nodes without a holder
  std::vector<double> tokens_;                   // per device
  std::vector<int> copies_;                      // non-owner copies per device
  std::vector<double> node_in_, node_out_;       // cross-node tokens per node
  std::vector<double> node_key_;                 // max(in, out) per node
  std::vector<NodeId> node_order_;               // nodes, busiest first (SortedNodes)
  NodeId busiest_ = 0;                           // node_order_[0] once sorted
  std::vector<NodeId> moved_nodes_, node_rest_;  // SortNodes scratch
  std::vector<char> node_moved_;
  double node_total_ = 0;       // sum of in + out over nodes
  std::vector<ExpertId> held_;  // Held's result
  std::vector<int> left_;
  std::vector<DeviceId> by_time_;  // every device, slowest first
  std::vector<double> key_;        // time each device is sorted by
  std::vector<int> pos_;           // index of each device in by_time_
  std::vector<char> holds_;        // [device * experts + expert]: holds a copy
  std::vector<DeviceId> receivers_;
  std::vector<std::pair<double, std::pair<ExpertId, DeviceId>>> scored_;
  std::vector<int> stamp_;
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

namespace {

// One step of the greedy: the candidate moves and the best of them (per copy); index -1 when no
// move lowers the predicted time (or ties it on a plateau).
struct AddStep {
  int index = -1;
  GreedyState::Outcome outcome;  // delta per copy
  double total_delta = 0;        // delta of the whole move
};

class Greedy {
 public:
  Greedy(const CostModel& cost, GreedyState* state, const LayerPlan* plan)
      : cost_(cost), state_(*state), out_(*plan), devices_(cost.cluster().num_devices()) {}

  // Sorts the devices and builds this step's moves: relieve the slowest device (compute), and
  // unload the node whose NIC carries the most All-to-All traffic.
  AddStep Find() {
    constexpr int kExpertsPerClass = 3;
    auto by_weight = [](const std::pair<double, ExpertId>& a,
                        const std::pair<double, ExpertId>& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    };
    GreedyState& state = state_;
    const LayerPlan& out = out_;
    const CostModel& cost = cost_;
    const int devices = devices_;
    moves_.Clear();
    {
      const DeviceId slow = state.slowest();
      ranked_.clear();
      for (ExpertId e : state.Held(slow)) {
        if (static_cast<int>(out.replicas[e].size()) < devices && state.Share(e, slow) > 0) {
          ranked_.push_back({state.Share(e, slow), e});
        }
      }
      std::sort(ranked_.begin(), ranked_.end(), by_weight);
      if (static_cast<int>(ranked_.size()) > kExpertsPerClass) ranked_.resize(kExpertsPerClass);
      for (const auto& [share, e] : ranked_) {
        moves_.StartExpert();
        const DeviceId any = state.LeastLoadedReceiver(e, false);
        if (any >= 0) moves_.Add(e, &any, 1);
        const std::vector<DeviceId>& near =
            state.Receivers(e, cost.cluster().node_of(out.owner[e]));
        if (!near.empty()) moves_.Add(e, near.data(), 1);
        const DeviceId fresh = state.LeastLoadedReceiver(e, true);
        if (fresh >= 0) moves_.AddOptions(e, state.Receivers(e, cost.cluster().node_of(fresh)));
      }
    }
    {
      const NodeId b = state.BottleneckNode();
      ranked_.clear();
      const bool outbound = state.OutBound(b);
      for (ExpertId e = 0; e < out.num_experts(); ++e) {
        if (static_cast<int>(out.replicas[e].size()) >= devices) continue;
        const double f = outbound ? (state.NodeHolds(e, b) ? 0.0 : state.Mass(e, b))
                                  : (state.NodeHolds(e, b) ? state.Remote(e) : 0.0);
        if (f > 0) ranked_.push_back({f, e});
      }
      const size_t keep = std::min<size_t>(ranked_.size(), kExpertsPerClass);
      std::partial_sort(ranked_.begin(), ranked_.begin() + keep, ranked_.end(), by_weight);
      ranked_.resize(keep);
      for (const auto& [flow, e] : ranked_) {
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
        moves_.StartExpert();
        moves_.AddOptions(e, state.Receivers(e, target));
      }
    }
    AddStep best;
    for (int i = 0; i < moves_.size(); ++i) {
      // Judge per copy, so a bigger set must earn its extra copies.
      GreedyState::Outcome o = state.Evaluate(moves_.expert(i), moves_.set(i));
      const double total = o.delta;
      o.delta /= static_cast<double>(moves_.set(i).size());
      const bool improves = o.delta < -1e-12;
      if (!improves && !o.plateau) continue;
      if (best.index < 0 || (improves && (best.outcome.plateau || o.delta < best.outcome.delta))) {
        best.index = i;
        best.outcome = o;
        best.total_delta = total;
      }
    }
    return best;
  }
  void Take(const AddStep& step) {
    state_.Commit(moves_.expert(step.index), moves_.set(step.index));
    added_ += moves_.set(step.index).size();
  }
  // Adds copies while some move lowers the predicted time.
  void AddAll() {
    for (;;) {
      const AddStep step = Find();
      if (step.index < 0) return;
      Take(step);
    }
  }
  int added() const { return added_; }

 private:
  const CostModel& cost_;
  GreedyState& state_;
  const LayerPlan& out_;
  const int devices_;
  MoveList moves_;
  std::vector<std::pair<double, ExpertId>> ranked_;
  int added_ = 0;
};

// How many of the least useful copies a warm start re-examines per round.
constexpr int kDropCandidates = 8;
// How many of them a swap tries before giving up.
constexpr int kSwapTries = 3;

// Drops copies (of a warm start) that no longer lower the predicted time: among the least useful
// ones, round after round.
void Prune(GreedyState* state, double keep_gain) {
  std::vector<std::pair<ExpertId, DeviceId>> candidates;
  for (bool dropped = true; dropped;) {
    dropped = false;
    const double threshold = keep_gain * state->Objective() - 1e-12;
    state->LeastUseful(kDropCandidates, &candidates);
    for (const auto& [e, c] : candidates) {
      if (state->EvaluateRemove(e, c) < threshold) {
        state->CommitRemove(e, c);
        dropped = true;
      }
    }
  }
}

}  // namespace

LayerPlan MaterializeGreedy(const CostModel& cost, LayerId l, const LayerPlan& base,
                            const LoadMatrix& load, const GreedyBudget& budget, int* added,
                            const LoadAggregate* aggregate) {
  LayerPlan out;
  out.owner = base.owner;
  out.remat = base.remat;
  out.replicas = base.replicas;
  if (added != nullptr) *added = 0;
  LoadAggregate computed;
  if (aggregate == nullptr) {
    computed = LoadAggregate::Of(load, cost.cluster());
    aggregate = &computed;
  }
  GreedyState state(cost, l, &out, *aggregate, budget);
  Greedy greedy(cost, &state, &out);
  if (budget.revise) Prune(&state, budget.keep_gain);
  greedy.AddAll();
  if (budget.revise) {
    std::vector<std::pair<ExpertId, DeviceId>> candidates;
    std::vector<std::pair<double, int>> drops;  // (predicted change, index in candidates)
    for (int swap = 0; swap < budget.max_swaps; ++swap) {
      // Drop one of the least useful copies and take the best move; keep both only if that pays.
      // The drops that cost least are tried first, a few of them (the freed slot may not suit).
      const double threshold = -budget.swap_gain * state.Objective();
      state.LeastUseful(kDropCandidates, &candidates);
      drops.clear();
      for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
        drops.push_back({state.EvaluateRemove(candidates[i].first, candidates[i].second), i});
      }
      std::sort(drops.begin(), drops.end());
      bool swapped = false;
      for (int t = 0; t < std::min<int>(kSwapTries, drops.size()) && !swapped; ++t) {
        const auto [e, c] = candidates[drops[t].second];
        state.CommitRemove(e, c);
        if (drops[t].first < threshold) {
          swapped = true;  // the drop alone pays
          break;
        }
        const AddStep step = greedy.Find();
        if (step.index >= 0 && drops[t].first + step.total_delta < threshold) {
          greedy.Take(step);
          swapped = true;
        } else {
          const DeviceId back[] = {c};
          state.Commit(e, DeviceSpan{back, 1});
        }
      }
      if (!swapped) break;
      greedy.AddAll();
    }
  }
  if (added != nullptr) *added = greedy.added();
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
      InsertSorted(&out.replicas[e], best);
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

// Experts of the busiest device a repair move tries (the heaviest per holder): two keep the
// balance table's quality at half the evaluations of all of them (measured, docs/placement.md).
constexpr size_t kRepairExperts = 2;

namespace {

// Tokens above target x mean, summed over devices, as a fraction of all tokens.
double ExcessOver(const LayerPrediction& p, double target) {
  if (p.mean_tokens <= 0) return 0.0;
  const double bound = target * p.mean_tokens;
  double sum = 0;
  for (double t : p.device_tokens) sum += std::max(0.0, t - bound);
  return sum / (p.mean_tokens * static_cast<double>(p.device_tokens.size()));
}

// The kRepairExperts experts `d` holds with the most tokens per holder, as (-tokens per holder,
// expert), heaviest first (ties: lower id).
void HeaviestPerHolder(const LayerPlan& layer, const LoadAggregate& aggregate, DeviceId d,
                       std::vector<std::pair<double, ExpertId>>* heavy) {
  heavy->clear();
  for (ExpertId e = 0; e < layer.num_experts(); ++e) {
    if (std::binary_search(layer.replicas[e].begin(), layer.replicas[e].end(), d)) {
      heavy->push_back({-static_cast<double>(aggregate.expert_total[e]) /
                            static_cast<double>(layer.replicas[e].size()),
                        e});
    }
  }
  const size_t keep = std::min<size_t>(heavy->size(), kRepairExperts);
  std::partial_sort(heavy->begin(), heavy->begin() + keep, heavy->end());
  heavy->resize(keep);
}

}  // namespace

int RepairLayer(const CostModel& cost, LayerId l, const LoadMatrix& load,
                const LoadAggregate& aggregate, DispatchRule rule,
                const std::vector<int>& max_copies, int moves, int candidates, LayerPlan* layer) {
  const Cluster& cluster = cost.cluster();
  const int devices = cluster.num_devices();
  const int experts = layer->num_experts();
  Dispatcher dispatcher(cluster);
  auto evaluate = [&]() {
    return cost.EvaluateLayer(l, *layer, load, rule, ReplicaSemantics::kEphemeral, &dispatcher,
                              &aggregate);
  };
  auto holds = [&](ExpertId e, DeviceId d) {
    return std::binary_search(layer->replicas[e].begin(), layer->replicas[e].end(), d);
  };
  auto add = [&](ExpertId e, DeviceId d) { InsertSorted(&layer->replicas[e], d); };
  auto drop = [&](ExpertId e, DeviceId d) { EraseSorted(&layer->replicas[e], d); };
  std::vector<int> extra = layer->ExtraCopies(devices);
  std::vector<DeviceId> order;
  std::vector<std::pair<double, ExpertId>> heavy;
  int made = 0;
  for (; made < moves; ++made) {
    const LayerPrediction now = evaluate();
    const DeviceId busiest =
        static_cast<DeviceId>(std::max_element(now.device_tokens.begin(), now.device_tokens.end()) -
                              now.device_tokens.begin());
    struct Move {
      ExpertId e = -1;
      DeviceId d = -1;
      ExpertId out = -1;  // the copy swapped out of d, or -1
      double max_tokens = 0, seconds = 0;
    } best;
    best.max_tokens = now.max_tokens;
    best.seconds = now.total_seconds;
    auto consider = [&](ExpertId e, DeviceId d, ExpertId out) {
      const LayerPrediction p = evaluate();
      // Never slower; strictly below the best so far in (maximum, time), which starts as the
      // layer now, so every move makes progress and the repair ends.
      if (p.total_seconds > now.total_seconds) return;
      if (p.max_tokens < best.max_tokens ||
          (p.max_tokens == best.max_tokens && p.total_seconds < best.seconds)) {
        best = Move{e, d, out, p.max_tokens, p.total_seconds};
      }
    };
    // The busiest device's two experts with the most tokens per holder (ties: lower id).
    HeaviestPerHolder(*layer, aggregate, busiest, &heavy);
    for (const auto& [per_holder, e] : heavy) {
      order.clear();
      for (DeviceId d = 0; d < devices; ++d) {
        if (!holds(e, d)) order.push_back(d);
      }
      const size_t k = std::min<size_t>(order.size(), static_cast<size_t>(candidates));
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](DeviceId a, DeviceId b) {
        return now.device_tokens[a] != now.device_tokens[b]
                   ? now.device_tokens[a] < now.device_tokens[b]
                   : a < b;
      });
      for (size_t i = 0; i < k; ++i) {
        const DeviceId d = order[i];
        const int budget = d < static_cast<int>(max_copies.size()) ? max_copies[d] : 0;
        if (extra[d] < budget) {
          add(e, d);
          consider(e, d, -1);
          drop(e, d);
          continue;
        }
        for (ExpertId x = 0; x < experts; ++x) {
          if (x == e || layer->owner[x] == d || !holds(x, d)) continue;
          drop(x, d);
          add(e, d);
          consider(e, d, x);
          drop(e, d);
          add(x, d);
        }
      }
    }
    if (best.e < 0) break;
    if (best.out >= 0) {
      drop(best.out, best.d);
    } else {
      ++extra[best.d];
    }
    add(best.e, best.d);
  }
  return made;
}

// Overloaded devices a balance move starts from: the busiest one of each node, at most this many
// (busiest first).
constexpr size_t kBalanceSources = 4;
// Copies of a full receiver a balance move may swap out: its least useful ones.
constexpr size_t kBalanceSwaps = 2;

int BalanceLayer(const CostModel& cost, LayerId l, const LoadMatrix& load,
                 const LoadAggregate& aggregate, DispatchRule rule,
                 const std::vector<int>& max_copies, double target, double budget, int moves,
                 int candidates, int64_t max_evaluations, LayerPlan* layer) {
  const Cluster& cluster = cost.cluster();
  const int devices = cluster.num_devices();
  const int experts = layer->num_experts();
  Dispatcher dispatcher(cluster);
  int64_t evaluations = 0;
  auto evaluate = [&]() {
    ++evaluations;
    return cost.EvaluateLayer(l, *layer, load, rule, ReplicaSemantics::kEphemeral, &dispatcher,
                              &aggregate);
  };
  auto spent = [&]() { return max_evaluations > 0 && evaluations >= max_evaluations; };
  auto holds = [&](ExpertId e, DeviceId d) {
    return std::binary_search(layer->replicas[e].begin(), layer->replicas[e].end(), d);
  };
  auto add = [&](ExpertId e, DeviceId d) { InsertSorted(&layer->replicas[e], d); };
  auto drop = [&](ExpertId e, DeviceId d) { EraseSorted(&layer->replicas[e], d); };
  auto slots = [&](DeviceId d) {
    return d < static_cast<int>(max_copies.size()) ? max_copies[d] : 0;
  };
  auto excess = [&](const LayerPrediction& p) { return ExcessOver(p, target); };
  // A device's (at most kBalanceSwaps) copies with the fewest tokens per holder, other than
  // `keep`: what a swap or an exchange gives up.
  std::vector<std::pair<double, ExpertId>> useful;
  auto least_useful = [&](DeviceId d, ExpertId keep) {
    useful.clear();
    for (ExpertId x = 0; x < experts; ++x) {
      if (x == keep || layer->owner[x] == d || !holds(x, d)) continue;
      useful.push_back({static_cast<double>(aggregate.expert_total[x]) /
                            static_cast<double>(layer->replicas[x].size()),
                        x});
    }
    const size_t k = std::min(useful.size(), kBalanceSwaps);
    std::partial_sort(useful.begin(), useful.begin() + k, useful.end());
    std::vector<ExpertId> out;
    for (size_t i = 0; i < k; ++i) out.push_back(useful[i].second);
    return out;
  };
  std::vector<int> extra = layer->ExtraCopies(devices);
  std::vector<DeviceId> sources, order;
  std::vector<std::pair<double, ExpertId>> heavy;
  int made = 0;
  double max_seconds = 0;  // (1 + budget) x the layer's time before the pass
  for (; made < moves && !spent(); ++made) {
    const LayerPrediction now = evaluate();
    if (made == 0) max_seconds = now.total_seconds * (1 + std::max(0.0, budget));
    const double excess_now = excess(now);
    if (excess_now <= 0) break;
    // A move's score: moves that are not slower first, by excess removed; then excess removed
    // per second added. Moves over max_seconds or removing nothing do not count.
    struct Move {
      ExpertId e = -1;
      DeviceId d = -1;
      ExpertId out = -1;   // the copy swapped out of d, or -1
      DeviceId from = -1;  // exchange: e moves from `from` to d and `out` from d to `from`
      bool free = false;
      double score = 0;
    } best;
    auto consider = [&](ExpertId e, DeviceId d, ExpertId out, DeviceId from) {
      if (spent()) return;
      const LayerPrediction p = evaluate();
      if (p.total_seconds > max_seconds) return;
      const double gain = excess_now - excess(p);
      if (gain <= 0) return;
      const double added = p.total_seconds - now.total_seconds;
      const bool free = added <= 0;
      const double score = free ? gain : gain / added;
      if (best.e < 0 || free > best.free || (free == best.free && score > best.score)) {
        best = Move{e, d, out, from, free, score};
      }
    };
    const double bound = target * now.mean_tokens;
    sources.assign(cluster.num_nodes(), -1);
    for (DeviceId d = 0; d < devices; ++d) {
      if (now.device_tokens[d] <= bound) continue;
      DeviceId& s = sources[cluster.node_of(d)];
      if (s < 0 || now.device_tokens[d] > now.device_tokens[s]) s = d;
    }
    sources.erase(std::remove(sources.begin(), sources.end(), -1), sources.end());
    auto busier = [&](DeviceId a, DeviceId b) {
      return now.device_tokens[a] != now.device_tokens[b]
                 ? now.device_tokens[a] > now.device_tokens[b]
                 : a < b;
    };
    std::sort(sources.begin(), sources.end(), busier);
    if (sources.size() > kBalanceSources) sources.resize(kBalanceSources);
    for (const DeviceId src : sources) {
      // Copies of its two experts with the most tokens per holder on its node's devices (into a
      // free slot, or swapped for a copy there) or into a free slot anywhere; least loaded first.
      HeaviestPerHolder(*layer, aggregate, src, &heavy);
      for (const auto& [per_holder, e] : heavy) {
        order.clear();
        for (DeviceId d = 0; d < devices; ++d) {
          if (!holds(e, d) && (cluster.same_node(d, src) || extra[d] < slots(d))) {
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
          if (extra[d] < slots(d)) {
            add(e, d);
            consider(e, d, -1, -1);
            drop(e, d);
            continue;
          }
          for (const ExpertId x : least_useful(d, e)) {
            drop(x, d);
            add(e, d);
            consider(e, d, x, -1);
            drop(e, d);
            add(x, d);
          }
        }
      }
      // Exchanges: one of its copies for a copy another device of its node holds (the node keeps
      // its copies, so its cross-node traffic barely changes).
      for (const auto& [per_holder, x] : heavy) {
        if (layer->owner[x] == src) continue;
        for (DeviceId d : cluster.devices_of(cluster.node_of(src))) {
          if (d == src || holds(x, d)) continue;
          for (const ExpertId y : least_useful(d, x)) {
            if (holds(y, src)) continue;
            drop(x, src);
            drop(y, d);
            add(y, src);
            add(x, d);
            consider(x, d, y, src);
            drop(y, src);
            drop(x, d);
            add(x, src);
            add(y, d);
          }
        }
      }
    }
    if (best.e < 0) break;
    if (best.from >= 0) {
      drop(best.e, best.from);
      drop(best.out, best.d);
      add(best.out, best.from);
    } else if (best.out >= 0) {
      drop(best.out, best.d);
    } else {
      ++extra[best.d];
    }
    add(best.e, best.d);
  }
  return made;
}

namespace {

// LateCopies into `late` (reusing its buffers); returns whether there is any.
bool FillLateCopies(const LayerPlan& planned, const LayerPlan& calibrated, LayerPlan* late) {
  bool any = false;
  late->owner = calibrated.owner;
  late->replicas.resize(calibrated.num_experts());
  for (ExpertId e = 0; e < calibrated.num_experts(); ++e) {
    late->replicas[e].assign(1, calibrated.owner[e]);
    for (DeviceId d : calibrated.replicas[e]) {
      if (!planned.Holds(e, d)) {
        InsertSorted(&late->replicas[e], d);
        any = true;
      }
    }
  }
  return any;
}

}  // namespace

LayerPlan LateCopies(const LayerPlan& planned, const LayerPlan& calibrated) {
  LayerPlan late;
  FillLateCopies(planned, calibrated, &late);
  return late;
}

CalibrationResult Calibrate(const CostModel& cost, LayerId l, const LayerPlan& current,
                            const LoadMatrix& actual, const std::vector<int>& remaining_copies,
                            DispatchRule rule, const CalibrationOptions& options) {
  const Cluster& cluster = cost.cluster();
  const int devices = cluster.num_devices();
  const int experts = current.num_experts();
  CalibrationResult result;
  result.layer = current;
  // The plan's copies plus the free slots calibration may fill, per device.
  std::vector<int> max_copies = current.ExtraCopies(devices);
  bool free_memory = false;
  for (DeviceId d = 0; d < devices && d < static_cast<int>(remaining_copies.size()); ++d) {
    max_copies[d] += remaining_copies[d];
    free_memory |= remaining_copies[d] > 0;
  }
  const int64_t cells = static_cast<int64_t>(devices) * std::max(experts, 1);
  const bool swaps = options.swap_cell_budget / cells >= kMinCalibrationEvaluations;
  if (!free_memory && !swaps) return result;  // nothing it could change: no evaluation spent
  Dispatcher dispatcher(cluster);
  const LoadAggregate aggregate = LoadAggregate::Of(actual, cluster);
  auto evaluate = [&](const LayerPlan& layer) {
    ++result.evaluations;
    return cost.EvaluateLayer(l, layer, actual, rule, ReplicaSemantics::kEphemeral, &dispatcher,
                              &aggregate);
  };
  // The copies `layer` holds that `current` does not travel after the gate, on the critical
  // path: nothing hides their gather.
  LayerPlan extra;
  auto late_seconds = [&](const LayerPlan& layer, int64_t* bytes = nullptr) {
    return FillLateCopies(current, layer, &extra) ? cost.SparseCollectiveSeconds(l, extra, bytes)
                                                  : 0.0;
  };
  auto excess = [&](const LayerPrediction& p) { return ExcessOver(p, options.target); };
  const LayerPrediction before = evaluate(current);
  result.before_seconds = before.total_seconds;
  result.after_seconds = before.total_seconds;

  GreedyBudget budget;
  budget.max_copies = max_copies;
  // The extra gather runs after the gate, on the critical path: nothing hides it.
  budget.attention_forward_seconds = 0;
  int added = 0;
  LayerPlan candidate =
      free_memory ? MaterializeGreedy(cost, l, current, actual, budget, &added, &aggregate)
                  : current;
  LayerPrediction now = added > 0 ? evaluate(candidate) : before;
  double now_seconds = now.total_seconds + late_seconds(candidate);
  if (now_seconds >= before.total_seconds) {
    candidate = current;
    now = before;
    now_seconds = before.total_seconds;
  }

  // Swaps: first improvement -- the first move (in the order below) that takes tokens off
  // the devices over the target without making the layer slower than it was before
  // calibration. For the busiest devices over the target (at most kBalanceSources), their
  // kRepairExperts experts with the most tokens per holder go to the least loaded devices of
  // their node, then elsewhere (`candidates` each): into a free slot, or in place of the
  // receiver's least useful copy (fewest tokens per holder; never an owner's).
  const int64_t swap_evaluations = result.evaluations + options.swap_cell_budget / cells;
  if (swaps) {
    std::vector<int> copies = candidate.ExtraCopies(devices);
    std::vector<DeviceId> sources, order, near, far;
    std::vector<std::pair<double, ExpertId>> heavy;
    auto per_holder = [&](ExpertId x) {
      return static_cast<double>(aggregate.expert_total[x]) /
             static_cast<double>(candidate.replicas[x].size());
    };
    double excess_now = excess(now);
    while (excess_now > 0 && result.evaluations < swap_evaluations) {
      const double bound = options.target * now.mean_tokens;
      sources.clear();
      for (DeviceId d = 0; d < devices; ++d) {
        if (now.device_tokens[d] > bound) sources.push_back(d);
      }
      auto busier = [&](DeviceId a, DeviceId b) {
        return now.device_tokens[a] != now.device_tokens[b]
                   ? now.device_tokens[a] > now.device_tokens[b]
                   : a < b;
      };
      auto lighter = [&](DeviceId a, DeviceId b) {
        return now.device_tokens[a] != now.device_tokens[b]
                   ? now.device_tokens[a] < now.device_tokens[b]
                   : a < b;
      };
      std::sort(sources.begin(), sources.end(), busier);
      if (sources.size() > kBalanceSources) sources.resize(kBalanceSources);
      bool moved = false;
      for (size_t si = 0; si < sources.size() && !moved; ++si) {
        const DeviceId src = sources[si];
        HeaviestPerHolder(candidate, aggregate, src, &heavy);
        for (size_t hi = 0; hi < heavy.size() && !moved; ++hi) {
          const ExpertId e = heavy[hi].second;
          near.clear();
          far.clear();
          for (DeviceId d = 0; d < devices; ++d) {
            if (candidate.Holds(e, d) || now.device_tokens[d] >= bound) continue;
            (cluster.same_node(d, src) ? near : far).push_back(d);
          }
          order.clear();
          for (std::vector<DeviceId>* group : {&near, &far}) {
            const size_t k = std::min<size_t>(group->size(), options.candidates);
            std::partial_sort(group->begin(), group->begin() + k, group->end(), lighter);
            order.insert(order.end(), group->begin(), group->begin() + k);
          }
          for (size_t oi = 0; oi < order.size() && !moved; ++oi) {
            if (result.evaluations >= swap_evaluations) break;
            const DeviceId d = order[oi];
            ExpertId out = -1;
            if (copies[d] >= max_copies[d]) {
              double least = per_holder(e);
              for (ExpertId x = 0; x < experts; ++x) {
                if (x == e || candidate.owner[x] == d || !candidate.Holds(x, d)) continue;
                if (per_holder(x) < least) {
                  least = per_holder(x);
                  out = x;
                }
              }
              if (out < 0) continue;
              EraseSorted(&candidate.replicas[out], d);
            }
            InsertSorted(&candidate.replicas[e], d);
            const LayerPrediction p = evaluate(candidate);
            const double gain = excess_now - excess(p);
            // The late gather is only costed for a move that could be kept without it.
            bool keep = gain > 1e-9 && p.total_seconds <= before.total_seconds;
            double seconds = 0;
            if (keep) {
              seconds = p.total_seconds + late_seconds(candidate);
              keep = seconds <= before.total_seconds;
            }
            if (keep) {
              moved = true;
              now = p;
              now_seconds = seconds;
              excess_now -= gain;
              if (out < 0) ++copies[d];
            } else {
              EraseSorted(&candidate.replicas[e], d);
              if (out >= 0) InsertSorted(&candidate.replicas[out], d);
            }
          }
        }
      }
      if (!moved) break;
    }
  }

  for (ExpertId e = 0; e < experts; ++e) {
    for (DeviceId d : candidate.replicas[e]) result.copies_added += current.Holds(e, d) ? 0 : 1;
    for (DeviceId d : current.replicas[e]) result.copies_dropped += candidate.Holds(e, d) ? 0 : 1;
  }
  if (result.copies_added == 0 && result.copies_dropped == 0) return result;
  result.extra_spag_seconds = late_seconds(candidate, &result.extra_spag_bytes);
  result.after_seconds = now_seconds;
  if (now_seconds < before.total_seconds) {
    result.accepted = true;
    result.layer = std::move(candidate);
  } else {
    result.copies_added = 0;
    result.copies_dropped = 0;
    result.extra_spag_seconds = 0;
    result.extra_spag_bytes = 0;
  }
  return result;
}

}  // namespace hecate::placement
