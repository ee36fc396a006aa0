#include "placement/planning_loop.h"

#include <gtest/gtest.h>

#include "placement/synthetic.h"

namespace hecate::placement {
namespace {

// The paper's Cluster A (4 x 8, 100 Gb/s a node) and 4 GPT-MoE-S layers under Zipf 1.5 routing,
// one extra slot a device; the plan in force was planned for time alone (balance_target 0) over
// five warm iterations.
struct BalanceDecision : ::testing::Test {
  const Cluster c = Cluster::Uniform(4, 8, int64_t{32} << 30, 62.5e12, 300e9, 12.5e9, 5e-6);
  const ModelSpec m = UniformModel("gpt-moe-s", 4, 64, 2, 768, 1536, 2, 4096, 1.5e-3);
  std::unique_ptr<Policy> policy = *MakePolicy("hecate");
  ModelLoad load;
  Plan in_force;
  PlanRequest r;

  void SetUp() override {
    SkewOptions o;
    o.zipf_s = 1.5;
    load = SkewedLoad(c, m, o, 0);
    r = PlanRequest{&c, &m, &load};
    r.config.extra_slots = 1;
    r.config.balance_target = 0;
    in_force = policy->Compute(r);
    for (int i = 1; i <= 4; ++i) {
      r.previous = &in_force;
      r.iteration = static_cast<uint64_t>(i);
      in_force = policy->Compute(r);
    }
    r.previous = &in_force;
    r.iteration = 5;
  }
};

// With the balance target on, the policy's plan is closer to it and a little slower: not a gain,
// but published for balance while it costs at most balance_budget.
TEST_F(BalanceDecision, PublishesABetterBalancedPlanWithinTheBudget) {
  r.config.balance_target = 1.08;
  r.config.balance_budget = 0.04;
  const absl::StatusOr<PlanOutcome> outcome =
      DecidePlan(*policy, r, /*reshard_due=*/false, 100, /*damping=*/0.02);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const PlanOutcome& d = *outcome;
  EXPECT_EQ(d.decision, Decision::kBalance);
  ASSERT_TRUE(d.plan.has_value());
  EXPECT_LT(d.predicted_gain, 0.02);
  EXPECT_GE(d.predicted_gain, -0.04);
  EXPECT_LT(BalanceOverage(d.plan->prediction, 1.08),
            BalanceOverage(in_force.prediction, 1.08) - 0.01);
  EXPECT_TRUE(Validate(*d.plan, c, m).ok());
}

TEST_F(BalanceDecision, DampedWhenBalanceMayCostNothingOrIsOff) {
  r.config.balance_target = 1.08;
  r.config.balance_budget = 0;
  absl::StatusOr<PlanOutcome> d = DecidePlan(*policy, r, false, 100, 0.02);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->decision, Decision::kDamped);
  EXPECT_FALSE(d->plan.has_value());
  r.config.balance_target = 0;
  r.config.balance_budget = 0.04;
  d = DecidePlan(*policy, r, false, 100, 0.02);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->decision, Decision::kDamped);
}

// Only policies that work toward the target are published for balance alone.
TEST(BoundsBalanceTest, HecateAndHecateRmOnly) {
  for (const std::string& name : PolicyNames()) {
    const bool bounds = (*MakePolicy(name))->BoundsBalance();
    EXPECT_EQ(bounds, name == "hecate" || name == "hecate-rm") << name;
  }
}

TEST(CalibratesTest, HecateAndHecateRmOnly) {
  for (const std::string& name : PolicyNames()) {
    EXPECT_EQ((*MakePolicy(name))->Calibrates(), name == "hecate" || name == "hecate-rm") << name;
    EXPECT_EQ(PolicyCalibrates(name), name == "hecate" || name == "hecate-rm") << name;
  }
  EXPECT_FALSE(PolicyCalibrates("no-such-policy"));
  EXPECT_FALSE(PolicyCalibrates(""));
}

TEST(BalanceOverageTest, SumsHowFarLayersAreOverTheTarget) {
  LayerPrediction a, b, idle;
  a.max_tokens = 130;
  a.mean_tokens = 100;  // 1.30
  b.max_tokens = 105;
  b.mean_tokens = 100;  // 1.05: under
  Prediction p;
  p.layers = {a, b, idle};
  EXPECT_NEAR(BalanceOverage(a, 1.1), 0.2, 1e-12);
  EXPECT_EQ(BalanceOverage(b, 1.1), 0);
  EXPECT_EQ(BalanceOverage(idle, 1.1), 0);
  EXPECT_EQ(BalanceOverage(a, 0), 0) << "no target";
  EXPECT_NEAR(BalanceOverage(p, 1.1), 0.2, 1e-12);
  EXPECT_NEAR(BalanceOverage(p, 1.0), 0.35, 1e-12);
}

// A small cluster and model for the loop's own tests: 2 nodes x 2 devices, 2 layers x 8 experts.
struct LoopFixture : ::testing::Test {
  const Cluster c = Cluster::Uniform(2, 2, int64_t{1} << 30, 1e12, 1e11, 1e10, 1e-5);
  const ModelSpec m = UniformModel("tiny", 2, 8, 2, 64, 128, 4, 512, 1e-4);
  // Zipf routing; `permutation` picks which experts are hot.
  ModelLoad Skewed(uint64_t iteration, uint64_t permutation = 1) const {
    SkewOptions o;
    o.zipf_s = 1.2;
    o.seed = permutation;
    return SkewedLoad(c, m, o, iteration);
  }
  PlanningConfig Config(const std::string& policy, int reshard_period = 4) const {
    PlanningConfig config;
    config.policy = policy;
    config.window = 3;
    config.reshard_period = reshard_period;
    config.damping = 0;
    return config;
  }
};

TEST_F(LoopFixture, ReshardIsDueEveryPeriodSinceTheFirstPlanAndTakingItConsumesIt) {
  PlanningLoop loop(Config("hecate"), /*epoch=*/1);
  EXPECT_FALSE(loop.MakeTask(8).reshard_due) << "no plan in force yet";
  ASSERT_TRUE(loop.Observe(Skewed(0)).ok());
  absl::StatusOr<PlanOutcome> first = PlanStep(c, m, loop.MakeTask(0));
  ASSERT_TRUE(first.ok()) << first.status();
  loop.Commit(*first->plan, 0, 2);
  std::vector<uint64_t> due;
  for (uint64_t i = 1; i <= 9; ++i) {
    if (loop.MakeTask(i).reshard_due) due.push_back(i);
  }
  EXPECT_EQ(due, (std::vector<uint64_t>{4, 8}));
  PlanningLoop never(Config("hecate", /*reshard_period=*/0), 1);
  never.Commit(*first->plan, 0, 2);
  EXPECT_FALSE(never.MakeTask(1000).reshard_due);
}

TEST_F(LoopFixture, CommitNumbersVersionsAndCountsShardingChanges) {
  PlanningLoop loop(Config("hecate"), /*epoch=*/7);
  ASSERT_TRUE(loop.Observe(Skewed(0)).ok());
  absl::StatusOr<PlanOutcome> d = PlanStep(c, m, loop.MakeTask(0));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->decision, Decision::kFirst);
  Plan plan = *d->plan;
  std::shared_ptr<const Plan> first = loop.Commit(plan, /*computed_from=*/0, /*effective=*/2);
  EXPECT_EQ(first->id, (PlanId{7, 1}));
  EXPECT_EQ(first->sharding_version, 1u);
  EXPECT_EQ(first->computed_from_iteration, 0u);
  EXPECT_EQ(first->effective_iteration, 2u);
  EXPECT_EQ(loop.current(), first);
  std::shared_ptr<const Plan> same_owners = loop.Commit(plan, 1, 3);
  EXPECT_EQ(same_owners->id, (PlanId{7, 2}));
  EXPECT_EQ(same_owners->sharding_version, 1u);
  std::swap(plan.layers[1].owner[0], plan.layers[1].owner[7]);
  EXPECT_EQ(loop.Commit(plan, 2, 4)->sharding_version, 2u);

  // Restored plans of an earlier epoch: later versions go above them, in this loop's epoch.
  PlanningLoop restarted(Config("hecate"), /*epoch=*/8);
  restarted.Restore(first);
  restarted.Restore(same_owners);
  EXPECT_EQ(restarted.Commit(plan, 5, 7)->id, (PlanId{8, 3}));
  // Following a plan published elsewhere: its epoch, its version + 1.
  PlanningLoop follower(Config("hecate"), /*epoch=*/0);
  follower.Follow(same_owners);
  EXPECT_EQ(follower.Commit(plan, 5, 5)->id, (PlanId{7, 3}));
}

// FasterMoE decides after the gate, on the iteration's own counts; everyone else from the
// window's estimate (the gate's counts only while the window is empty).
TEST_F(LoopFixture, OnlyPoliciesThatPlanAfterTheGateUseTheGatesCounts) {
  const ModelLoad past = Skewed(1, /*permutation=*/1);
  auto gate = std::make_shared<const ModelLoad>(Skewed(2, /*permutation=*/5));
  for (const std::string policy : {"fastermoe", "hecate"}) {
    PlanningLoop loop(Config(policy), 1);
    PlanningTask empty = loop.MakeTask(0);
    EXPECT_EQ(PlanStep(c, m, empty).status().code(), absl::StatusCode::kInvalidArgument)
        << policy << ": nothing to plan from";
    empty.gate = gate;
    ASSERT_TRUE(PlanStep(c, m, empty).ok()) << policy;
    ASSERT_TRUE(loop.Observe(past).ok());
    PlanningTask task = loop.MakeTask(1);
    task.gate = gate;
    absl::StatusOr<PlanOutcome> with_gate = PlanStep(c, m, task);
    ASSERT_TRUE(with_gate.ok()) << with_gate.status();
    PlanRequest direct{&c, &m, (*MakePolicy(policy))->PlansAfterGate() ? gate.get() : &past};
    direct.iteration = 1;
    const Plan expected = (*MakePolicy(policy))->Compute(direct);
    for (size_t l = 0; l < expected.layers.size(); ++l) {
      EXPECT_EQ(with_gate->plan->layers[l].replicas, expected.layers[l].replicas)
          << policy << " layer " << l;
    }
  }
}

// Judge calibrates only plans whose policy calibrates, only when the workers' rule is on, and
// charges the late gather of what calibration adds.
TEST_F(LoopFixture, JudgeCalibratesAsTheRuleAndThePolicySay) {
  // Slow devices: extra copies of the hot expert pay for their late gather.
  const Cluster slow = Cluster::Uniform(2, 2, int64_t{1} << 30, 1e9, 1e11, 1e10, 1e-5);
  const CostModel cost(slow, m);
  const ModelLoad planned_for = Skewed(3, /*permutation=*/1);
  const ModelLoad actual = Skewed(4, /*permutation=*/6);  // the hot expert moved
  CalibrationRule rule;
  rule.free_copies = 1;
  for (const std::string policy : {"hecate", "hecate-paper", "ep"}) {
    Plan plan = (*MakePolicy(policy))->Compute(PlanRequest{&slow, &m, &planned_for});
    Judgement on = Judge(plan, actual, rule, cost, cost);
    CalibrationRule off = rule;
    off.enabled = false;
    Judgement without = Judge(plan, actual, off, cost, cost);
    EXPECT_EQ(without.calibrated_layers, 0) << policy;
    EXPECT_EQ(without.late_seconds, 0) << policy;
    if (!PolicyCalibrates(policy)) {
      EXPECT_EQ(on.calibrated_layers, 0) << policy;
      continue;
    }
    EXPECT_GT(on.calibrated_layers, 0) << policy;
    EXPECT_GT(on.copies_gathered, 0) << policy;
    EXPECT_GT(on.late_seconds, 0) << policy;
    EXPECT_GT(on.late_bytes, 0) << policy;
    EXPECT_LT(on.plan.prediction.moe_seconds + on.late_seconds, without.plan.prediction.moe_seconds)
        << policy << ": accepted only when it pays";
    EXPECT_TRUE(on.plan.migrations.empty());
    EXPECT_TRUE(Validate(on.plan, slow, m).ok());
  }
}

TEST(CalibrationRuleTest, FreeCopiesPerDeviceOrUpToACap) {
  LayerPlan layer;
  layer.owner = {0, 1, 2};
  layer.replicas = {{0, 1, 2}, {1}, {2}};  // devices 1 and 2 hold one extra copy each
  CalibrationRule rule;
  rule.free_copies = 2;
  EXPECT_EQ(rule.FreeCopies(layer, 3), (std::vector<int>{2, 2, 2}));
  rule.copy_cap = 1;
  EXPECT_EQ(rule.FreeCopies(layer, 3), (std::vector<int>{1, 0, 0}));
}

// A re-shard takes the faster of Alg. 2's two tie-breaks: with two hot and two idle experts a
// layer, the paper's packing leaves the last layer's hot experts together (copies needed); the
// spreading sharding separates them in every layer, and that plan is published.
TEST(ReshardTest, KeepsTheFasterOfTheTwoTieBreaks) {
  const Cluster c = Cluster::Uniform(1, 2, int64_t{1} << 30, 1e11, 1e10, 1e10, 1e-5);
  ModelSpec m = UniformModel("toy", 3, 4, 2, 128, 2048, 4, 1024, 0);
  for (LayerSpec& l : m.layers) l.copy_seconds = 4e-3;
  ModelLoad load;
  for (int l = 0; l < 3; ++l) {
    LoadMatrix lm(2, 4);
    for (DeviceId d = 0; d < 2; ++d) lm.at(d, 0) = lm.at(d, 1) = 512;
    load.push_back(lm);
  }
  std::unique_ptr<Policy> policy = *MakePolicy("hecate");
  PlanRequest r{&c, &m, &load};
  const Plan first = policy->Compute(r);  // even sharding: both hot experts on device 0
  r.previous = &first;
  r.iteration = 1;
  absl::StatusOr<PlanOutcome> o = DecidePlan(*policy, r, /*reshard_due=*/true, 10, 0.02);
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_EQ(o->decision, Decision::kReshard);
  for (int l = 0; l < 3; ++l) {
    const LayerPlan& layer = o->plan->layers[l];
    EXPECT_NE(layer.owner[0], layer.owner[1]) << "layer " << l;
    for (const std::vector<DeviceId>& holders : layer.replicas) EXPECT_EQ(holders.size(), 1u);
  }
}

// A baseline keeps its own cadence: SmartMoE's re-placement on its period is published however
// little it is predicted to gain (no damping), and between periods nothing is.
TEST(ScheduleTest, BaselinesArePublishedOnTheirOwnCadenceWithoutTheGainGate) {
  const Cluster c = Cluster::Uniform(1, 2, int64_t{1} << 30, 1e11, 1e10, 1e10, 1e-5);
  const ModelSpec m = UniformModel("toy", 1, 4, 2, 128, 2048, 4, 1024, 0);
  auto hot = [](ExpertId a, ExpertId b) {
    LoadMatrix lm(2, 4);
    for (DeviceId d = 0; d < 2; ++d) {
      for (ExpertId e = 0; e < 4; ++e) lm.at(d, e) = e == a || e == b ? 500 : 10;
    }
    return ModelLoad{lm};
  };
  std::unique_ptr<Policy> policy = *MakePolicy("smartmoe");
  EXPECT_TRUE(policy->SchedulesItself());
  EXPECT_FALSE((*MakePolicy("hecate"))->SchedulesItself());
  ModelLoad load = hot(0, 2);
  PlanRequest r{&c, &m, &load};
  r.config.smartmoe_period = 10;
  const Plan first = policy->Compute(r);
  EXPECT_NE(first.layers[0].owner[0], first.layers[0].owner[2]);
  load = hot(0, 1);
  r.previous = &first;
  r.iteration = 10;
  absl::StatusOr<PlanOutcome> o = DecidePlan(*policy, r, /*reshard_due=*/true, 10, 1e9);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->decision, Decision::kSchedule);
  ASSERT_TRUE(o->plan.has_value());
  EXPECT_NE(o->plan->layers[0].owner[0], o->plan->layers[0].owner[1]);
  const Plan second = *o->plan;
  r.previous = &second;
  r.iteration = 11;
  load = hot(2, 3);
  o = DecidePlan(*policy, r, /*reshard_due=*/true, 10, 0);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->decision, Decision::kDamped);
  EXPECT_FALSE(o->plan.has_value());
}

TEST(DecisionTest, Names) {
  EXPECT_STREQ(DecisionName(Decision::kSchedule), "schedule");
  EXPECT_STREQ(DecisionName(Decision::kFirst), "first");
  EXPECT_STREQ(DecisionName(Decision::kReshard), "reshard");
  EXPECT_STREQ(DecisionName(Decision::kDamped), "damped");
  EXPECT_STREQ(DecisionName(Decision::kFrozen), "frozen");
}

}  // namespace
}  // namespace hecate::placement
