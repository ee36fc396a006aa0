// The default policy, `hecate` (and `hecate-rm`): FSSDP with the cost-model-driven greedy
// materialization, its warm start, the exact repair and the balance pass, re-materialization
// chosen per layer when memory binds (docs/placement.md).
#include <algorithm>
#include <cmath>
#include <utility>

#include "placement/cost_model.h"
#include "placement/greedy.h"
#include "placement/paper_materialization.h"
#include "placement/policy_support.h"
#include "placement/refine.h"

namespace hecate::placement::internal {

namespace {

// Less over the balance target than this (max/mean) does not count as progress when settling.
constexpr double kBalanceProgress = 1e-3;
// The fewest layer evaluations a balance pass is run with (the layer itself and a few candidates).
constexpr int64_t kMinBalanceEvaluations = 8;

// Whether layer prediction `a` is better than `b`: closer to the balance target (by
// kBalanceProgress) at most balance_budget slower; else, unless `b` is that much closer to it
// within the budget, faster.
bool BetterLayer(const LayerPrediction& a, const LayerPrediction& b, const PlannerConfig& config) {
  const double budget = 1 + std::max(0.0, config.balance_budget);
  const double over_a = BalanceOverage(a, config.balance_target);
  const double over_b = BalanceOverage(b, config.balance_target);
  if (over_a < over_b - kBalanceProgress && a.total_seconds <= b.total_seconds * budget) {
    return true;
  }
  if (over_b < over_a - kBalanceProgress && b.total_seconds <= a.total_seconds * budget) {
    return false;
  }
  return a.total_seconds < b.total_seconds;
}

// Whether layer l's periodic revision falls on this request's iteration (every revise_period-th
// iteration, a different share of the layers each time).
bool RevisionDue(const PlanRequest& r, LayerId l) {
  const int period = std::max(1, r.config.revise_period);
  return static_cast<int>(r.iteration % period) == l % period;
}

// L1 distance between the per-expert shares of two count vectors (0-2; 0 when both are empty).
double ShareDistance(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  double sa = 0, sb = 0;
  for (int64_t x : a) sa += static_cast<double>(x);
  for (int64_t x : b) sb += static_cast<double>(x);
  if (sa <= 0 || sb <= 0) return sa == sb ? 0.0 : 2.0;
  double d = 0;
  for (size_t e = 0; e < a.size(); ++e) {
    d += std::abs(static_cast<double>(a[e]) / sa - static_cast<double>(b[e]) / sb);
  }
  return d;
}

class HecatePolicy : public Policy {
 public:
  // `regather_every_layer`: Hecate-RM (every layer re-gathered before backward); else
  // re-materialization is chosen per layer when memory binds.
  explicit HecatePolicy(bool regather_every_layer) : regather_(regather_every_layer) {}

  bool BoundsBalance() const override { return true; }
  bool Calibrates() const override { return true; }
  std::string_view name() const override { return regather_ ? "hecate-rm" : "hecate"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kEphemeral; }

  Plan Compute(const PlanRequest& r) const override {
    const Owners owners = ResolveOwners(r);
    std::vector<std::vector<int64_t>> totals;
    for (const LoadMatrix& m : *r.load) totals.push_back(m.ExpertTotals());
    // Warm start: the layers whose load has not moved keep their copies and prediction.
    std::vector<char> revise_only(totals.size(), 0);
    const std::vector<const LayerPrediction*> reuse =
        regather_ ? std::vector<const LayerPrediction*>(totals.size())
                  : Unmoved(r, owners, totals, &revise_only);
    const bool all_reused =
        !reuse.empty() && std::all_of(reuse.begin(), reuse.end(),
                                      [](const LayerPrediction* p) { return p != nullptr; });
    // One pass over each load matrix still planned; everything below works on node-level totals.
    std::vector<LoadAggregate> aggregates(r.load->size());
    for (size_t l = 0; l < aggregates.size(); ++l) {
      if (reuse[l] == nullptr) aggregates[l] = LoadAggregate::Of((*r.load)[l], *r.cluster);
    }
    CostModel cost(*r.cluster, *r.model, r.config.attention_forward_seconds);
    std::vector<Migration> migrations = OwnerMigrations(r, owners);

    if (regather_) {
      std::vector<LayerPlan> layers =
          Materialize(r, cost, owners, aggregates, RematMode::kRegather);
      return Finish(r, name(), semantics(), r.config.dispatch_rule, std::move(layers),
                    std::move(migrations), &aggregates);
    }

    std::vector<int> repaired(totals.size(), 0);  // exact-repair moves per layer in this plan
    std::vector<LayerPlan> keep =
        Materialize(r, cost, owners, aggregates, RematMode::kKeep, &reuse, &revise_only, &repaired);
    // Nothing moved and nothing is due: the comparison with re-gathering made for these loads
    // stands.
    bool memory_bound = !all_reused && r.config.allow_remat && MemoryBound(r, owners, keep);
    if (memory_bound && r.config.warm_start && r.previous != nullptr &&
        r.config.revise_period > 1 && r.iteration % r.config.revise_period != 0) {
      // Steady state: while the plan in force keeps every layer resident, the re-gathered
      // alternative (a second full materialization) is re-examined every revise_period-th
      // iteration only.
      bool previous_regathers = false;
      for (const LayerPlan& l : r.previous->layers) {
        previous_regathers = previous_regathers || l.remat == RematMode::kRegather;
      }
      memory_bound = previous_regathers;
    }
    Plan plan_keep =
        Finish(r, name(), semantics(), r.config.dispatch_rule, std::move(keep),
               memory_bound ? migrations : std::move(migrations), &aggregates, &reuse, &totals);
    // A revision (on its turn) on an unmoved load that gains less than revise_gain, and brings the
    // layer no closer to the balance target, settles the layer: it is not planned again until its
    // load moves.
    for (size_t l = 0; l < revise_only.size(); ++l) {
      if (!revise_only[l] || !RevisionDue(r, static_cast<LayerId>(l))) continue;
      LayerPrediction& now = plan_keep.prediction.layers[l];
      const LayerPrediction& before = r.previous->prediction.layers[l];
      now.settled =
          now.total_seconds >= before.total_seconds * (1 - std::max(r.config.revise_gain, 1e-9)) &&
          BalanceOverage(now, r.config.balance_target) >=
              BalanceOverage(before, r.config.balance_target) - kBalanceProgress;
    }
    if (!memory_bound) return plan_keep;
    // Memory binds: size copies for re-gathering, keep resident what still fits, and take
    // whichever plan the cost model predicts faster.
    for (size_t l = 0; l < aggregates.size(); ++l) {
      if (reuse[l] != nullptr) aggregates[l] = LoadAggregate::Of((*r.load)[l], *r.cluster);
    }
    std::vector<LayerPlan> regather =
        Materialize(r, cost, owners, aggregates, RematMode::kRegather);
    PlanRemat(cost, &regather);
    Plan plan_rm = Finish(r, name(), semantics(), r.config.dispatch_rule, std::move(regather),
                          std::move(migrations), &aggregates, nullptr, &totals);
    if (plan_rm.prediction.moe_seconds < plan_keep.prediction.moe_seconds) return plan_rm;
    return plan_keep;
  }

 private:
  // Per layer, the previous plan's prediction when the layer may be kept as it is (warm start,
  // same owners, resident copies within this plan's budget, expert shares within
  // replan_threshold of what it was planned for, and settled); null where it is planned.
  // `revise_only` marks the unmoved layers planned only because they have not settled (their
  // revision turn may settle them); they keep the previous plan unless the new one is faster.
  static std::vector<const LayerPrediction*> Unmoved(
      const PlanRequest& r, const Owners& owners, const std::vector<std::vector<int64_t>>& totals,
      std::vector<char>* revise_only) {
    std::vector<const LayerPrediction*> out(totals.size(), nullptr);
    revise_only->assign(totals.size(), 0);
    const Plan* prev = r.previous;
    if (!r.config.warm_start || r.config.replan_threshold <= 0 || prev == nullptr ||
        prev->semantics != ReplicaSemantics::kEphemeral || prev->layers.size() != owners.size() ||
        prev->prediction.layers.size() != owners.size()) {
      return out;
    }
    const std::vector<int> budget =
        CopyBudget(*r.cluster, *r.model, owners, ReplicaSemantics::kEphemeral, RematMode::kKeep,
                   r.config.extra_slots);
    const int devices = r.cluster->num_devices();
    for (size_t l = 0; l < owners.size(); ++l) {
      const LayerPlan& layer = prev->layers[l];
      const LayerPrediction& p = prev->prediction.layers[l];
      if (layer.owner != owners[l] || layer.remat != RematMode::kKeep ||
          p.planned_expert_tokens.size() != totals[l].size() ||
          ShareDistance(totals[l], p.planned_expert_tokens) >= r.config.replan_threshold) {
        continue;
      }
      const std::vector<int> extra = layer.ExtraCopies(devices);
      bool fits = true;
      for (DeviceId d = 0; d < devices && fits; ++d) fits = extra[d] <= budget[d];
      if (!fits) continue;
      if (!p.settled) {
        (*revise_only)[l] = 1;
      } else {
        out[l] = &p;
      }
    }
    return out;
  }

  std::vector<LayerPlan> Materialize(const PlanRequest& r, const CostModel& cost,
                                     const Owners& owners,
                                     const std::vector<LoadAggregate>& aggregates, RematMode mode,
                                     const std::vector<const LayerPrediction*>* reuse = nullptr,
                                     const std::vector<char>* revise_only = nullptr,
                                     std::vector<int>* repaired = nullptr) const {
    GreedyBudget budget;
    budget.max_copies = CopyBudget(*r.cluster, *r.model, owners, ReplicaSemantics::kEphemeral, mode,
                                   r.config.extra_slots);
    const bool warm = r.config.warm_start && r.previous != nullptr &&
                      r.previous->semantics == ReplicaSemantics::kEphemeral &&
                      r.previous->layers.size() == owners.size();
    std::vector<LayerPlan> layers;
    Dispatcher dispatcher(*r.cluster);
    // The exact repair on what the greedy planned (RepairLayer).
    // (Named variables, not a structured binding: C++17 lambdas cannot capture those.)
    const auto effort = RepairEffort(r.config, r.cluster->num_devices());
    const int repair_moves = effort.first, repair_candidates = effort.second;
    auto repair = [&](LayerId l, LayerPlan* layer) {
      if (repair_moves <= 0) return;
      const int moves = RepairLayer(cost, l, (*r.load)[l], aggregates[l], r.config.dispatch_rule,
                                    budget.max_copies, repair_moves, repair_candidates, layer);
      if (repaired != nullptr) (*repaired)[l] = moves;
      if (r.config.balance_target > 0 && r.config.balance_moves > 0) {
        // The balance bound (BalanceLayer): at most balance_budget over the repaired layer's time,
        // and this layer's share of balance_cell_budget (device x expert cells per plan, split
        // evenly over the layers); where that buys fewer than kMinBalanceEvaluations, no pass.
        const int64_t cells = int64_t{r.cluster->num_devices()} *
                              std::max(1, r.model->layers[l].num_experts) *
                              std::max(1, r.model->num_layers());
        const int64_t balance_evaluations =
            r.config.balance_cell_budget > 0 ? r.config.balance_cell_budget / cells : 0;
        if (r.config.balance_cell_budget > 0 && balance_evaluations < kMinBalanceEvaluations)
          return;
        BalanceLayer(cost, l, (*r.load)[l], aggregates[l], r.config.dispatch_rule,
                     budget.max_copies, r.config.balance_target, r.config.balance_budget,
                     r.config.balance_moves, r.config.balance_candidates, balance_evaluations,
                     layer);
      }
    };
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      if (reuse != nullptr && (*reuse)[l] != nullptr) {
        layers.push_back(r.previous->layers[l]);
        continue;
      }
      LayerPlan base = OwnersOnlyLayer(owners[l]);
      base.remat = mode;
      budget.revise = warm && r.previous->layers[l].owner == owners[l];
      if (budget.revise) {
        SeedCopies(r.previous->layers[l], budget.max_copies, &base);
        // Every revise_period-th iteration (a different share of the layers each time) also
        // drops the copies worth less than revise_gain of the layer time and lets the greedy
        // regrow them.
        budget.keep_gain = RevisionDue(r, l) ? r.config.revise_gain : 0.0;
        LayerPlan revised =
            MaterializeGreedy(cost, l, base, (*r.load)[l], budget, nullptr, &aggregates[l]);
        repair(l, &revised);
        if (revise_only != nullptr && (*revise_only)[l]) {
          // Planned only because it has not settled, on a load that has not moved: the layer is
          // kept as it was unless the new plan is better (BetterLayer; a worse one could settle
          // and stay).
          auto eval = [&](const LayerPlan& p) {
            return cost.EvaluateLayer(l, p, (*r.load)[l], r.config.dispatch_rule,
                                      ReplicaSemantics::kEphemeral, &dispatcher, &aggregates[l]);
          };
          if (!BetterLayer(eval(revised), eval(r.previous->layers[l]), r.config)) {
            revised = r.previous->layers[l];
          }
        }
        layers.push_back(std::move(revised));
        continue;
      }
      // Cold: the greedy from the owners alone, and from a balance-first seed (pruned of what
      // does not pay); the faster of the two.
      LayerPlan from_owners =
          MaterializeGreedy(cost, l, base, (*r.load)[l], budget, nullptr, &aggregates[l]);
      GreedyBudget seeded = budget;
      seeded.revise = true;
      seeded.keep_gain = 0;
      LayerPlan from_seed = MaterializeGreedy(
          cost, l, BalancedSeed(*r.cluster, base, aggregates[l], budget.max_copies), (*r.load)[l],
          seeded, nullptr, &aggregates[l]);
      auto layer_seconds = [&](const LayerPlan& p) {
        return cost
            .EvaluateLayer(l, p, (*r.load)[l], r.config.dispatch_rule, ReplicaSemantics::kEphemeral,
                           &dispatcher, &aggregates[l])
            .total_seconds;
      };
      const double t_seed = layer_seconds(from_seed), t_owners = layer_seconds(from_owners);
      LayerPlan best = t_seed < t_owners ? std::move(from_seed) : std::move(from_owners);
      // One revision round on top (drop what is worth < revise_gain, regrow), as a warm start
      // would do over the next iterations; kept if faster.
      GreedyBudget revise = budget;
      revise.revise = true;
      revise.keep_gain = r.config.revise_gain;
      LayerPlan revised =
          MaterializeGreedy(cost, l, best, (*r.load)[l], revise, nullptr, &aggregates[l]);
      if (layer_seconds(revised) < std::min(t_seed, t_owners)) best = std::move(revised);
      // No exact repair here: the cold plan is the slow one (seconds at thousands of devices);
      // the warm plans that follow repair it a few moves at a time.
      layers.push_back(std::move(best));
    }
    return layers;
  }

  // True when some layer filled some device's memory budget for copies while the regather
  // budget would allow more.
  static bool MemoryBound(const PlanRequest& r, const Owners& owners,
                          const std::vector<LayerPlan>& layers) {
    const std::vector<int> keep =
        CopyBudget(*r.cluster, *r.model, owners, ReplicaSemantics::kEphemeral, RematMode::kKeep,
                   r.config.extra_slots);
    const std::vector<int> rm =
        CopyBudget(*r.cluster, *r.model, owners, ReplicaSemantics::kEphemeral, RematMode::kRegather,
                   r.config.extra_slots);
    const int devices = r.cluster->num_devices();
    bool more_with_regather = false;
    for (DeviceId d = 0; d < devices; ++d)
      more_with_regather = more_with_regather || rm[d] > keep[d];
    if (!more_with_regather) return false;
    for (const LayerPlan& layer : layers) {
      const std::vector<int> extra = layer.ExtraCopies(devices);
      for (DeviceId d = 0; d < devices; ++d) {
        if (rm[d] > keep[d] && extra[d] >= keep[d]) return true;
      }
    }
    return false;
  }

  const bool regather_;
};

}  // namespace

std::unique_ptr<Policy> NewHecatePolicy(bool regather_every_layer) {
  return std::make_unique<HecatePolicy>(regather_every_layer);
}

}  // namespace hecate::placement::internal
