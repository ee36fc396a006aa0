#include "placement/planner.h"

#include <algorithm>

#include "placement/sharding.h"

namespace hecate::placement {

namespace {
// A candidate must bring the plan's layers this much closer to the balance target in all (the sum
// of their max/mean over it) to be published for balance.
constexpr double kBalanceStep = 0.01;

Owners OwnersOf(const Plan& plan) {
  Owners owners;
  for (const LayerPlan& l : plan.layers) owners.push_back(l.owner);
  return owners;
}
}  // namespace

PlanDecision DecidePlan(const Policy& policy, const PlanRequest& request, bool reshard_due,
                        int reshard_period, double damping) {
  PlanDecision out;
  if (absl::Status s = CheckRequest(request); !s.ok()) {
    out.decision = "error";
    out.error = std::string(s.message());
    return out;
  }
  const Cluster& cluster = *request.cluster;
  const ModelSpec& model = *request.model;
  const Plan* current = request.previous;
  const Owners owners = current != nullptr ? OwnersOf(*current) : EvenSharding(cluster, model);
  PlanRequest r = request;
  r.owners = &owners;
  Plan candidate = policy.Compute(r);
  if (current == nullptr) {
    out.decision = "first";
    out.plan = std::move(candidate);
    return out;
  }
  if (current->policy != policy.name()) {
    out.decision = "policy";
    out.plan = std::move(candidate);
    return out;
  }
  const CostModel cost(cluster, model, request.config.attention_forward_seconds);
  Plan in_force = *current;
  in_force.migrations.clear();  // already paid
  // A layer the candidate left exactly as it is in force predicts the same on both plans: it is
  // not evaluated twice (with the warm start's unmoved layers, most of them).
  std::vector<const LayerPrediction*> same(in_force.layers.size(), nullptr);
  if (candidate.layers.size() == in_force.layers.size() &&
      candidate.prediction.layers.size() == in_force.layers.size()) {
    for (size_t l = 0; l < in_force.layers.size(); ++l) {
      const LayerPlan& a = candidate.layers[l];
      const LayerPlan& b = in_force.layers[l];
      if (a.owner == b.owner && a.replicas == b.replicas && a.remat == b.remat) {
        same[l] = &candidate.prediction.layers[l];
      }
    }
  }
  cost.Evaluate(&in_force, *request.load, nullptr, &same);
  const double now_s = in_force.prediction.moe_seconds;
  auto gain_of = [&](const Plan& p) {
    return now_s > 0 ? (now_s - p.prediction.moe_seconds - p.prediction.migration_seconds) / now_s
                     : 0.0;
  };
  out.predicted_gain = gain_of(candidate);
  if (reshard_due && policy.semantics() == ReplicaSemantics::kEphemeral) {
    std::vector<int> t;
    for (int l = 0; l < model.num_layers(); ++l) {
      t.push_back(OverlapDegree(cluster, model, l, cost.attention_forward_seconds()));
    }
    ShardingResult sharding =
        HeterogeneousSharding(cluster, model, ExpertLoads(*request.load), t, &owners);
    if (!sharding.migrations.empty()) {
      PlanRequest reshard = r;
      reshard.owners = &sharding.owners;
      Plan resharded = policy.Compute(reshard);
      const double saved = candidate.prediction.moe_seconds - resharded.prediction.moe_seconds;
      if (saved * reshard_period > resharded.prediction.migration_seconds) {
        out.decision = "reshard";
        out.reshard = true;
        out.predicted_gain = gain_of(resharded);
        out.plan = std::move(resharded);
        return out;
      }
    }
  }
  if (out.predicted_gain >= damping) {
    out.decision = "gain";
    out.plan = std::move(candidate);
    return out;
  }
  // Closer to the balance target at no more than balance_budget of predicted time, measured
  // against the plan the policy makes for time alone (not against the plan in force, which may
  // itself have bought balance: successive balance plans would add up).
  const double target = request.config.balance_target;
  const double budget = std::max(0.0, request.config.balance_budget);
  if (policy.BoundsBalance() && target > 0 && out.predicted_gain >= -budget &&
      BalanceOverage(candidate.prediction, target) <
          BalanceOverage(in_force.prediction, target) - kBalanceStep) {
    PlanRequest time_alone = r;
    time_alone.config.balance_target = 0;
    const Plan reference = policy.Compute(time_alone);
    if (candidate.prediction.moe_seconds + candidate.prediction.migration_seconds <=
        (1 + budget) *
            (reference.prediction.moe_seconds + reference.prediction.migration_seconds)) {
      out.decision = "balance";
      out.plan = std::move(candidate);
      return out;
    }
  }
  out.decision = "damped";
  return out;
}

}  // namespace hecate::placement
