// The controller's state machine: job registry, worker liveness, validated load ingest, planning
// triggers, freeze, policy and plan history. Each job's load window, re-shard cadence, plan ids
// and sharding versions are its placement::PlanningLoop (the same loop the workers' local planner
// and the simulator run). Plain C++ over plain data: time is passed in, nothing blocks, no I/O,
// no gRPC.
//
// Planning itself (running the placement policies) is a pure function, ComputePlan(), that the
// service runs on its own thread between TakePlanningTasks() and CommitPlan(), so a slow plan never
// delays report ingest; PlanWithRevisions() adds the revisions of a stale first plan.
//
// Not thread-safe: the owner (controller/service) serializes every call under one mutex.
#ifndef HECATE_CONTROLLER_CORE_CONTROLLER_CORE_H_
#define HECATE_CONTROLLER_CORE_CONTROLLER_CORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "placement/cluster.h"
#include "placement/load.h"
#include "placement/plan.h"
#include "placement/planning_loop.h"
#include "placement/policy.h"
#include "wire/types.h"

namespace hecate::controller {

struct CoreConfig {
  std::string default_policy = "hecate";
  // Sliding-window length for load estimates (paper: w = 5).
  int window = 5;
  // A plan computed from iteration i takes effect at i + lead (>= 2).
  int lead = 2;
  // Re-shard (Alg. 2) every this many iterations when the gain covers the migration (paper: 100).
  int reshard_period = 100;
  // Publish a new plan only if it is predicted this much faster (relative) than the plan in force.
  double damping = 0.02;
  // Finalize an iteration this long after its first report even if some live ranks are missing.
  absl::Duration report_deadline = absl::Seconds(5);
  // A rank not heard from for this long is stale (still waited for), then lost (not waited for).
  absl::Duration stale_after = absl::Seconds(10);
  absl::Duration lost_after = absl::Seconds(60);
  // Incomplete iterations kept per job; older ones are finalized as they are.
  int max_pending_iterations = 16;
  // Plans kept in memory per job (the store keeps its own bound).
  int max_history = 256;
  placement::PlannerConfig planner;
};

enum class WorkerState { kLive, kStale, kLost };
const char* WorkerStateName(WorkerState s);

// A worker's registration and load report, as the wire carries them (wire/types.h).
using wire::LoadReport;
using wire::PhaseTimes;
using wire::WorkerRegistration;

struct WorkerInfo {
  WorkerRegistration reg;
  WorkerState state = WorkerState::kLive;
  absl::Time last_seen;
  bool reported = false;
  uint64_t last_iteration = 0;
  uint64_t last_report_hash = 0;
  placement::PlanId last_plan;
};

// Why a report was rejected (metric label `result`), or accepted.
enum class ReportResult {
  kAccepted,
  kDuplicate,
  kLate,  // accepted, but its iteration was already finalized
  kUnknownJob,
  kUnknownWorker,
  kStaleIncarnation,
  kBadShape,
  kIterationBackwards,
  kConflict,
  kFuturePlan,
  kAbsurdCounts,
  kOversized,
  kMalformed,  // bytes that do not parse as a LoadReport
  kBadSecret,  // the worker secret does not match the rank's registration
};
const char* ReportResultName(ReportResult r);
std::vector<ReportResult> AllReportResults();

struct IngestOutcome {
  ReportResult result = ReportResult::kAccepted;
  absl::Status status;     // OK for accepted / duplicate / late
  bool finalized = false;  // the report completed an iteration (planning may be due)
};

// Revisions of a job's stale first plan before it is published (see TakeRevisionTask): each is a
// warm plan (a fraction of the cold one), and after two the plan goes out whatever finalized.
inline constexpr int kMaxFirstPlanRevisions = 2;

// Everything ComputePlan needs, copied out of the core.
struct PlanningTask {
  std::string job_id;
  placement::ClusterSpec cluster;
  placement::ModelSpec model;
  // The job's planning loop's task (window snapshot, plan in force, policy, cadence). On a
  // revision task (TakeRevisionTask), `step.start` is the unpublished first plan to revise warm;
  // `step.current` stays the plan in force.
  placement::PlanningTask step;
  // The finalized iteration's actual counts (shared with the window; null when none).
  std::shared_ptr<const placement::ModelLoad> observed;
  int revisions = 0;  // of `step.start` so far
  bool frozen = false;
  // How the workers calibrate (rank 0's registration): the observation judges the plan in force
  // that way.
  placement::CalibrationRule workers_calibration;
};

struct LayerObservation {
  // Observed mean/max device tokens under the plan in force (as the workers calibrate it).
  double balancedness = 1;
  double predicted_balancedness = 1;
  double expert_max = 0, expert_p50 = 0, expert_min = 0;  // expert load / mean
};

struct PlanningResult {
  std::string job_id;
  uint64_t iteration = 0;
  // The plan to publish (id unset), or nullopt when damping or a freeze held it back.
  std::optional<placement::Plan> plan;
  placement::Decision decision = placement::Decision::kDamped;
  // Not OK when planning failed (the decision is then meaningless and no plan is published).
  absl::Status status;
  double predicted_gain = 0;  // relative, vs the plan in force on the same estimate
  // How many times the job's first plan was revised on a newer window before publication (at
  // most kMaxFirstPlanRevisions).
  int revisions = 0;
  std::vector<LayerObservation> layers;
};

// Observes what happened under the plan in force, then runs the job's planning step
// (placement::PlanStep: the policy, heterogeneous sharding when due, damping). Pure. Takes the
// task by value: the window snapshot is released as soon as the estimate is computed, so the core
// can recycle the iteration that leaves the window next.
PlanningResult ComputePlan(PlanningTask task);

// ComputePlan, then, while `take_revision` (the core's TakeRevisionTask, called under the
// owner's lock) returns a task, the revisions of a stale first plan; stops when a revision is
// damped (nothing newer to gain).
PlanningResult PlanWithRevisions(
    PlanningTask task,
    absl::FunctionRef<std::optional<PlanningTask>(const PlanningResult&)> take_revision);

struct JobStatusView {
  std::string job_id;
  int world_size = 0;
  int live = 0, stale = 0, lost = 0;
  placement::PlanId current_plan;
  uint64_t last_planned_iteration = 0;
  std::string policy;
  bool frozen = false;
  uint64_t plans_published = 0;
};

struct LayerLoadView {
  int layer = 0;
  std::vector<double> expert_tokens;
  int window_iterations = 0;
  double max_over_mean = 0;
  double observed_balancedness = 0;
};

// What survives a restart (the store's snapshot).
struct JobRecord {
  std::string job_id;
  int world_size = 0;
  std::string policy;
  bool frozen = false;
  placement::ModelSpec model;
};

class ControllerCore {
 public:
  ControllerCore(CoreConfig config, uint64_t epoch);

  uint64_t epoch() const { return epoch_; }
  const CoreConfig& config() const { return config_; }

  // --- recovery (before serving) ---
  void RestoreJob(const JobRecord& job);
  void RestoreWorker(const WorkerRegistration& reg, absl::Time now);
  // Plans must be restored in ascending version order.
  void RestorePlan(const placement::Plan& plan);

  // --- workers ---
  // INVALID_ARGUMENT: malformed (rank >= world size, invalid model); FAILED_PRECONDITION: the job
  // exists with a different world size or model, or the incarnation is older than the registered
  // one. A newer incarnation supersedes the old one and takes `reg.secret_sha256` (the digest of
  // the secret the caller issues it). The same incarnation registering again keeps its digest and
  // must present its secret (`presented_sha256`, the digest of what the request carried):
  // PERMISSION_DENIED otherwise, and nothing changes.
  absl::Status Register(const WorkerRegistration& reg, absl::Time now,
                        const std::string& presented_sha256 = "");
  // The registration of `rank` in `job`; null when there is none.
  const WorkerRegistration* FindWorker(const std::string& job, int rank) const;
  // Validates before any state change; a rejected report changes nothing.
  IngestOutcome Ingest(const LoadReport& report, absl::Time now);
  // Liveness (stale/lost) and deadline-based finalization.
  void Tick(absl::Time now);
  // Iterations finalized since the last call, as planning work (one task per job, newest).
  std::vector<PlanningTask> TakePlanningTasks();
  // A job's first plan is cold and can take seconds at thousands of devices; when iterations
  // finalized while it was computed, it is stale before it is out. For such a result (decision
  // "first", a plan, the job still without one, not frozen, a newer iteration finalized, fewer
  // than kMaxFirstPlanRevisions revisions so far), returns a task that revises it warm on the
  // newest window (consuming that iteration's trigger), so workers get one current plan instead of
  // a stale one and its corrections a moment later. ComputePlan on it returns the revision, or the
  // plan it revised when the revision does not pass damping; either way with decision "first".
  // Nullopt otherwise.
  std::optional<PlanningTask> TakeRevisionTask(const PlanningResult& first);
  // Publishes `result.plan` (if any) as the job's next version. Returns the published plan, or
  // null when the result carries no plan or the job is frozen. FAILED_PRECONDITION when the job
  // no longer exists.
  absl::StatusOr<std::shared_ptr<const placement::Plan>> CommitPlan(const PlanningResult& result,
                                                                    absl::Time now);

  // --- queries ---
  // NOT_FOUND for an unknown job or plan version, INVALID_ARGUMENT for a layer out of range.
  absl::StatusOr<std::shared_ptr<const placement::Plan>> GetPlan(const std::string& job,
                                                                 uint64_t version) const;
  std::shared_ptr<const placement::Plan> CurrentPlan(const std::string& job) const;
  std::vector<WorkerInfo> ListWorkers(const std::string& job) const;  // empty job: all
  absl::StatusOr<std::vector<LayerLoadView>> GetLoad(const std::string& job) const;
  std::vector<JobStatusView> Jobs() const;
  std::vector<LayerObservation> Observations(const std::string& job) const;
  bool HasJob(const std::string& job) const { return jobs_.count(job) > 0; }
  std::optional<JobRecord> GetJobRecord(const std::string& job) const;

  // --- admin --- (empty job: every job)
  absl::StatusOr<std::vector<std::string>> Freeze(const std::string& job);
  absl::StatusOr<std::vector<std::string>> Unfreeze(const std::string& job);
  // NOT_FOUND for an unknown policy or job. Returns the previous policy.
  absl::StatusOr<std::string> SetPolicy(const std::string& job, const std::string& policy);
  const std::string& default_policy() const { return config_.default_policy; }
  // Publishes a new version whose placement equals `to_version`'s.
  absl::StatusOr<std::shared_ptr<const placement::Plan>> Rollback(const std::string& job,
                                                                  uint64_t to_version,
                                                                  absl::Time now);
  // Records planning observations (from ComputePlan) for queries and metrics.
  void RecordObservations(const std::string& job, std::vector<LayerObservation> layers);

 private:
  struct Pending {
    std::vector<char> reported;
    placement::ModelLoad load;
    placement::LayerTotals totals;  // expert totals of the rows reported so far
    absl::Time first_seen;
    int count = 0;
    double attention_sum = 0;
  };
  struct Job {
    JobRecord record;
    std::vector<std::optional<WorkerInfo>> workers;  // by rank
    int not_lost = 0;  // registered ranks not lost (kept by Recount and Ingest)
    // The load window, re-shard cadence, plan ids and the plan in force.
    placement::PlanningLoop loop;
    std::map<uint64_t, Pending> pending;
    bool has_finalized = false;
    uint64_t last_finalized = 0;
    std::shared_ptr<const placement::ModelLoad> last_observed;
    // An iteration's matrices that left the window, reused for the next pending iteration
    // (a fresh one is 8 bytes x ranks x experts x layers of page faults under the lock).
    std::unique_ptr<placement::ModelLoad> spare;
    bool planning_due = false;
    uint64_t last_planned_iteration = 0;
    double attention_ema = 0;  // measured attention forward seconds
    std::vector<std::shared_ptr<const placement::Plan>> history;
    uint64_t plans_published = 0;
    std::vector<LayerObservation> observations;
    Job(placement::PlanningConfig planning, uint64_t epoch) : loop(std::move(planning), epoch) {}
  };

  Job* FindJob(const std::string& job);
  const Job* FindJob(const std::string& job) const;
  // The cluster as derived from registrations (ranks grouped by node, in rank order); nullopt
  // until every rank registered.
  std::optional<placement::ClusterSpec> DeriveCluster(const Job& job) const;
  void Finalize(Job& job, uint64_t iteration);
  // Recomputes job.not_lost from the workers' states.
  static void Recount(Job& job);
  void FinalizeUpTo(Job& job, uint64_t iteration);
  // `computed_from`: the last iteration in the plan's window.
  std::shared_ptr<const placement::Plan> Publish(Job& job, placement::Plan plan,
                                                 uint64_t computed_from);
  std::optional<PlanningTask> MakeTask(Job& job);
  void UpdateLiveness(Job& job, absl::Time now);

  CoreConfig config_;
  uint64_t epoch_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;
};

}  // namespace hecate::controller

#endif  // HECATE_CONTROLLER_CORE_CONTROLLER_CORE_H_
