// One planning decision, shared by the controller's planning loop and the workers' local
// (fail-static) planner so both decide identically: run the policy on the current sharding, and,
// when a re-shard is due, also on Alg. 2's sharding; publish the re-shard when the time it saves
// over one period covers its migration, else publish the policy's plan when it is predicted at
// least `damping` faster than the plan in force (evaluated on the same estimate), or when its
// layers are in all at least 0.01 closer to the config's balance_target (the sum over layers of
// max/mean over it) and it is predicted at most balance_budget slower. Pure.
#ifndef HECATE_PLACEMENT_PLANNER_H_
#define HECATE_PLACEMENT_PLANNER_H_

#include <optional>
#include <string>

#include "placement/policy.h"

namespace hecate::placement {

struct PlanDecision {
  std::optional<Plan> plan;  // nullopt: keep the plan in force
  std::string decision;      // "first", "policy", "gain", "balance", "reshard", "damped", "error"
  double predicted_gain = 0;
  bool reshard = false;
  std::string error;
};

// `request.previous` is the plan in force (may be null); `request.owners` is ignored (the
// sharding comes from the plan in force, or even sharding at the start).
PlanDecision DecidePlan(const Policy& policy, const PlanRequest& request, bool reshard_due,
                        int reshard_period, double damping);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_PLANNER_H_
