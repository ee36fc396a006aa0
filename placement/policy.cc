#include "placement/policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "placement/calibration.h"
#include "placement/greedy.h"
#include "placement/paper_materialization.h"
#include "placement/refine.h"

namespace hecate::placement {

absl::Status CheckRequest(const PlanRequest& r) {
  if (r.cluster == nullptr || r.model == nullptr || r.load == nullptr) {
    return absl::InvalidArgumentError("plan request needs a cluster, a model and loads");
  }
  if (absl::Status s = r.model->Validate(); !s.ok()) return s;
  if (absl::Status s = CheckShape(*r.load, *r.cluster, *r.model); !s.ok()) return s;
  auto check_owners = [&](const Owners& owners) -> absl::Status {
    if (static_cast<int>(owners.size()) != r.model->num_layers()) {
      return absl::InvalidArgumentError("owners do not cover every layer");
    }
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      if (static_cast<int>(owners[l].size()) != r.model->layers[l].num_experts) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": wrong owner count"));
      }
      for (DeviceId d : owners[l]) {
        if (d < 0 || d >= r.cluster->num_devices()) {
          return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": owner ", d, " invalid"));
        }
      }
    }
    return absl::OkStatus();
  };
  if (r.owners != nullptr) {
    if (absl::Status s = check_owners(*r.owners); !s.ok()) return s;
  }
  if (r.previous != nullptr) {
    if (absl::Status s = Validate(*r.previous, *r.cluster, *r.model); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("previous plan: ", s.message()));
    }
  }
  return absl::OkStatus();
}

std::vector<std::vector<double>> ExpertLoads(const ModelLoad& load) {
  std::vector<std::vector<double>> out;
  out.reserve(load.size());
  for (const LoadMatrix& m : load) {
    std::vector<int64_t> totals = m.ExpertTotals();
    out.emplace_back(totals.begin(), totals.end());
  }
  return out;
}

std::vector<int> CopyBudget(const Cluster& cluster, const ModelSpec& model, const Owners& owners,
                            ReplicaSemantics semantics, RematMode mode, int cap) {
  const std::vector<int64_t> owned = OwnedBytes(cluster, model, owners);
  int64_t sum_pb = 0, max_pb = 0, sum_full = 0;
  for (const LayerSpec& l : model.layers) {
    sum_pb += l.expert_param_bytes;
    max_pb = std::max(max_pb, l.expert_param_bytes);
    sum_full += 2 * l.expert_param_bytes + l.expert_optimizer_bytes;
  }
  int64_t per_copy = 0;
  if (semantics == ReplicaSemantics::kPersistent) {
    per_copy = sum_full;
  } else if (mode == RematMode::kRegather) {
    per_copy = 3 * max_pb;
  } else {
    per_copy = sum_pb + max_pb;
  }
  std::vector<int> budget(cluster.num_devices(), 0);
  for (DeviceId d = 0; d < cluster.num_devices(); ++d) {
    const int64_t free = cluster.memory_bytes(d) - owned[d];
    int64_t c = free > 0 && per_copy > 0 ? free / per_copy : 0;
    if (cap >= 0) c = std::min<int64_t>(c, cap);
    budget[d] = static_cast<int>(std::min<int64_t>(c, 1 << 20));
  }
  return budget;
}

void PlanRemat(const CostModel& cost, std::vector<LayerPlan>* layers) {
  const Cluster& cluster = cost.cluster();
  const ModelSpec& model = cost.model();
  const double attn_b = 2.0 * cost.attention_forward_seconds();
  // Exposed backward time a layer saves by staying resident.
  std::vector<std::pair<double, LayerId>> savings;
  for (LayerId l = 0; l < static_cast<int>(layers->size()); ++l) {
    (*layers)[l].remat = RematMode::kRegather;
    const double t = cost.SparseCollectiveSeconds(l, (*layers)[l], nullptr);
    const double saved = std::max(0.0, 2 * t - attn_b) - std::max(0.0, t - attn_b);
    savings.push_back({saved, l});
  }
  std::stable_sort(savings.begin(), savings.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  Plan probe;
  probe.semantics = ReplicaSemantics::kEphemeral;
  probe.layers = *layers;
  for (const auto& [saved, l] : savings) {
    probe.layers[l].remat = RematMode::kKeep;
    if (CheckMemory(probe, cluster, model).ok()) {
      (*layers)[l].remat = RematMode::kKeep;
    } else {
      probe.layers[l].remat = RematMode::kRegather;
    }
  }
}

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

Owners OwnersOf(const Plan& plan) {
  Owners owners;
  for (const LayerPlan& l : plan.layers) owners.push_back(l.owner);
  return owners;
}

// The sharding an FSSDP policy uses for this request.
Owners ResolveOwners(const PlanRequest& r) {
  if (r.owners != nullptr) return *r.owners;
  if (r.previous != nullptr && r.previous->semantics == ReplicaSemantics::kEphemeral) {
    return OwnersOf(*r.previous);
  }
  if (r.previous != nullptr) return OwnersOf(*r.previous);
  return EvenSharding(*r.cluster, *r.model);
}

// Adds `previous`'s copies (same owners) to `base`, within the per-device copy budget (experts in
// ascending order keep theirs first).
void SeedCopies(const LayerPlan& previous, const std::vector<int>& max_copies, LayerPlan* base) {
  std::vector<int> used(max_copies.size(), 0);
  for (ExpertId e = 0; e < base->num_experts(); ++e) {
    std::vector<DeviceId>& r = base->replicas[e];
    for (DeviceId d : previous.replicas[e]) {
      if (d == base->owner[e] || d < 0 || d >= static_cast<int>(max_copies.size())) continue;
      if (used[d] >= max_copies[d]) continue;
      ++used[d];
      r.insert(std::upper_bound(r.begin(), r.end(), d), d);
    }
  }
}

LayerPlan OwnersOnlyLayer(const std::vector<DeviceId>& owners) {
  LayerPlan layer;
  layer.owner = owners;
  layer.replicas.resize(owners.size());
  for (size_t e = 0; e < owners.size(); ++e) layer.replicas[e] = {owners[e]};
  return layer;
}

// Owner changes relative to the previous plan's owners (or to even sharding at the start).
std::vector<Migration> OwnerMigrations(const PlanRequest& r, const Owners& owners) {
  const Owners before =
      r.previous != nullptr ? OwnersOf(*r.previous) : EvenSharding(*r.cluster, *r.model);
  return Migrations(before, owners, *r.model);
}

// For persistent copies: every copy not held before costs parameters + optimizer state, sent
// from the expert's owner (or any previous holder).
std::vector<Migration> CopyMigrations(const PlanRequest& r, const std::vector<LayerPlan>& layers) {
  std::vector<Migration> out;
  Owners even;
  if (r.previous == nullptr) even = EvenSharding(*r.cluster, *r.model);
  for (LayerId l = 0; l < static_cast<int>(layers.size()); ++l) {
    const LayerSpec& spec = r.model->layers[l];
    for (ExpertId e = 0; e < layers[l].num_experts(); ++e) {
      DeviceId source = r.previous != nullptr ? r.previous->layers[l].owner[e] : even[l][e];
      for (DeviceId d : layers[l].replicas[e]) {
        const bool had = r.previous != nullptr ? r.previous->layers[l].Holds(e, d) : d == source;
        if (!had) {
          out.push_back(
              Migration{l, e, source, d, spec.expert_param_bytes + spec.expert_optimizer_bytes});
        }
      }
    }
  }
  return out;
}

// `reuse` (per layer, may be null) names predictions to keep instead of evaluating; `totals`, when
// given, are recorded as what each evaluated layer was planned for.
Plan Finish(const PlanRequest& r, std::string_view name, ReplicaSemantics semantics,
            DispatchRule rule, std::vector<LayerPlan> layers, std::vector<Migration> migrations,
            const std::vector<LoadAggregate>* aggregates = nullptr,
            const std::vector<const LayerPrediction*>* reuse = nullptr,
            const std::vector<std::vector<int64_t>>* totals = nullptr) {
  Plan plan;
  plan.policy = std::string(name);
  plan.semantics = semantics;
  plan.dispatch_rule = rule;
  plan.layers = std::move(layers);
  plan.migrations = std::move(migrations);
  CostModel cost(*r.cluster, *r.model, r.config.attention_forward_seconds);
  cost.Evaluate(&plan, *r.load, aggregates, reuse);
  for (size_t l = 0; totals != nullptr && l < plan.prediction.layers.size(); ++l) {
    if (reuse == nullptr || (*reuse)[l] == nullptr) {
      plan.prediction.layers[l].planned_expert_tokens = (*totals)[l];
    }
  }
  return plan;
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

// ------------------------------------------------------------------------------------------
// FSSDP policies

class HecatePolicy : public Policy {
 public:
  enum class Variant { kDefault, kPaper, kRemat };
  explicit HecatePolicy(Variant v) : variant_(v) {}

  bool BoundsBalance() const override { return variant_ != Variant::kPaper; }
  bool Calibrates() const override { return variant_ != Variant::kPaper; }

  std::string_view name() const override {
    switch (variant_) {
      case Variant::kPaper:
        return "hecate-paper";
      case Variant::kRemat:
        return "hecate-rm";
      default:
        return "hecate";
    }
  }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kEphemeral; }

  Plan Compute(const PlanRequest& r) const override {
    const Owners owners = ResolveOwners(r);
    std::vector<std::vector<int64_t>> totals;
    for (const LoadMatrix& m : *r.load) totals.push_back(m.ExpertTotals());
    // Warm start: the layers whose load has not moved keep their copies and prediction.
    std::vector<char> revise_only(totals.size(), 0);
    const std::vector<const LayerPrediction*> reuse =
        variant_ == Variant::kDefault ? Unmoved(r, owners, totals, &revise_only)
                                      : std::vector<const LayerPrediction*>(totals.size());
    const bool all_reused =
        !reuse.empty() && std::all_of(reuse.begin(), reuse.end(),
                                      [](const LayerPrediction* p) { return p != nullptr; });
    // One pass over each load matrix still planned; everything below works on node-level totals.
    std::vector<LoadAggregate> aggregates(r.load->size());
    for (size_t l = 0; l < aggregates.size(); ++l) {
      if (reuse[l] == nullptr) aggregates[l] = LoadAggregate::Of((*r.load)[l], *r.cluster);
    }
    std::vector<std::vector<double>> loads;
    for (const std::vector<int64_t>& t : totals) loads.emplace_back(t.begin(), t.end());
    CostModel cost(*r.cluster, *r.model, r.config.attention_forward_seconds);
    std::vector<Migration> migrations = OwnerMigrations(r, owners);

    if (variant_ == Variant::kPaper) {
      const std::vector<int> keep =
          CopyBudget(*r.cluster, *r.model, owners, ReplicaSemantics::kEphemeral, RematMode::kKeep,
                     r.config.extra_slots);
      const int m = *std::min_element(keep.begin(), keep.end());
      std::vector<LayerPlan> layers;
      for (LayerId l = 0; l < r.model->num_layers(); ++l) {
        const int t = OverlapDegree(*r.cluster, *r.model, l, cost.attention_forward_seconds());
        layers.push_back(MaterializePaper(*r.cluster, OwnersOnlyLayer(owners[l]), loads[l], t, m));
      }
      return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                    std::move(migrations), &aggregates);
    }

    if (variant_ == Variant::kRemat) {
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
    const auto [repair_moves, repair_candidates] = RepairEffort(r.config, r.cluster->num_devices());
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

  Variant variant_;
};

// ------------------------------------------------------------------------------------------
// Baselines

class EpPolicy : public Policy {
 public:
  std::string_view name() const override { return "ep"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const Owners owners = EvenSharding(*r.cluster, *r.model);
    std::vector<LayerPlan> layers;
    for (const std::vector<DeviceId>& o : owners) layers.push_back(OwnersOnlyLayer(o));
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  OwnerMigrations(r, owners));
  }
};

class FasterMoePolicy : public Policy {
 public:
  std::string_view name() const override { return "fastermoe"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kShadow; }
  Plan Compute(const PlanRequest& r) const override {
    const Owners owners = EvenSharding(*r.cluster, *r.model);
    const std::vector<std::vector<double>> loads = ExpertLoads(*r.load);
    const std::vector<int> keep = CopyBudget(*r.cluster, *r.model, owners, semantics(),
                                             RematMode::kKeep, r.config.extra_slots);
    const int max_shadows = *std::min_element(keep.begin(), keep.end());
    CostModel cost(*r.cluster, *r.model, r.config.attention_forward_seconds);
    Dispatcher dispatcher(*r.cluster);
    const int devices = r.cluster->num_devices();
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      LayerPlan layer = OwnersOnlyLayer(owners[l]);
      std::vector<ExpertId> order(layer.num_experts());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](ExpertId a, ExpertId b) { return loads[l][a] > loads[l][b]; });
      double best =
          cost.EvaluateLayer(l, layer, (*r.load)[l], DispatchRule::kEven, semantics(), &dispatcher)
              .total_seconds;
      // Greedy shadowing: add the next-hottest expert while the predicted time keeps falling;
      // stop at the first non-improvement (FasterMoE's global_policy).
      for (int i = 0; i < std::min<int>(max_shadows, layer.num_experts()); ++i) {
        const ExpertId e = order[i];
        if (loads[l][e] <= 0) break;
        std::vector<DeviceId> previous = layer.replicas[e];
        layer.replicas[e].resize(devices);
        std::iota(layer.replicas[e].begin(), layer.replicas[e].end(), 0);
        const double t = cost.EvaluateLayer(l, layer, (*r.load)[l], DispatchRule::kEven,
                                            semantics(), &dispatcher)
                             .total_seconds;
        if (t < best) {
          best = t;
        } else {
          layer.replicas[e] = std::move(previous);
          break;
        }
      }
      layers.push_back(std::move(layer));
    }
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  OwnerMigrations(r, owners));
  }
};

// Per-device load under an even split of each expert's load over its holders.
std::vector<double> EvenSplitLoads(const LayerPlan& layer, const std::vector<double>& loads,
                                   int devices) {
  std::vector<double> dl(devices, 0.0);
  for (ExpertId e = 0; e < layer.num_experts(); ++e) {
    const double per = loads[e] / layer.replicas[e].size();
    for (DeviceId d : layer.replicas[e]) dl[d] += per;
  }
  return dl;
}

class FlexMoePolicy : public Policy {
 public:
  std::string_view name() const override { return "flexmoe"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const int devices = r.cluster->num_devices();
    const std::vector<std::vector<double>> loads = ExpertLoads(*r.load);
    const bool continuing = r.previous != nullptr && r.previous->policy == name();
    const Owners owners = continuing ? OwnersOf(*r.previous) : EvenSharding(*r.cluster, *r.model);
    const std::vector<int> budget = CopyBudget(*r.cluster, *r.model, owners, semantics(),
                                               RematMode::kKeep, r.config.extra_slots);
    const int max_changes =
        r.config.flexmoe_max_changes > 0 ? r.config.flexmoe_max_changes : devices;
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      LayerPlan layer = continuing ? r.previous->layers[l] : OwnersOnlyLayer(owners[l]);
      layer.remat = RematMode::kKeep;
      const std::vector<double>& w = loads[l];
      double total = std::accumulate(w.begin(), w.end(), 0.0);
      const double mean = total / devices;
      for (int change = 0; change < max_changes && mean > 0; ++change) {
        std::vector<double> dl = EvenSplitLoads(layer, w, devices);
        const DeviceId hot =
            static_cast<DeviceId>(std::max_element(dl.begin(), dl.end()) - dl.begin());
        if (dl[hot] <= r.config.flexmoe_threshold * mean) break;
        // Expand: the hot device's expert with the highest load per copy gets a copy on the
        // least-loaded device that has (or can make, by shrinking) room.
        ExpertId e_hot = -1;
        for (ExpertId e = 0; e < layer.num_experts(); ++e) {
          if (!layer.Holds(e, hot) || static_cast<int>(layer.replicas[e].size()) >= devices)
            continue;
          if (e_hot < 0 ||
              w[e] / layer.replicas[e].size() > w[e_hot] / layer.replicas[e_hot].size()) {
            e_hot = e;
          }
        }
        if (e_hot < 0) break;
        const double next = w[e_hot] / (layer.replicas[e_hot].size() + 1);
        DeviceId target = -1;
        for (DeviceId d = 0; d < devices; ++d) {
          if (layer.Holds(e_hot, d) || budget[d] <= 0) continue;
          if (target < 0 || dl[d] < dl[target]) target = d;
        }
        if (target < 0 || dl[target] + next >= dl[hot]) break;
        if (layer.ExtraCopiesOn(target) >= budget[target]) {
          // Shrink: drop the target's coldest extra copy.
          ExpertId cold = -1;
          for (ExpertId e = 0; e < layer.num_experts(); ++e) {
            if (layer.owner[e] == target || !layer.Holds(e, target)) continue;
            if (cold < 0 ||
                w[e] / layer.replicas[e].size() < w[cold] / layer.replicas[cold].size()) {
              cold = e;
            }
          }
          if (cold < 0) break;
          std::vector<DeviceId>& rc = layer.replicas[cold];
          rc.erase(std::find(rc.begin(), rc.end(), target));
        }
        std::vector<DeviceId>& rh = layer.replicas[e_hot];
        rh.insert(std::upper_bound(rh.begin(), rh.end(), target), target);
      }
      layers.push_back(std::move(layer));
    }
    std::vector<Migration> migrations = CopyMigrations(r, layers);
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  std::move(migrations));
  }
};

class SmartMoePolicy : public Policy {
 public:
  std::string_view name() const override { return "smartmoe"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const int devices = r.cluster->num_devices();
    const bool continuing = r.previous != nullptr && r.previous->policy == name();
    const int period = std::max(1, r.config.smartmoe_period);
    if (continuing && r.iteration % period != 0) {
      return Finish(r, name(), semantics(), DispatchRule::kEven, r.previous->layers, {});
    }
    const std::vector<std::vector<double>> loads = ExpertLoads(*r.load);
    const Owners current = continuing ? OwnersOf(*r.previous) : EvenSharding(*r.cluster, *r.model);
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      const int experts = r.model->layers[l].num_experts;
      const int cap = (experts + devices - 1) / devices;
      std::vector<ExpertId> order(experts);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](ExpertId a, ExpertId b) { return loads[l][a] > loads[l][b]; });
      // Balanced packing with equal expert counts per device (LPT), ties to the current owner.
      std::vector<double> dl(devices, 0.0);
      std::vector<int> count(devices, 0);
      std::vector<DeviceId> owner(experts, 0);
      for (ExpertId e : order) {
        DeviceId best = -1;
        for (DeviceId d = 0; d < devices; ++d) {
          if (count[d] >= cap) continue;
          if (best < 0 || dl[d] < dl[best] || (dl[d] == dl[best] && d == current[l][e])) best = d;
        }
        owner[e] = best;
        dl[best] += loads[l][e];
        ++count[best];
      }
      layers.push_back(OwnersOnlyLayer(owner));
    }
    Owners owners;
    for (const LayerPlan& layer : layers) owners.push_back(layer.owner);
    std::vector<Migration> migrations = Migrations(current, owners, *r.model);
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  std::move(migrations));
  }
};

class EplbPolicy : public Policy {
 public:
  std::string_view name() const override { return "eplb"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const int devices = r.cluster->num_devices();
    const bool continuing = r.previous != nullptr && r.previous->policy == name();
    const int period = std::max(1, r.config.eplb_period);
    if (continuing && r.iteration % period != 0) {
      return Finish(r, name(), semantics(), DispatchRule::kEven, r.previous->layers, {});
    }
    const std::vector<std::vector<double>> loads = ExpertLoads(*r.load);
    // Slots per device: each slot holds one expert of a layer with its gradient and optimizer
    // state, in every layer at once (persistent copies).
    int64_t per_slot = 0;
    for (const LayerSpec& spec : r.model->layers) {
      per_slot += 2 * spec.expert_param_bytes + spec.expert_optimizer_bytes;
    }
    int64_t min_memory = r.cluster->memory_bytes(0);
    for (DeviceId d = 1; d < devices; ++d)
      min_memory = std::min(min_memory, r.cluster->memory_bytes(d));
    const int64_t slot_cap = per_slot > 0 ? min_memory / per_slot : 0;
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      const int experts = r.model->layers[l].num_experts;
      const std::vector<double>& w = loads[l];
      // EPLB gives every device the same number of physical slots (num_replicas % num_gpus ==
      // 0): as many as memory (and the equal-memory cap, if set) allows. When even the logical
      // experts do not fit that way, it places just the logical experts.
      const int base_slots = (experts + devices - 1) / devices;
      int64_t want = slot_cap;
      if (r.config.extra_slots >= 0)
        want = std::min<int64_t>(want, base_slots + r.config.extra_slots);
      want = std::min<int64_t>(want, experts);  // more slots than distinct experts are useless
      const int per_device = static_cast<int>(std::max<int64_t>(want, base_slots));
      const int physical = want >= base_slots ? per_device * devices : experts;
      // replicate_experts: each redundant slot to argmax(load / count).
      std::vector<int> count(experts, 1);
      for (int s = experts; s < physical; ++s) {
        ExpertId best = 0;
        for (ExpertId e = 1; e < experts; ++e) {
          if (w[e] * count[best] > w[best] * count[e]) best = e;
        }
        ++count[best];
      }
      // balanced_packing: physical experts by load per copy (descending) to the lightest device
      // with a free slot. EPLB ignores identity, so two copies may land on one device; such a
      // duplicate is merged (the slot is wasted, as in EPLB).
      std::vector<std::pair<double, ExpertId>> items;
      for (ExpertId e = 0; e < experts; ++e) {
        for (int c = 0; c < count[e]; ++c) items.push_back({w[e] / count[e], e});
      }
      std::stable_sort(items.begin(), items.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      std::vector<double> dl(devices, 0.0);
      std::vector<int> used(devices, 0);
      LayerPlan layer;
      layer.replicas.resize(experts);
      for (const auto& [per_copy, e] : items) {
        DeviceId best = -1;
        for (DeviceId d = 0; d < devices; ++d) {
          if (used[d] >= per_device) continue;
          if (best < 0 || dl[d] < dl[best]) best = d;
        }
        dl[best] += per_copy;
        ++used[best];
        std::vector<DeviceId>& holders = layer.replicas[e];
        auto it = std::lower_bound(holders.begin(), holders.end(), best);
        if (it == holders.end() || *it != best) holders.insert(it, best);
      }
      layer.owner.resize(experts);
      for (ExpertId e = 0; e < experts; ++e) layer.owner[e] = layer.replicas[e].front();
      layers.push_back(std::move(layer));
    }
    std::vector<Migration> migrations = CopyMigrations(r, layers);
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  std::move(migrations));
  }
};

}  // namespace

std::vector<std::string> PolicyNames() {
  return {"hecate", "hecate-paper", "hecate-rm", "ep", "fastermoe", "flexmoe", "smartmoe", "eplb"};
}

std::pair<int, int> RepairEffort(const PlannerConfig& config, int devices) {
  int moves = config.repair_moves, candidates = config.repair_candidates;
  if (moves <= 0) return {0, candidates};
  const double want = static_cast<double>(moves) * candidates * std::max(devices, 1);
  if (config.repair_device_budget > 0 && want > static_cast<double>(config.repair_device_budget)) {
    const double scale = std::sqrt(static_cast<double>(config.repair_device_budget) / want);
    // The small epsilon keeps exact quarters (4 x 16 at 1,024 devices -> 2 x 8) from rounding
    // down to the next integer.
    moves = std::max(1, static_cast<int>(std::floor(moves * scale + 1e-9)));
    candidates = std::max(1, static_cast<int>(std::floor(candidates * scale + 1e-9)));
  }
  return {moves, candidates};
}

double BalanceOverage(const LayerPrediction& p, double target) {
  if (target <= 0 || p.mean_tokens <= 0) return 0;
  return std::max(0.0, p.max_tokens / p.mean_tokens - target);
}

double BalanceOverage(const Prediction& p, double target) {
  double sum = 0;
  for (const LayerPrediction& l : p.layers) sum += BalanceOverage(l, target);
  return sum;
}

bool PolicyCalibrates(std::string_view name) {
  auto policy = MakePolicy(name);
  return policy.ok() && (*policy)->Calibrates();
}

absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(std::string_view name) {
  if (name == "hecate") return std::make_unique<HecatePolicy>(HecatePolicy::Variant::kDefault);
  if (name == "hecate-paper") return std::make_unique<HecatePolicy>(HecatePolicy::Variant::kPaper);
  if (name == "hecate-rm") return std::make_unique<HecatePolicy>(HecatePolicy::Variant::kRemat);
  if (name == "ep") return std::make_unique<EpPolicy>();
  if (name == "fastermoe") return std::make_unique<FasterMoePolicy>();
  if (name == "flexmoe") return std::make_unique<FlexMoePolicy>();
  if (name == "smartmoe") return std::make_unique<SmartMoePolicy>();
  if (name == "eplb") return std::make_unique<EplbPolicy>();
  return absl::NotFoundError(absl::StrCat("unknown policy '", std::string(name),
                                          "'; known: ", absl::StrJoin(PolicyNames(), ", ")));
}

}  // namespace hecate::placement
