#include "placement/policy_support.h"

#include <algorithm>
#include <string>
#include <utility>

#include "placement/cost_model.h"

namespace hecate::placement::internal {

Owners ResolveOwners(const PlanRequest& r) {
  if (r.owners != nullptr) return *r.owners;
  if (r.previous != nullptr) return OwnersOf(*r.previous);
  return EvenSharding(*r.cluster, *r.model);
}

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

std::vector<Migration> OwnerMigrations(const PlanRequest& r, const Owners& owners) {
  const Owners before =
      r.previous != nullptr ? OwnersOf(*r.previous) : EvenSharding(*r.cluster, *r.model);
  return Migrations(before, owners, *r.model);
}

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

Plan Finish(const PlanRequest& r, std::string_view name, ReplicaSemantics semantics,
            DispatchRule rule, std::vector<LayerPlan> layers, std::vector<Migration> migrations,
            const std::vector<LoadAggregate>* aggregates,
            const std::vector<const LayerPrediction*>* reuse,
            const std::vector<std::vector<int64_t>>* totals) {
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

}  // namespace hecate::placement::internal
