#include "controller/core/controller_core.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/clock.h"

namespace hecate::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kWorld = 4;

placement::ModelSpec Model() {
  // 2 layers x 4 experts, top-1, 100 tokens per device.
  placement::ModelSpec m = placement::UniformModel("tiny", 2, 4, 1, 16, 32, 4, 100, 1e-3);
  return m;
}

WorkerRegistration Reg(int rank, uint64_t incarnation = 1, const std::string& job = "job") {
  WorkerRegistration r;
  r.job_id = job;
  r.rank = rank;
  r.world_size = kWorld;
  r.node = rank < 2 ? "a" : "b";
  r.local_rank = rank % 2;
  r.device_kind = "cpu";
  r.device_memory_bytes = int64_t{1} << 30;
  r.incarnation = incarnation;
  r.model = Model();
  r.links.intra_node_bandwidth_bytes_per_second = 1e10;
  r.links.inter_node_bandwidth_bytes_per_second = 1e9;
  r.links.nodes.push_back({"", 1, 0, 1e11});
  return r;
}

// Rank r routes `hot` tokens to expert 0 and the rest evenly.
LoadReport Report(int rank, uint64_t iteration, int64_t hot = 70, placement::PlanId plan = {},
                  int hot_expert = 0) {
  LoadReport r;
  r.job_id = "job";
  r.rank = rank;
  r.incarnation = 1;
  r.iteration = iteration;
  r.plan = plan;
  for (int l = 0; l < 2; ++l)
    r.layers.push_back({hot, (100 - hot) / 3, (100 - hot) / 3, 100 - hot - 2 * ((100 - hot) / 3)});
  for (auto& row : r.layers) std::swap(row[0], row[hot_expert]);
  r.timings.attention_seconds = 1e-3;
  r.tokens = 100;
  return r;
}

class CoreTest : public ::testing::Test {
 protected:
  CoreTest() : core_(Config(), /*epoch=*/3) {}
  static CoreConfig Config() {
    CoreConfig c;
    c.window = 2;
    c.reshard_period = 4;
    c.report_deadline = absl::Seconds(5);
    c.stale_after = absl::Seconds(10);
    c.lost_after = absl::Seconds(30);
    return c;
  }
  void RegisterAll() {
    for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(core_.Register(Reg(r), clock_.Now()).ok());
  }
  // Every rank reports `iteration`; returns the planning tasks that became due.
  std::vector<PlanningTask> ReportAll(uint64_t iteration, int64_t hot = 70, int hot_expert = 0) {
    placement::PlanId plan =
        core_.CurrentPlan("job") ? core_.CurrentPlan("job")->id : placement::PlanId{};
    for (int r = 0; r < kWorld; ++r) {
      IngestOutcome o = core_.Ingest(Report(r, iteration, hot, plan, hot_expert), clock_.Now());
      EXPECT_TRUE(o.status.ok()) << o.status;
    }
    return core_.TakePlanningTasks();
  }
  // Runs planning the way the service does and commits.
  std::shared_ptr<const placement::Plan> PlanAndCommit(const std::vector<PlanningTask>& tasks,
                                                       std::string* decision = nullptr) {
    std::shared_ptr<const placement::Plan> last;
    for (const PlanningTask& t : tasks) {
      PlanningResult r = ComputePlan(t);
      if (decision) *decision = placement::DecisionName(r.decision);
      auto committed = core_.CommitPlan(r, clock_.Now());
      EXPECT_TRUE(committed.ok());
      if (*committed) last = *committed;
    }
    return last;
  }

  FakeClock clock_;
  ControllerCore core_;
};

// Finalized matrices that leave the window are reused for later iterations; a rank that does not
// report in such an iteration still counts zero, never its old numbers. (Fresh matrices are not
// zeroed either: the same Finalize step keeps them honest.)
TEST_F(CoreTest, RecycledLoadMatricesCountMissingRanksAsZero) {
  RegisterAll();
  for (uint64_t it = 0; it < 3; ++it) ReportAll(it);  // window 2: iteration 0 left the window
  for (int r = 1; r < kWorld; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 3), clock_.Now()).status.ok());
  }
  EXPECT_TRUE(core_.TakePlanningTasks().empty());  // still waiting for rank 0
  clock_.Advance(absl::Seconds(6));                // past the report deadline
  core_.Tick(clock_.Now());
  std::vector<PlanningTask> tasks = core_.TakePlanningTasks();
  ASSERT_EQ(tasks.size(), 1u);
  ASSERT_NE(tasks[0].observed, nullptr);
  EXPECT_EQ(tasks[0].step.iteration, 3u);
  for (const placement::LoadMatrix& m : *tasks[0].observed) {
    for (int e = 0; e < m.num_experts(); ++e) EXPECT_EQ(m.at(0, e), 0) << "expert " << e;
    EXPECT_EQ(m.at(1, 0), 70);
  }
  // The window's expert totals (kept as the rows arrive) agree: iteration 2 had every rank,
  // iteration 3 all but rank 0.
  const std::vector<LayerLoadView> load = *core_.GetLoad("job");
  ASSERT_EQ(load.size(), 2u);
  EXPECT_EQ(load[1].window_iterations, 2);
  EXPECT_DOUBLE_EQ(load[1].expert_tokens[0], (kWorld * 70 + (kWorld - 1) * 70) / 2.0);
  EXPECT_DOUBLE_EQ(load[1].expert_tokens[3], (kWorld * 10 + (kWorld - 1) * 10) / 2.0);
}

TEST_F(CoreTest, RegistrationAndIncarnations) {
  ASSERT_TRUE(core_.Register(Reg(0, 5), clock_.Now()).ok());
  // Same incarnation: idempotent.
  EXPECT_TRUE(core_.Register(Reg(0, 5), clock_.Now()).ok());
  // Older: refused, registry unchanged.
  absl::Status older = core_.Register(Reg(0, 4), clock_.Now());
  EXPECT_EQ(older.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(core_.ListWorkers("job")[0].reg.incarnation, 5u);
  // Newer supersedes; the old incarnation's reports are refused.
  ASSERT_TRUE(core_.Register(Reg(0, 6), clock_.Now()).ok());
  EXPECT_EQ(core_.ListWorkers("job")[0].reg.incarnation, 6u);
  LoadReport old = Report(0, 1);
  old.incarnation = 5;
  EXPECT_EQ(core_.Ingest(old, clock_.Now()).result, ReportResult::kStaleIncarnation);

  WorkerRegistration bad = Reg(1);
  bad.world_size = 8;
  EXPECT_EQ(core_.Register(bad, clock_.Now()).code(), absl::StatusCode::kFailedPrecondition);
  bad = Reg(1);
  bad.model.layers.pop_back();
  EXPECT_EQ(core_.Register(bad, clock_.Now()).code(), absl::StatusCode::kFailedPrecondition);
  bad = Reg(1);
  bad.rank = 4;
  EXPECT_EQ(core_.Register(bad, clock_.Now()).code(), absl::StatusCode::kInvalidArgument);
  bad = Reg(1);
  bad.job_id = "";
  EXPECT_EQ(core_.Register(bad, clock_.Now()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_.ListWorkers("job").size(), 1u);
}

TEST_F(CoreTest, StaleThenLost) {
  RegisterAll();
  clock_.Advance(absl::Seconds(11));
  core_.Tick(clock_.Now());
  EXPECT_EQ(core_.Jobs()[0].stale, 4);
  ASSERT_TRUE(core_.Ingest(Report(0, 0), clock_.Now()).status.ok());
  core_.Tick(clock_.Now());
  EXPECT_EQ(core_.Jobs()[0].live, 1);
  clock_.Advance(absl::Seconds(20));
  core_.Tick(clock_.Now());
  EXPECT_EQ(core_.Jobs()[0].lost, 3);
  EXPECT_EQ(core_.Jobs()[0].stale, 1);
}

TEST_F(CoreTest, PlansWhenAllRanksReported) {
  RegisterAll();
  for (int r = 0; r < kWorld - 1; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 0), clock_.Now()).status.ok());
  }
  EXPECT_TRUE(core_.TakePlanningTasks().empty());  // rank 3 still missing
  ASSERT_TRUE(core_.Ingest(Report(3, 0), clock_.Now()).status.ok());
  std::vector<PlanningTask> tasks = core_.TakePlanningTasks();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].step.iteration, 0u);
  EXPECT_EQ(tasks[0].cluster.nodes.size(), 2u);  // "a" and "b"
  std::string decision;
  auto plan = PlanAndCommit(tasks, &decision);
  ASSERT_NE(plan, nullptr);
  EXPECT_EQ(decision, "first");
  EXPECT_EQ(plan->id, (placement::PlanId{3, 1}));
  EXPECT_EQ(plan->effective_iteration, 2u);  // lead 2
  EXPECT_EQ(plan->sharding_version, 1u);
  EXPECT_GT(plan->layers[0].replicas[0].size(), 1u);  // the hot expert got copies
}

// Ingest says when a report completes an iteration (the service wakes the planner only then); a
// lost rank is not waited for, and counts again once it reports.
TEST_F(CoreTest, IngestTellsWhenAnIterationCompletesAndLostRanksAreNotAwaited) {
  RegisterAll();
  for (int r = 0; r < kWorld - 1; ++r) {
    EXPECT_FALSE(core_.Ingest(Report(r, 0), clock_.Now()).finalized);
  }
  EXPECT_TRUE(core_.Ingest(Report(kWorld - 1, 0), clock_.Now()).finalized);
  // Rank 3 goes quiet until lost; the others keep reporting.
  for (int s = 0; s < 4; ++s) {
    clock_.Advance(absl::Seconds(9));
    for (int r = 0; r < kWorld - 1; ++r) {
      ASSERT_TRUE(core_.Ingest(Report(r, 1 + s), clock_.Now()).status.ok());
    }
    core_.Tick(clock_.Now());
    core_.TakePlanningTasks();
  }
  ASSERT_EQ(core_.Jobs()[0].lost, 1);
  for (int r = 0; r < kWorld - 2; ++r) {
    EXPECT_FALSE(core_.Ingest(Report(r, 5), clock_.Now()).finalized);
  }
  EXPECT_TRUE(core_.Ingest(Report(kWorld - 2, 5), clock_.Now()).finalized);  // 3 of 3 not lost
  // Rank 3 is back: the next iteration waits for all four again.
  EXPECT_FALSE(core_.Ingest(Report(kWorld - 1, 6), clock_.Now()).finalized);
  for (int r = 0; r < kWorld - 2; ++r) {
    EXPECT_FALSE(core_.Ingest(Report(r, 6), clock_.Now()).finalized);
  }
  EXPECT_TRUE(core_.Ingest(Report(kWorld - 2, 6), clock_.Now()).finalized);
}

TEST_F(CoreTest, DeadlineFinalizesWithoutALaggard) {
  RegisterAll();
  for (int r = 0; r < kWorld - 1; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 0), clock_.Now()).status.ok());
  }
  core_.Tick(clock_.Now());
  EXPECT_TRUE(core_.TakePlanningTasks().empty());
  clock_.Advance(absl::Seconds(5));
  core_.Tick(clock_.Now());
  EXPECT_EQ(core_.TakePlanningTasks().size(), 1u);
  // The laggard's report for the finalized iteration is accepted as late and changes nothing.
  EXPECT_EQ(core_.Ingest(Report(3, 0), clock_.Now()).result, ReportResult::kLate);
  EXPECT_TRUE(core_.TakePlanningTasks().empty());
}

TEST_F(CoreTest, DampingHoldsBackUselessPlans) {
  RegisterAll();
  ASSERT_NE(PlanAndCommit(ReportAll(0)), nullptr);
  std::string decision;
  EXPECT_EQ(PlanAndCommit(ReportAll(1), &decision), nullptr);  // same loads: no gain
  EXPECT_EQ(decision, "damped");
  EXPECT_EQ(core_.CurrentPlan("job")->id.version, 1u);
  // The hot expert moves: a new plan pays off.
  PlanAndCommit(ReportAll(2, 70, 3));
  PlanAndCommit(ReportAll(3, 70, 3));
  EXPECT_GT(core_.CurrentPlan("job")->id.version, 1u);
}

// The workers calibrate hecate's plans on each iteration's counts; the observed balancedness
// the controller reports is that of the plan as they calibrate it. After the hot expert moves,
// the plan in force (copies of the old hot expert) is worse balanced as published than as
// calibrated; for workers that do not calibrate the controller reports the published plan's.
TEST_F(CoreTest, ObservedBalancednessFollowsTheWorkersCalibration) {
  RegisterAll();
  ASSERT_NE(PlanAndCommit(ReportAll(0, 85)), nullptr);
  ASSERT_EQ(core_.CurrentPlan("job")->policy, "hecate");
  std::vector<PlanningTask> tasks = ReportAll(1, 85, 3);
  ASSERT_EQ(tasks.size(), 1u);
  PlanningTask published = tasks[0];
  published.workers_calibration.enabled = false;
  const PlanningResult as_published = ComputePlan(published);
  const PlanningResult as_calibrated = ComputePlan(tasks[0]);
  ASSERT_EQ(as_published.layers.size(), 2u);
  ASSERT_EQ(as_calibrated.layers.size(), 2u);
  for (int l = 0; l < 2; ++l) {
    EXPECT_GT(as_calibrated.layers[l].balancedness, as_published.layers[l].balancedness + 0.05)
        << "layer " << l;
  }
}

TEST_F(CoreTest, ReshardCadence) {
  RegisterAll();
  PlanAndCommit(ReportAll(0));
  int due = 0;
  for (uint64_t i = 1; i <= 9; ++i) {
    std::vector<PlanningTask> tasks = ReportAll(i);
    ASSERT_EQ(tasks.size(), 1u);
    due += tasks[0].step.reshard_due;
    PlanAndCommit(tasks);
  }
  EXPECT_EQ(due, 2);  // iterations 4 and 8 (period 4)
}

TEST_F(CoreTest, FreezeStopsPublishing) {
  RegisterAll();
  ASSERT_TRUE(core_.Freeze("job").ok());
  std::string decision;
  EXPECT_EQ(PlanAndCommit(ReportAll(0), &decision), nullptr);
  EXPECT_EQ(decision, "frozen");
  EXPECT_EQ(core_.CurrentPlan("job"), nullptr);
  ASSERT_THAT(*core_.Unfreeze(""), ElementsAre());
  EXPECT_NE(PlanAndCommit(ReportAll(1)), nullptr);
  EXPECT_EQ(core_.Freeze("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CoreTest, SetPolicyReplans) {
  RegisterAll();
  PlanAndCommit(ReportAll(0));
  EXPECT_EQ(core_.SetPolicy("job", "bogus").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> prev = core_.SetPolicy("job", "ep");
  ASSERT_TRUE(prev.ok());
  EXPECT_EQ(*prev, "hecate");
  std::string decision;
  auto plan = PlanAndCommit(core_.TakePlanningTasks(), &decision);
  ASSERT_NE(plan, nullptr);
  EXPECT_EQ(decision, "policy");
  EXPECT_EQ(plan->policy, "ep");
}

// A first plan that is already stale when it is done (iterations finalized while it was computed)
// is revised on the newest window before it is published, at most kMaxFirstPlanRevisions times;
// each revision uses up the trigger of the iteration it plans from.
TEST_F(CoreTest, StaleFirstPlanIsRevisedBeforePublication) {
  RegisterAll();
  std::vector<PlanningTask> tasks = ReportAll(0, /*hot=*/70, /*hot_expert=*/0);
  ASSERT_EQ(tasks.size(), 1u);
  PlanningResult first = ComputePlan(tasks[0]);
  ASSERT_EQ(first.decision, placement::Decision::kFirst);
  ASSERT_TRUE(first.plan.has_value());
  // Nothing newer yet: no revision.
  EXPECT_FALSE(core_.TakeRevisionTask(first).has_value());

  // While it was computed, two iterations finalized with expert 3 hot instead of expert 0.
  for (uint64_t it = 1; it <= 2; ++it) {
    for (int r = 0; r < kWorld; ++r) {
      ASSERT_TRUE(core_.Ingest(Report(r, it, 70, {}, /*hot_expert=*/3), clock_.Now()).status.ok());
    }
  }
  std::optional<PlanningTask> revision = core_.TakeRevisionTask(first);
  ASSERT_TRUE(revision.has_value());
  EXPECT_EQ(revision->step.iteration, 2u);
  ASSERT_NE(revision->step.start, nullptr);
  EXPECT_EQ(revision->step.current, nullptr);      // still no plan in force
  EXPECT_TRUE(core_.TakePlanningTasks().empty());  // the trigger went to the revision

  PlanningResult revised = ComputePlan(*revision);
  EXPECT_EQ(revised.decision, placement::Decision::kFirst);
  EXPECT_EQ(revised.revisions, 1);
  ASSERT_TRUE(revised.plan.has_value());
  EXPECT_FALSE(core_.TakeRevisionTask(revised).has_value());  // nothing newer
  // The revision copies the now-hot expert 3 more than the first plan did (window: iterations 1-2).
  EXPECT_GT(revised.plan->layers[0].replicas[3].size(), first.plan->layers[0].replicas[3].size());

  // A newer iteration again: revisions stop at kMaxFirstPlanRevisions.
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 3, 70, {}, /*hot_expert=*/3), clock_.Now()).status.ok());
  }
  PlanningResult at_max = revised;
  at_max.revisions = kMaxFirstPlanRevisions;
  EXPECT_FALSE(core_.TakeRevisionTask(at_max).has_value());
  revision = core_.TakeRevisionTask(revised);
  ASSERT_TRUE(revision.has_value());
  EXPECT_EQ(revision->revisions, 1);
  EXPECT_EQ(revision->step.iteration, 3u);
  PlanningResult again = ComputePlan(*revision);  // the same hot expert: damped, kept as it was
  EXPECT_EQ(again.revisions, 1);
  EXPECT_EQ(again.decision, placement::Decision::kFirst);
  EXPECT_EQ(again.plan->layers[0].replicas, revised.plan->layers[0].replicas);

  auto published = core_.CommitPlan(revised, clock_.Now());
  ASSERT_TRUE(published.ok());
  ASSERT_NE(*published, nullptr);
  EXPECT_EQ((*published)->id.version, 1u);
  EXPECT_EQ((*published)->computed_from_iteration, 2u);
  EXPECT_EQ((*published)->layers[0].replicas, revised.plan->layers[0].replicas);
  // With a plan in force there is nothing to revise.
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 4, 70, (*published)->id, 3), clock_.Now()).status.ok());
  }
  EXPECT_FALSE(core_.TakeRevisionTask(first).has_value());
  EXPECT_EQ(core_.TakePlanningTasks().size(), 1u);
}

// A revision that does not pass damping publishes the first plan as it is.
TEST_F(CoreTest, DampedRevisionPublishesTheFirstPlan) {
  RegisterAll();
  PlanningResult first = ComputePlan(ReportAll(0)[0]);
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 1), clock_.Now()).status.ok());  // the same loads
  }
  std::optional<PlanningTask> revision = core_.TakeRevisionTask(first);
  ASSERT_TRUE(revision.has_value());
  PlanningResult revised = ComputePlan(*revision);
  EXPECT_EQ(revised.decision, placement::Decision::kFirst);
  EXPECT_EQ(revised.revisions, 0);
  ASSERT_TRUE(revised.plan.has_value());
  for (size_t l = 0; l < first.plan->layers.size(); ++l) {
    EXPECT_EQ(revised.plan->layers[l].replicas, first.plan->layers[l].replicas) << "layer " << l;
    EXPECT_EQ(revised.plan->layers[l].owner, first.plan->layers[l].owner) << "layer " << l;
  }
  // A frozen job gets no revision.
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 2), clock_.Now()).status.ok());
  }
  ASSERT_TRUE(core_.Freeze("job").ok());
  EXPECT_FALSE(core_.TakeRevisionTask(first).has_value());
}

TEST_F(CoreTest, RollbackPublishesANewVersion) {
  RegisterAll();
  auto v1 = PlanAndCommit(ReportAll(0));
  ASSERT_TRUE(core_.SetPolicy("job", "ep").ok());
  PlanAndCommit(core_.TakePlanningTasks());
  auto rolled = core_.Rollback("job", 1, clock_.Now());
  ASSERT_TRUE(rolled.ok());
  EXPECT_EQ((*rolled)->id.version, 3u);
  EXPECT_EQ((*rolled)->layers[0].replicas, v1->layers[0].replicas);
  EXPECT_EQ(core_.Rollback("job", 99, clock_.Now()).status().code(), absl::StatusCode::kNotFound);
}

// Every bad report gets its code and reason, and leaves the state exactly as it was.
TEST_F(CoreTest, BadReportsAreRejectedWithoutChangingState) {
  RegisterAll();
  PlanAndCommit(ReportAll(0));
  ASSERT_TRUE(core_.Ingest(Report(0, 1, 70, {3, 1}), clock_.Now()).status.ok());
  struct Case {
    std::string name;
    LoadReport report;
    ReportResult result;
    absl::StatusCode code;
  };
  auto with = [](std::function<void(LoadReport&)> f) {
    LoadReport r = Report(1, 1, 70, {3, 1});
    f(r);
    return r;
  };
  std::vector<Case> cases = {
      {"unknown job", with([](LoadReport& r) { r.job_id = "other"; }), ReportResult::kUnknownJob,
       absl::StatusCode::kNotFound},
      {"unknown rank", with([](LoadReport& r) { r.rank = 9; }), ReportResult::kUnknownWorker,
       absl::StatusCode::kNotFound},
      {"stale incarnation", with([](LoadReport& r) { r.incarnation = 0; }),
       ReportResult::kStaleIncarnation, absl::StatusCode::kFailedPrecondition},
      {"layer count", with([](LoadReport& r) { r.layers.pop_back(); }), ReportResult::kBadShape,
       absl::StatusCode::kInvalidArgument},
      {"expert count", with([](LoadReport& r) { r.layers[1].push_back(0); }),
       ReportResult::kBadShape, absl::StatusCode::kInvalidArgument},
      {"absurd counts", with([](LoadReport& r) { r.layers[0][2] = 1'000'000; }),
       ReportResult::kAbsurdCounts, absl::StatusCode::kInvalidArgument},
      {"future plan", with([](LoadReport& r) {
         r.plan = {3, 7};
       }),
       ReportResult::kFuturePlan, absl::StatusCode::kInvalidArgument},
      {"future epoch", with([](LoadReport& r) {
         r.plan = {4, 1};
       }),
       ReportResult::kFuturePlan, absl::StatusCode::kInvalidArgument},
      {"backwards", with([](LoadReport& r) {
         r.rank = 0;
         r.iteration = 0;
       }),
       ReportResult::kIterationBackwards, absl::StatusCode::kOutOfRange},
      {"conflicting duplicate", with([](LoadReport& r) {
         r.rank = 0;
         r.layers[0][0] = 69;
         r.layers[0][1] += 1;
       }),
       ReportResult::kConflict, absl::StatusCode::kAlreadyExists},
  };
  const std::vector<WorkerInfo> workers_before = core_.ListWorkers("job");
  const std::vector<LayerLoadView> load_before = *core_.GetLoad("job");
  for (const Case& c : cases) {
    IngestOutcome o = core_.Ingest(c.report, clock_.Now());
    EXPECT_EQ(o.result, c.result) << c.name;
    EXPECT_EQ(o.status.code(), c.code) << c.name << ": " << o.status;
    std::vector<WorkerInfo> after = core_.ListWorkers("job");
    for (size_t i = 0; i < after.size(); ++i) {
      EXPECT_EQ(after[i].last_iteration, workers_before[i].last_iteration) << c.name;
      EXPECT_EQ(after[i].last_report_hash, workers_before[i].last_report_hash) << c.name;
    }
    EXPECT_EQ(core_.GetLoad("job")->at(0).expert_tokens, load_before[0].expert_tokens) << c.name;
    EXPECT_TRUE(core_.TakePlanningTasks().empty()) << c.name;
  }
  // An exact duplicate is idempotent.
  EXPECT_EQ(core_.Ingest(Report(0, 1, 70, {3, 1}), clock_.Now()).result, ReportResult::kDuplicate);
  // After all that, the iteration completes normally.
  for (int r = 1; r < kWorld; ++r) {
    ASSERT_TRUE(core_.Ingest(Report(r, 1, 70, {3, 1}), clock_.Now()).status.ok());
  }
  EXPECT_EQ(core_.TakePlanningTasks().size(), 1u);
}

TEST_F(CoreTest, QueriesReportNotFound) {
  EXPECT_EQ(core_.GetPlan("job", 0).status().code(), absl::StatusCode::kNotFound);
  RegisterAll();
  EXPECT_EQ(core_.GetPlan("job", 0).status().code(), absl::StatusCode::kNotFound);
  PlanAndCommit(ReportAll(0));
  EXPECT_TRUE(core_.GetPlan("job", 1).ok());
  EXPECT_THAT(std::string(core_.GetPlan("job", 2).status().message()), HasSubstr("version 2"));
  EXPECT_EQ(core_.GetLoad("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(core_.GetLoad("job")->size(), 2u);
}

TEST_F(CoreTest, RestoreRecoversVersionsUnderANewEpoch) {
  RegisterAll();
  auto v1 = PlanAndCommit(ReportAll(0));
  ControllerCore restarted(Config(), 4);
  restarted.RestoreJob(*core_.GetJobRecord("job"));
  for (const WorkerInfo& w : core_.ListWorkers("job")) restarted.RestoreWorker(w.reg, clock_.Now());
  restarted.RestorePlan(*v1);
  EXPECT_EQ(restarted.CurrentPlan("job")->id, (placement::PlanId{3, 1}));
  // Reports that ran under the old epoch's plan are fine; new plans carry epoch 4, version 2.
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(restarted.Ingest(Report(r, 5, 20, {3, 1}), clock_.Now()).status.ok());
  }
  std::vector<PlanningTask> tasks = restarted.TakePlanningTasks();
  ASSERT_EQ(tasks.size(), 1u);
  PlanningResult result = ComputePlan(tasks[0]);
  result.plan = result.plan.value_or(*v1);  // force a publish
  auto p = restarted.CommitPlan(result, clock_.Now());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->id, (placement::PlanId{4, 2}));
}

}  // namespace
}  // namespace hecate::controller
