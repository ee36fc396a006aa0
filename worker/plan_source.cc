#include "worker/plan_source.h"

#include "placement/sharding.h"

namespace hecate::worker {

namespace pl = placement;

pl::Plan ExpertParallelPlan(const pl::Cluster& cluster, const pl::ModelSpec& model) {
  pl::Plan plan;
  plan.policy = "ep";
  plan.id = {0, 1};
  plan.sharding_version = 1;
  plan.semantics = pl::ReplicaSemantics::kPersistent;
  plan.dispatch_rule = pl::DispatchRule::kEven;
  for (const std::vector<pl::DeviceId>& owners : pl::EvenSharding(cluster, model)) {
    pl::LayerPlan layer;
    layer.owner = owners;
    for (pl::DeviceId d : owners) layer.replicas.push_back({d});
    plan.layers.push_back(std::move(layer));
  }
  return plan;
}

absl::StatusOr<std::unique_ptr<LocalPlanner>> LocalPlanner::Create(
    const pl::Cluster& cluster, const pl::ModelSpec& model, const pl::PlanningConfig& config) {
  if (absl::StatusOr<std::unique_ptr<pl::Policy>> p = pl::MakePolicy(config.policy); !p.ok()) {
    return p.status();
  }
  return std::unique_ptr<LocalPlanner>(new LocalPlanner(cluster, model, config));
}

void LocalPlanner::Observe(const pl::ModelLoad& last_global) {
  if (!last_global.empty()) (void)loop_.Observe(last_global);
}

std::shared_ptr<const pl::Plan> LocalPlanner::Next(uint64_t iteration,
                                                   const pl::ModelLoad& last_global) {
  if (loop_.current() == nullptr) {
    // Nothing observed yet: start from static even sharding.
    pl::Plan start = ExpertParallelPlan(cluster_, model_);
    start.policy = loop_.config().policy;
    absl::StatusOr<std::unique_ptr<pl::Policy>> policy = pl::MakePolicy(start.policy);
    if (policy.ok()) start.semantics = (*policy)->semantics();
    loop_.Follow(std::make_shared<const pl::Plan>(std::move(start)));
  }
  if (last_global.empty() || !loop_.Observe(last_global).ok()) return loop_.current();
  absl::StatusOr<pl::PlanOutcome> d = pl::PlanStep(cluster_, model_, loop_.MakeTask(iteration));
  // A failed step (malformed counts) keeps the plan in force, as damping would.
  if (!d.ok() || !d->plan.has_value()) return loop_.current();
  return loop_.Commit(*std::move(d->plan), iteration == 0 ? 0 : iteration - 1, iteration);
}

}  // namespace hecate::worker
