#include "worker/plan_source.h"

#include "placement/planner.h"
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
    const pl::Cluster& cluster, const pl::ModelSpec& model, const LocalPlannerConfig& config) {
  absl::StatusOr<std::unique_ptr<pl::Policy>> policy = pl::MakePolicy(config.policy);
  if (!policy.ok()) return policy.status();
  return std::unique_ptr<LocalPlanner>(
      new LocalPlanner(cluster, model, config, std::move(*policy)));
}

LocalPlanner::LocalPlanner(const pl::Cluster& cluster, const pl::ModelSpec& model,
                           LocalPlannerConfig config, std::unique_ptr<pl::Policy> policy)
    : cluster_(cluster),
      model_(model),
      config_(std::move(config)),
      policy_(std::move(policy)),
      window_(config_.window) {}

void LocalPlanner::Seed(std::shared_ptr<const pl::Plan> plan) { current_ = std::move(plan); }

void LocalPlanner::Observe(const pl::ModelLoad& last_global) {
  if (!last_global.empty()) (void)window_.Push(last_global);
}

std::shared_ptr<const pl::Plan> LocalPlanner::Next(uint64_t iteration,
                                                   const pl::ModelLoad& last_global) {
  if (current_ == nullptr) {
    // Nothing observed yet: start from static even sharding.
    pl::Plan start = ExpertParallelPlan(cluster_, model_);
    start.policy = policy_->name();
    start.semantics = policy_->semantics();
    current_ = std::make_shared<const pl::Plan>(std::move(start));
  }
  if (last_global.empty() || !window_.Push(last_global).ok()) return current_;
  const pl::ModelLoad estimate = window_.Estimate();
  pl::PlanRequest request{&cluster_, &model_,   &estimate,      current_.get(),
                          nullptr,   iteration, config_.planner};
  const bool reshard_due =
      config_.reshard_period > 0 &&
      iteration >= last_reshard_ + static_cast<uint64_t>(config_.reshard_period);
  if (reshard_due) last_reshard_ = iteration;
  pl::PlanDecision d =
      pl::DecidePlan(*policy_, request, reshard_due, config_.reshard_period, config_.damping);
  last_decision_ = d.decision;
  if (!d.plan.has_value()) return current_;
  pl::Plan next = std::move(*d.plan);
  next.id = {current_->id.epoch, current_->id.version + 1};
  next.effective_iteration = iteration;
  next.computed_from_iteration = iteration == 0 ? 0 : iteration - 1;
  bool owners_changed = false;
  for (size_t l = 0; l < next.layers.size(); ++l) {
    owners_changed = owners_changed || next.layers[l].owner != current_->layers[l].owner;
  }
  next.sharding_version = current_->sharding_version + (owners_changed ? 1 : 0);
  current_ = std::make_shared<const pl::Plan>(std::move(next));
  return current_;
}

}  // namespace hecate::worker
