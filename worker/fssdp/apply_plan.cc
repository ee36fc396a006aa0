#include "worker/fssdp/apply_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "placement/policy.h"
#include "placement/sharding.h"
#include "worker/fssdp/moe_layer.h"

namespace hecate::worker {

namespace pl = placement;

int ShadowBudget(const pl::Plan& plan, const pl::Cluster& cluster, const pl::ModelSpec& model) {
  if (plan.semantics != pl::ReplicaSemantics::kShadow) return 0;
  const std::vector<int> budget = pl::CopyBudget(cluster, model, pl::OwnersOf(plan), plan.semantics,
                                                 pl::RematMode::kKeep, /*cap=*/-1);
  return budget.empty() ? 0 : *std::min_element(budget.begin(), budget.end());
}

absl::Status ApplyPlanToLayers(const pl::Plan& plan, const pl::Cluster& cluster,
                               const pl::ModelSpec& model, const std::vector<MoELayer*>& layers) {
  if (plan.layers.size() != layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan has ", plan.layers.size(), " layers, model has ", layers.size()));
  }
  const bool calibrate = pl::PolicyCalibrates(plan.policy);
  const int max_shadows = ShadowBudget(plan, cluster, model);
  for (size_t l = 0; l < layers.size(); ++l) {
    if (absl::Status s = layers[l]->ApplyPlan(plan.layers[l], plan.dispatch_rule, plan.semantics);
        !s.ok()) {
      return s;
    }
    layers[l]->set_calibrate(calibrate);
    layers[l]->set_max_shadows(max_shadows);
  }
  return absl::OkStatus();
}

}  // namespace hecate::worker
