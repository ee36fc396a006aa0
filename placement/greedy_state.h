// Internal to the greedy (placement/greedy.cc): its running estimate of one layer under the
// load-aware dispatch, updated move by move instead of re-evaluating the layer. Each term is the
// cost model's (CostModel::ExpertSecondsPerToken, AllToAllSecondsPerCrossNodeToken,
// ExposedSeconds), applied to estimated per-device tokens and link loads. Not thread-safe.
#ifndef HECATE_PLACEMENT_GREEDY_STATE_H_
#define HECATE_PLACEMENT_GREEDY_STATE_H_

#include <algorithm>
#include <utility>
#include <vector>

#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/greedy.h"
#include "placement/link_state.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement::internal {

// The greedy's running estimate of one layer under the load-aware dispatch: per-device tokens,
// per-node cross-node All-to-All tokens, and the spAG links.
class GreedyState {
 public:
  GreedyState(const CostModel& cost, LayerId l, LayerPlan* plan, const LoadAggregate& load,
              const GreedyBudget& budget)
      : cost_(cost),
        layer_(l),
        cluster_(cost.cluster()),
        plan_(*plan),
        devices_(cluster_.num_devices()),
        nodes_(cluster_.num_nodes()),
        experts_(plan->num_experts()),
        tree0_(cluster_),
        tree1_(cluster_) {
    const LayerSpec& spec = cost.model().layers[l];
    attention_ = budget.attention_forward_seconds >= 0 ? budget.attention_forward_seconds
                                                       : cost.attention_forward_seconds();
    hide_behind_compute_ = budget.hide_behind_compute;
    regather_ = plan->remat == RematMode::kRegather;
    pb_ = static_cast<double>(spec.expert_param_bytes);
    a2a_sec_per_token_ = cost.AllToAllSecondsPerCrossNodeToken();
    copy_s_ = spec.copy_seconds;
    sec_per_token_.resize(devices_);
    for (DeviceId d = 0; d < devices_; ++d) {
      sec_per_token_[d] = cost.ExpertSecondsPerToken(l, d);
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
  // The cost model's exposure (CostModel::ExposedSeconds under CostModel::Windows) of a
  // spAG/spRS taking `link_seconds`, given the layer's slowest device's compute (or the attention
  // window alone, for calibration's late gather, which follows the gate).
  double Exposed(double link_seconds, double compute_seconds) const {
    if (link_seconds <= 0) return 0.0;
    const double t = link_seconds + cluster_.latency();
    CostModel::HidingWindows w;
    if (hide_behind_compute_) {
      w = cost_.Windows(layer_, compute_seconds);
    } else {
      w.forward = attention_;
      w.regather = w.reduce = 2 * attention_;
    }
    return CostModel::ExposedSeconds(ReplicaSemantics::kEphemeral,
                                     regather_ ? RematMode::kRegather : RematMode::kKeep, t, t, w);
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
    const double a2a_now = A2a();
    const double exposed_now = Exposed(TreeSeconds(), max_time);
    const double exposed_after = Exposed(TreeSecondsWith(e, set), new_max);
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
    const double a2a_now = A2a();
    const double exposed_now = Exposed(TreeSeconds(), max_time);
    // Dropping a transfer never exposes more (the other holders only get busier, so the cycles
    // that hide it do not shrink); when nothing is exposed now, nothing changes.
    const double exposed_after = exposed_now > 0 ? Exposed(TreeSecondsWithout(e, c), new_max) : 0.0;
    return (new_max - max_time) + (a2a_after - a2a_now) + (exposed_after - exposed_now);
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
  double Objective() const {
    const double compute = TimeOf(by_time_[0]), a2a = A2a();
    return compute + a2a + Exposed(TreeSeconds(), compute);
  }

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
    for (DeviceId c : set) plan_.AddHolder(e, c);
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
  const CostModel& cost_;
  const LayerId layer_;
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
  bool hide_behind_compute_ = true;
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

}  // namespace hecate::placement::internal

#endif  // HECATE_PLACEMENT_GREEDY_STATE_H_
