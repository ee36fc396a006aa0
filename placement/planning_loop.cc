#include "placement/planning_loop.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "placement/sharding.h"

namespace hecate::placement {

namespace {

// A candidate must bring the plan's layers this much closer to the balance target in all (the sum
// of their max/mean over it) to be published for balance.
constexpr double kBalanceStep = 0.01;

}  // namespace

const char* DecisionName(Decision d) {
  switch (d) {
    case Decision::kFirst:
      return "first";
    case Decision::kPolicy:
      return "policy";
    case Decision::kGain:
      return "gain";
    case Decision::kBalance:
      return "balance";
    case Decision::kReshard:
      return "reshard";
    case Decision::kSchedule:
      return "schedule";
    case Decision::kDamped:
      return "damped";
    case Decision::kFrozen:
      return "frozen";
  }
  return "?";
}

absl::StatusOr<PlanOutcome> DecidePlan(const Policy& policy, const PlanRequest& request,
                                       bool reshard_due, int reshard_period, double damping) {
  if (absl::Status s = CheckRequest(request); !s.ok()) return s;
  PlanOutcome out;
  const Cluster& cluster = *request.cluster;
  const ModelSpec& model = *request.model;
  const Plan* current = request.previous;
  const Owners owners = current != nullptr ? OwnersOf(*current) : EvenSharding(cluster, model);
  PlanRequest r = request;
  r.owners = &owners;
  Plan candidate = policy.Compute(r);
  if (current == nullptr) {
    out.decision = Decision::kFirst;
    out.plan = std::move(candidate);
    return out;
  }
  if (current->policy != policy.name()) {
    out.decision = Decision::kPolicy;
    out.plan = std::move(candidate);
    return out;
  }
  if (policy.SchedulesItself()) {
    // The baseline's own cadence or trigger decided; its migration is paid when it happens.
    if (candidate.layers != current->layers) {
      out.decision = Decision::kSchedule;
      out.plan = std::move(candidate);
    }
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
      if (candidate.layers[l] == in_force.layers[l]) same[l] = &candidate.prediction.layers[l];
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
    // Alg. 2 as the paper breaks ties, and spreading instead; the faster prediction is kept.
    std::optional<Plan> best;
    for (SlotTieBreak tie : {SlotTieBreak::kFewerFree, SlotTieBreak::kMoreFree}) {
      ShardingResult sharding =
          HeterogeneousSharding(cluster, model, ExpertLoads(*request.load), t, &owners, tie);
      if (sharding.migrations.empty()) continue;
      PlanRequest reshard = r;
      reshard.owners = &sharding.owners;
      Plan resharded = policy.Compute(reshard);
      if (!best || resharded.prediction.moe_seconds +
                           resharded.prediction.migration_seconds / std::max(1, reshard_period) <
                       best->prediction.moe_seconds +
                           best->prediction.migration_seconds / std::max(1, reshard_period)) {
        best = std::move(resharded);
      }
    }
    if (best) {
      const double saved = candidate.prediction.moe_seconds - best->prediction.moe_seconds;
      if (saved * reshard_period > best->prediction.migration_seconds) {
        out.decision = Decision::kReshard;
        out.predicted_gain = gain_of(*best);
        out.plan = std::move(*best);
        return out;
      }
    }
  }
  if (out.predicted_gain >= damping) {
    out.decision = Decision::kGain;
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
      out.decision = Decision::kBalance;
      out.plan = std::move(candidate);
      return out;
    }
  }
  out.decision = Decision::kDamped;
  return out;
}

absl::StatusOr<PlanOutcome> PlanStep(const Cluster& cluster, const ModelSpec& model,
                                     PlanningTask task) {
  absl::StatusOr<std::unique_ptr<Policy>> policy = MakePolicy(task.policy);
  if (!policy.ok()) return policy.status();
  const bool window_empty = task.window.history.empty();
  ModelLoad estimate;
  if (task.gate != nullptr && ((*policy)->PlansAfterGate() || window_empty)) {
    estimate = *task.gate;
  } else if (window_empty) {
    return absl::InvalidArgumentError("no load observed yet: nothing to plan from");
  } else {
    estimate = task.window.Estimate();
  }
  task.window = WindowSnapshot();
  PlanRequest request;
  request.cluster = &cluster;
  request.model = &model;
  request.load = &estimate;
  request.previous = task.start != nullptr ? task.start.get() : task.current.get();
  request.iteration = task.iteration;
  request.config = task.planner;
  return DecidePlan(**policy, request, task.reshard_due, task.reshard_period, task.damping);
}

PlanningLoop::PlanningLoop(PlanningConfig config, uint64_t epoch)
    : config_(std::move(config)), epoch_(epoch), window_(config_.window) {}

absl::Status PlanningLoop::Observe(std::shared_ptr<const ModelLoad> load,
                                   std::shared_ptr<const ModelLoad>* evicted,
                                   std::shared_ptr<const LayerTotals> totals) {
  return window_.Push(std::move(load), evicted, std::move(totals));
}

absl::Status PlanningLoop::Observe(const ModelLoad& load) { return window_.Push(load); }

PlanningTask PlanningLoop::MakeTask(uint64_t iteration) {
  PlanningTask t;
  t.iteration = iteration;
  t.window = window_.Snapshot();
  t.current = current_;
  t.policy = config_.policy;
  t.planner = config_.planner;
  t.reshard_period = config_.reshard_period;
  t.damping = config_.damping;
  t.reshard_due =
      config_.reshard_period > 0 && current_ != nullptr &&
      iteration >= last_reshard_iteration_ + static_cast<uint64_t>(config_.reshard_period);
  if (t.reshard_due) last_reshard_iteration_ = iteration;
  return t;
}

std::shared_ptr<const Plan> PlanningLoop::Commit(Plan plan, uint64_t computed_from,
                                                 uint64_t effective_iteration) {
  plan.id = PlanId{epoch_, next_version_++};
  plan.computed_from_iteration = computed_from;
  plan.effective_iteration = effective_iteration;
  if (current_ == nullptr) {
    plan.sharding_version = 1;
  } else {
    bool owners_changed = false;
    for (size_t l = 0; l < plan.layers.size() && l < current_->layers.size(); ++l) {
      owners_changed = owners_changed || plan.layers[l].owner != current_->layers[l].owner;
    }
    plan.sharding_version = current_->sharding_version + (owners_changed ? 1 : 0);
  }
  current_ = std::make_shared<const Plan>(std::move(plan));
  return current_;
}

void PlanningLoop::Restore(std::shared_ptr<const Plan> plan) {
  next_version_ = std::max(next_version_, plan->id.version + 1);
  current_ = std::move(plan);
}

void PlanningLoop::Follow(std::shared_ptr<const Plan> plan) {
  epoch_ = plan->id.epoch;
  next_version_ = plan->id.version + 1;
  current_ = std::move(plan);
}

Judgement CalibratePlan(Plan plan, const ModelLoad& actual, const CalibrationRule& rule,
                        const CostModel& decide, const CostModel& time) {
  Judgement j;
  j.plan = std::move(plan);
  j.plan.migrations.clear();
  if (!rule.enabled || !PolicyCalibrates(j.plan.policy)) return j;
  for (LayerId l = 0; l < static_cast<LayerId>(j.plan.layers.size()); ++l) {
    CalibrationResult cal =
        CalibrateLayer(decide, l, j.plan.layers[l], actual[l], j.plan.dispatch_rule, rule);
    if (!cal.accepted) continue;
    int64_t bytes = 0;
    j.late_seconds +=
        time.SparseCollectiveSeconds(l, LateCopies(j.plan.layers[l], cal.layer), &bytes);
    j.late_bytes += bytes;
    j.copies_gathered += cal.copies_added;
    j.copies_dropped += cal.copies_dropped;
    ++j.calibrated_layers;
    j.plan.layers[l] = std::move(cal.layer);
  }
  return j;
}

Judgement Judge(const Plan& plan, const ModelLoad& actual, const CalibrationRule& rule,
                const CostModel& decide, const CostModel& time) {
  Judgement j = CalibratePlan(plan, actual, rule, decide, time);
  time.Evaluate(&j.plan, actual);
  return j;
}

double MaxOverMean(const LayerPrediction& p) {
  return p.mean_tokens > 0 ? p.max_tokens / p.mean_tokens : 1.0;
}

}  // namespace hecate::placement
