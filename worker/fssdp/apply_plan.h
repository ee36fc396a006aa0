// Puts an agreed plan in force on one rank's MoE layers, the same way for every driver of the
// layers (the C++ trainer, the PyTorch front end): each layer adopts its layer plan under the
// plan's dispatch rule and replica semantics, calibrates when the plan's policy does, and, under
// FasterMoE's shadow semantics, shadows at most as many experts as every device's memory allows.
#ifndef HECATE_WORKER_FSSDP_APPLY_PLAN_H_
#define HECATE_WORKER_FSSDP_APPLY_PLAN_H_

#include <vector>

#include "absl/status/status.h"
#include "placement/cluster.h"
#include "placement/plan.h"

namespace hecate::worker {

class MoELayer;

// The experts a shadow plan may shadow per layer: the copies the tightest device's memory holds
// beside its owned experts (placement::CopyBudget). 0 for any other semantics.
int ShadowBudget(const placement::Plan& plan, const placement::Cluster& cluster,
                 const placement::ModelSpec& model);

// Collective (experts move to their new keepers). InvalidArgument, with no layer touched, when
// the plan's layer count is not the model's.
absl::Status ApplyPlanToLayers(const placement::Plan& plan, const placement::Cluster& cluster,
                               const placement::ModelSpec& model,
                               const std::vector<MoELayer*>& layers);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_FSSDP_APPLY_PLAN_H_
