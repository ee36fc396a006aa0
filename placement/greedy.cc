#include "placement/greedy.h"

#include <algorithm>
#include <utility>

#include "placement/greedy_state.h"

namespace hecate::placement {

namespace {

using internal::DeviceSpan;
using internal::GreedyState;

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

}  // namespace hecate::placement
