#include "controller/core/controller_core.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "placement/cost_model.h"
#include "placement/planning_loop.h"
#include "placement/sharding.h"

namespace hecate::controller {

namespace pl = placement;

const char* WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kLive:
      return "live";
    case WorkerState::kStale:
      return "stale";
    case WorkerState::kLost:
      return "lost";
  }
  return "?";
}

const char* ReportResultName(ReportResult r) {
  switch (r) {
    case ReportResult::kAccepted:
      return "accepted";
    case ReportResult::kDuplicate:
      return "duplicate";
    case ReportResult::kLate:
      return "late";
    case ReportResult::kUnknownJob:
      return "unknown_job";
    case ReportResult::kUnknownWorker:
      return "unknown_worker";
    case ReportResult::kStaleIncarnation:
      return "stale_incarnation";
    case ReportResult::kBadShape:
      return "bad_shape";
    case ReportResult::kIterationBackwards:
      return "iteration_backwards";
    case ReportResult::kConflict:
      return "conflict";
    case ReportResult::kFuturePlan:
      return "future_plan";
    case ReportResult::kAbsurdCounts:
      return "absurd_counts";
    case ReportResult::kOversized:
      return "oversized";
    case ReportResult::kMalformed:
      return "malformed";
    case ReportResult::kBadSecret:
      return "bad_secret";
  }
  return "?";
}

std::vector<ReportResult> AllReportResults() {
  return {
      ReportResult::kAccepted,   ReportResult::kDuplicate,          ReportResult::kLate,
      ReportResult::kUnknownJob, ReportResult::kUnknownWorker,      ReportResult::kStaleIncarnation,
      ReportResult::kBadShape,   ReportResult::kIterationBackwards, ReportResult::kConflict,
      ReportResult::kFuturePlan, ReportResult::kAbsurdCounts,       ReportResult::kOversized,
      ReportResult::kMalformed,  ReportResult::kBadSecret};
}

namespace {

// Compares two digests in time independent of where they differ.
bool DigestsEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool SameModel(const pl::ModelSpec& a, const pl::ModelSpec& b) {
  if (a.top_k != b.top_k || a.layers.size() != b.layers.size()) return false;
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const pl::LayerSpec &x = a.layers[l], &y = b.layers[l];
    if (x.num_experts != y.num_experts || x.expert_param_bytes != y.expert_param_bytes ||
        x.expert_optimizer_bytes != y.expert_optimizer_bytes) {
      return false;
    }
  }
  return true;
}

// Identifies a report's content for duplicate detection (in memory only). Runs under the
// service's lock for every report (15k counts at 58 x 256), so it hashes eight bytes at a time in
// four independent multiply-xorshift lanes rather than byte by byte.
uint64_t HashReport(const LoadReport& r) {
  auto mix = [](uint64_t h, uint64_t v) {
    h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
  };
  uint64_t lane[4] = {0x243F6A8885A308D3ULL, 0x13198A2E03707344ULL, 0xA4093822299F31D0ULL,
                      0x082EFA98EC4E6C89ULL};
  lane[0] = mix(lane[0], r.iteration);
  lane[1] = mix(lane[1], r.plan.epoch);
  lane[2] = mix(lane[2], r.plan.version);
  for (const auto& row : r.layers) {
    lane[3] = mix(lane[3], row.size());
    size_t i = 0;
    for (; i + 4 <= row.size(); i += 4) {
      for (int k = 0; k < 4; ++k) lane[k] = mix(lane[k], static_cast<uint64_t>(row[i + k]));
    }
    for (; i < row.size(); ++i) lane[0] = mix(lane[0], static_cast<uint64_t>(row[i]));
  }
  return mix(mix(mix(lane[0], lane[1]), lane[2]), lane[3]);
}

IngestOutcome Reject(ReportResult result, absl::Status status) {
  return IngestOutcome{result, std::move(status)};
}

}  // namespace

ControllerCore::ControllerCore(CoreConfig config, uint64_t epoch)
    : config_(std::move(config)), epoch_(epoch) {
  if (config_.lead < 2) config_.lead = 2;
}

ControllerCore::Job* ControllerCore::FindJob(const std::string& job) {
  auto it = jobs_.find(job);
  return it == jobs_.end() ? nullptr : it->second.get();
}

const ControllerCore::Job* ControllerCore::FindJob(const std::string& job) const {
  auto it = jobs_.find(job);
  return it == jobs_.end() ? nullptr : it->second.get();
}

std::optional<JobRecord> ControllerCore::GetJobRecord(const std::string& job) const {
  const Job* j = FindJob(job);
  if (j == nullptr) return std::nullopt;
  return j->record;
}

void ControllerCore::RestoreJob(const JobRecord& record) {
  pl::PlanningConfig planning;
  planning.policy = record.policy;
  planning.window = config_.window;
  planning.reshard_period = config_.reshard_period;
  planning.damping = config_.damping;
  planning.planner = config_.planner;
  auto job = std::make_unique<Job>(std::move(planning), epoch_);
  job->record = record;
  job->workers.resize(record.world_size);
  jobs_[record.job_id] = std::move(job);
}

void ControllerCore::RestoreWorker(const WorkerRegistration& reg, absl::Time now) {
  Job* job = FindJob(reg.job_id);
  if (job == nullptr || reg.rank < 0 || reg.rank >= static_cast<int>(job->workers.size())) return;
  WorkerInfo info;
  info.reg = reg;
  info.last_seen = now;  // restarted: give every rank a fresh liveness deadline
  job->workers[reg.rank] = info;
  Recount(*job);
}

void ControllerCore::Recount(Job& job) {
  job.not_lost = 0;
  for (const auto& w : job.workers) {
    if (w.has_value() && w->state != WorkerState::kLost) ++job.not_lost;
  }
}

void ControllerCore::RestorePlan(const pl::Plan& plan) {
  Job* job = FindJob(plan.job_id);
  if (job == nullptr) return;
  auto p = std::make_shared<const pl::Plan>(plan);
  job->history.push_back(p);
  if (static_cast<int>(job->history.size()) > config_.max_history) {
    job->history.erase(job->history.begin());
  }
  job->loop.Restore(p);
  ++job->plans_published;
}

const WorkerRegistration* ControllerCore::FindWorker(const std::string& job_id, int rank) const {
  const Job* job = FindJob(job_id);
  if (job == nullptr || rank < 0 || rank >= static_cast<int>(job->workers.size()) ||
      !job->workers[rank].has_value()) {
    return nullptr;
  }
  return &job->workers[rank]->reg;
}

absl::Status ControllerCore::Register(const WorkerRegistration& reg, absl::Time now,
                                      const std::string& presented_sha256) {
  if (reg.job_id.empty()) return absl::InvalidArgumentError("job_id is empty");
  if (reg.world_size < 1) return absl::InvalidArgumentError("world_size must be >= 1");
  if (reg.rank < 0 || reg.rank >= reg.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", reg.rank, " out of range for world size ", reg.world_size));
  }
  if (reg.device_memory_bytes <= 0) {
    return absl::InvalidArgumentError("device_memory_bytes must be > 0");
  }
  if (absl::Status s = reg.model.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model: ", s.message()));
  }
  if (reg.calibration.enabled && !(reg.calibration.options.target > 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration target must be > 1, not ", reg.calibration.options.target));
  }
  Job* job = FindJob(reg.job_id);
  if (job != nullptr) {
    if (job->record.world_size != reg.world_size) {
      return absl::FailedPreconditionError(absl::StrCat("job ", reg.job_id, " has world size ",
                                                        job->record.world_size, ", not ",
                                                        reg.world_size));
    }
    if (!SameModel(job->record.model, reg.model)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", reg.job_id, " was registered with a different model"));
    }
    const std::optional<WorkerInfo>& existing = job->workers[reg.rank];
    if (existing.has_value() && reg.incarnation < existing->reg.incarnation) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", reg.rank, " incarnation ", reg.incarnation,
                       " is older than the registered ", existing->reg.incarnation));
    }
    if (existing.has_value() && reg.incarnation == existing->reg.incarnation &&
        !existing->reg.secret_sha256.empty() &&
        !DigestsEqual(presented_sha256, existing->reg.secret_sha256)) {
      return absl::PermissionDeniedError(
          absl::StrCat("rank ", reg.rank, " incarnation ", reg.incarnation,
                       " is registered; registering it again needs its worker secret"));
    }
  }
  // Validated: change state.
  if (job == nullptr) {
    JobRecord record;
    record.job_id = reg.job_id;
    record.world_size = reg.world_size;
    record.policy = config_.default_policy;
    record.model = reg.model;
    RestoreJob(record);
    job = FindJob(reg.job_id);
  }
  std::optional<WorkerInfo>& slot = job->workers[reg.rank];
  if (slot.has_value() && slot->reg.incarnation == reg.incarnation) {
    if (slot->reg.secret_sha256.empty()) slot->reg.secret_sha256 = reg.secret_sha256;
    slot->last_seen = now;
    slot->state = WorkerState::kLive;
    Recount(*job);
    return absl::OkStatus();
  }
  WorkerInfo info;
  info.reg = reg;
  info.last_seen = now;
  slot = info;
  Recount(*job);
  return absl::OkStatus();
}

IngestOutcome ControllerCore::Ingest(const LoadReport& r, absl::Time now) {
  Job* job = FindJob(r.job_id);
  if (job == nullptr) {
    return Reject(ReportResult::kUnknownJob,
                  absl::NotFoundError(absl::StrCat("unknown job '", r.job_id, "'")));
  }
  if (r.rank < 0 || r.rank >= static_cast<int>(job->workers.size()) ||
      !job->workers[r.rank].has_value()) {
    return Reject(ReportResult::kUnknownWorker,
                  absl::NotFoundError(
                      absl::StrCat("rank ", r.rank, " of job '", r.job_id, "' is not registered")));
  }
  WorkerInfo& worker = *job->workers[r.rank];
  if (r.incarnation != worker.reg.incarnation) {
    return Reject(ReportResult::kStaleIncarnation,
                  absl::FailedPreconditionError(
                      absl::StrCat("rank ", r.rank, " incarnation ", r.incarnation,
                                   " is not the registered ", worker.reg.incarnation)));
  }
  const pl::ModelSpec& model = job->record.model;
  if (static_cast<int>(r.layers.size()) != model.num_layers()) {
    return Reject(ReportResult::kBadShape,
                  absl::InvalidArgumentError(absl::StrCat(
                      "report has ", r.layers.size(), " layers, model has ", model.num_layers())));
  }
  const int64_t per_device = model.tokens_per_device > 0 ? model.tokens_per_device : r.tokens;
  const int64_t bound = per_device > 0 ? per_device * model.top_k : -1;
  for (int l = 0; l < model.num_layers(); ++l) {
    if (static_cast<int>(r.layers[l].size()) != model.layers[l].num_experts) {
      return Reject(ReportResult::kBadShape,
                    absl::InvalidArgumentError(
                        absl::StrCat("layer ", l, " has ", r.layers[l].size(),
                                     " experts, model has ", model.layers[l].num_experts)));
    }
    int64_t sum = 0;
    for (int64_t v : r.layers[l]) {
      if (v < 0 || (bound >= 0 && v > bound)) {
        sum = -1;
        break;
      }
      sum += v;
    }
    if (sum < 0 || (bound >= 0 && sum > bound)) {
      return Reject(ReportResult::kAbsurdCounts,
                    absl::InvalidArgumentError(absl::StrCat(
                        "layer ", l, ": counts exceed tokens per step x top-k (", bound, ")")));
    }
  }
  const pl::PlanId current = job->loop.current() ? job->loop.current()->id : pl::PlanId{};
  if (current < r.plan) {
    return Reject(ReportResult::kFuturePlan,
                  absl::InvalidArgumentError(absl::StrCat(
                      "report ran under plan ", r.plan.epoch, ".", r.plan.version,
                      ", newer than the current ", current.epoch, ".", current.version)));
  }
  const uint64_t hash = HashReport(r);
  if (worker.reported) {
    if (r.iteration < worker.last_iteration) {
      return Reject(
          ReportResult::kIterationBackwards,
          absl::OutOfRangeError(absl::StrCat(
              "iteration ", r.iteration, " is before the last reported ", worker.last_iteration)));
    }
    if (r.iteration == worker.last_iteration) {
      if (hash == worker.last_report_hash) {
        worker.last_seen = now;
        return IngestOutcome{ReportResult::kDuplicate, absl::OkStatus()};
      }
      return Reject(ReportResult::kConflict,
                    absl::AlreadyExistsError(absl::StrCat(
                        "iteration ", r.iteration, " was already reported with other counts")));
    }
  }

  // Accepted: change state.
  worker.reported = true;
  worker.last_iteration = r.iteration;
  worker.last_report_hash = hash;
  worker.last_plan = r.plan;
  worker.last_seen = now;
  if (worker.state == WorkerState::kLost) ++job->not_lost;
  worker.state = WorkerState::kLive;
  if (job->has_finalized && r.iteration <= job->last_finalized) {
    return IngestOutcome{ReportResult::kLate, absl::OkStatus()};
  }
  const int devices = job->record.world_size;
  auto [it, inserted] = job->pending.try_emplace(r.iteration);
  Pending& p = it->second;
  if (inserted) {
    p.reported.assign(devices, 0);
    if (job->spare != nullptr) {
      p.load = std::move(*job->spare);  // same shape; rows are overwritten or zeroed at finalize
      job->spare.reset();
    } else {
      // Unset, not zeroed: every reported row is copied in whole and Finalize zeroes the others.
      for (const pl::LayerSpec& spec : model.layers) {
        p.load.emplace_back(devices, spec.num_experts, pl::LoadMatrix::Unset{});
      }
    }
    p.totals.clear();
    for (const pl::LayerSpec& spec : model.layers) p.totals.emplace_back(spec.num_experts, 0);
    p.first_seen = now;
  }
  if (!p.reported[r.rank]) {
    p.reported[r.rank] = 1;
    ++p.count;
    p.attention_sum += r.timings.attention_seconds;
    for (int l = 0; l < model.num_layers(); ++l) {
      std::copy(r.layers[l].begin(), r.layers[l].end(), p.load[l].row(r.rank));
      std::vector<int64_t>& totals = p.totals[l];
      for (size_t e = 0; e < totals.size(); ++e) totals[e] += r.layers[l][e];
    }
  }
  IngestOutcome outcome{ReportResult::kAccepted, absl::OkStatus()};
  if (p.count >= job->not_lost) {
    FinalizeUpTo(*job, r.iteration);
    outcome.finalized = true;
  }
  while (static_cast<int>(job->pending.size()) > config_.max_pending_iterations) {
    FinalizeUpTo(*job, job->pending.begin()->first);
    outcome.finalized = true;
  }
  return outcome;
}

void ControllerCore::Finalize(Job& job, uint64_t iteration) {
  auto it = job.pending.find(iteration);
  if (it == job.pending.end()) return;
  Pending& p = it->second;
  // Ranks that did not report count zero (a recycled matrix still holds older rows).
  for (int r = 0; r < static_cast<int>(p.reported.size()); ++r) {
    if (p.reported[r]) continue;
    for (pl::LoadMatrix& m : p.load) std::fill(m.row(r), m.row(r) + m.num_experts(), 0);
  }
  // Shared, not copied: this runs under the service's lock.
  auto load = std::make_shared<const pl::ModelLoad>(std::move(p.load));
  auto totals = std::make_shared<const pl::LayerTotals>(std::move(p.totals));
  std::shared_ptr<const pl::ModelLoad> evicted;
  (void)job.loop.Observe(load, &evicted, std::move(totals));  // shape fixed by the job's model
  if (evicted != nullptr && evicted.use_count() == 1) {
    // Nobody else holds it (planning tasks and snapshots share, never mutate): recycle.
    job.spare = std::make_unique<pl::ModelLoad>(
        std::move(*std::const_pointer_cast<pl::ModelLoad>(evicted)));
  }
  if (p.count > 0 && p.attention_sum > 0) {
    const double mean = p.attention_sum / p.count;
    job.attention_ema = job.attention_ema > 0 ? 0.8 * job.attention_ema + 0.2 * mean : mean;
  }
  job.last_observed = std::move(load);
  job.pending.erase(it);
  job.has_finalized = true;
  job.last_finalized = iteration;
  job.planning_due = true;
}

void ControllerCore::FinalizeUpTo(Job& job, uint64_t iteration) {
  while (!job.pending.empty() && job.pending.begin()->first <= iteration) {
    Finalize(job, job.pending.begin()->first);
  }
}

void ControllerCore::UpdateLiveness(Job& job, absl::Time now) {
  for (auto& w : job.workers) {
    if (!w.has_value()) continue;
    const absl::Duration quiet = now - w->last_seen;
    w->state = quiet >= config_.lost_after    ? WorkerState::kLost
               : quiet >= config_.stale_after ? WorkerState::kStale
                                              : WorkerState::kLive;
  }
  Recount(job);
}

void ControllerCore::Tick(absl::Time now) {
  for (auto& [id, job] : jobs_) {
    UpdateLiveness(*job, now);
    // Deadline: finalize the newest iteration whose first report is old enough (and all before).
    uint64_t due = 0;
    bool any = false;
    for (const auto& [iteration, p] : job->pending) {
      if (now - p.first_seen >= config_.report_deadline) {
        due = iteration;
        any = true;
      }
    }
    if (any) FinalizeUpTo(*job, due);
    // A lost rank no longer holds up an iteration everyone else has reported.
    const int waiting_for = job->not_lost;
    if (waiting_for > 0) {
      uint64_t complete = 0;
      bool found = false;
      for (const auto& [iteration, p] : job->pending) {
        if (p.count >= waiting_for) {
          complete = iteration;
          found = true;
        }
      }
      if (found) FinalizeUpTo(*job, complete);
    }
  }
}

std::optional<pl::ClusterSpec> ControllerCore::DeriveCluster(const Job& job) const {
  pl::ClusterSpec spec;
  for (const auto& w : job.workers) {
    if (!w.has_value()) return std::nullopt;
  }
  const WorkerRegistration& first = job.workers[0]->reg;
  spec.name = job.record.job_id;
  spec.intra_node_bandwidth_bytes_per_second = first.links.intra_node_bandwidth_bytes_per_second;
  spec.inter_node_bandwidth_bytes_per_second = first.links.inter_node_bandwidth_bytes_per_second;
  spec.device_nic_bandwidth_bytes_per_second = first.links.device_nic_bandwidth_bytes_per_second;
  spec.link_latency_seconds = first.links.link_latency_seconds;
  spec.transfers_overlap_compute = first.links.transfers_overlap_compute;
  const double flops =
      first.links.nodes.empty() ? 1e12 : first.links.nodes[0].device_flops_per_second;
  // Consecutive ranks on the same host form a node (launchers number ranks node by node).
  for (const auto& w : job.workers) {
    const WorkerRegistration& reg = w->reg;
    if (spec.nodes.empty() || spec.nodes.back().name != reg.node) {
      spec.nodes.push_back(pl::NodeSpec{reg.node, 0, reg.device_memory_bytes, flops});
    }
    pl::NodeSpec& node = spec.nodes.back();
    ++node.num_devices;
    node.device_memory_bytes = std::min(node.device_memory_bytes, reg.device_memory_bytes);
  }
  return spec;
}

std::optional<PlanningTask> ControllerCore::MakeTask(Job& job) {
  if (!job.planning_due) return std::nullopt;
  std::optional<pl::ClusterSpec> cluster = DeriveCluster(job);
  if (!cluster.has_value()) return std::nullopt;  // wait until every rank registered
  job.planning_due = false;
  PlanningTask t;
  t.job_id = job.record.job_id;
  t.cluster = *std::move(cluster);
  t.model = job.record.model;
  t.step = job.loop.MakeTask(job.last_finalized);
  if (job.attention_ema > 0) t.step.planner.attention_forward_seconds = job.attention_ema;
  t.observed = std::move(job.last_observed);
  job.last_observed.reset();
  t.frozen = job.record.frozen;
  t.workers_calibration = job.workers[0]->reg.calibration;
  return t;
}

std::vector<PlanningTask> ControllerCore::TakePlanningTasks() {
  std::vector<PlanningTask> tasks;
  for (auto& [id, job] : jobs_) {
    std::optional<PlanningTask> t = MakeTask(*job);
    if (t.has_value()) tasks.push_back(*std::move(t));
  }
  return tasks;
}

std::optional<PlanningTask> ControllerCore::TakeRevisionTask(const PlanningResult& first) {
  Job* job = FindJob(first.job_id);
  if (job == nullptr || first.decision != pl::Decision::kFirst || !first.plan.has_value() ||
      job->loop.current() != nullptr || job->record.frozen ||
      first.revisions >= kMaxFirstPlanRevisions) {
    return std::nullopt;
  }
  std::optional<PlanningTask> t = MakeTask(*job);
  if (!t.has_value()) return std::nullopt;
  t->step.start = std::make_shared<const pl::Plan>(*first.plan);
  t->revisions = first.revisions;
  return t;
}

PlanningResult ComputePlan(PlanningTask task) {
  PlanningResult result;
  result.job_id = task.job_id;
  result.iteration = task.step.iteration;
  absl::StatusOr<pl::Cluster> cluster = pl::Cluster::Create(task.cluster);
  if (!cluster.ok()) {
    result.status = cluster.status();
    return result;
  }

  // What happened under the plan in force, as the workers ran it.
  if (task.observed != nullptr) {
    const std::shared_ptr<const pl::Plan>& current = task.step.current;
    std::optional<pl::Judgement> judged;
    if (current != nullptr && current->layers.size() == task.observed->size()) {
      const pl::CostModel cost(*cluster, task.model, task.step.planner.attention_forward_seconds);
      judged = pl::Judge(*current, *task.observed, task.workers_calibration, cost, cost);
    }
    for (int l = 0; l < task.model.num_layers(); ++l) {
      LayerObservation o;
      std::vector<int64_t> totals = (*task.observed)[l].ExpertTotals();
      std::vector<double> ratio(totals.size());
      double sum = 0;
      for (int64_t t : totals) sum += static_cast<double>(t);
      const double mean = totals.empty() ? 0 : sum / totals.size();
      for (size_t e = 0; e < totals.size(); ++e) ratio[e] = mean > 0 ? totals[e] / mean : 0;
      std::sort(ratio.begin(), ratio.end());
      if (!ratio.empty()) {
        o.expert_min = ratio.front();
        o.expert_max = ratio.back();
        o.expert_p50 = ratio[ratio.size() / 2];
      }
      if (judged.has_value()) {
        o.balancedness = judged->plan.prediction.layers[l].balancedness;
        if (l < static_cast<int>(current->prediction.layers.size())) {
          o.predicted_balancedness = current->prediction.layers[l].balancedness;
        }
      }
      result.layers.push_back(o);
    }
  }
  if (task.frozen) {
    result.decision = pl::Decision::kFrozen;
    return result;
  }
  const std::shared_ptr<const pl::Plan> revised = task.step.start;
  absl::StatusOr<pl::PlanOutcome> d = pl::PlanStep(*cluster, task.model, std::move(task.step));
  if (!d.ok()) {
    result.status = d.status();
    return result;
  }
  result.plan = std::move(d->plan);
  result.decision = d->decision;
  result.predicted_gain = d->predicted_gain;
  if (revised != nullptr) {
    // A revised first plan is still the job's first; damped, the first plan goes out as it is.
    result.revisions = task.revisions + (result.plan.has_value() ? 1 : 0);
    if (!result.plan.has_value()) result.plan = *revised;
    result.decision = pl::Decision::kFirst;
  }
  return result;
}

PlanningResult PlanWithRevisions(
    PlanningTask task,
    absl::FunctionRef<std::optional<PlanningTask>(const PlanningResult&)> take_revision) {
  PlanningResult result = ComputePlan(std::move(task));
  for (;;) {
    std::optional<PlanningTask> revision = take_revision(result);
    if (!revision.has_value()) return result;
    const int before = result.revisions;
    result = ComputePlan(*std::move(revision));
    if (result.revisions == before) return result;  // damped: nothing newer to gain
  }
}

std::shared_ptr<const pl::Plan> ControllerCore::Publish(Job& job, pl::Plan plan,
                                                        uint64_t computed_from) {
  plan.job_id = job.record.job_id;
  std::shared_ptr<const pl::Plan> published = job.loop.Commit(
      std::move(plan), computed_from, job.last_finalized + static_cast<uint64_t>(config_.lead));
  job.history.push_back(published);
  if (static_cast<int>(job.history.size()) > config_.max_history) {
    job.history.erase(job.history.begin());
  }
  ++job.plans_published;
  return published;
}

absl::StatusOr<std::shared_ptr<const pl::Plan>> ControllerCore::CommitPlan(
    const PlanningResult& result, absl::Time now) {
  Job* job = FindJob(result.job_id);
  if (job == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("job '", result.job_id, "' is gone"));
  }
  job->observations = result.layers;
  if (!result.plan.has_value() || job->record.frozen) return nullptr;
  job->last_planned_iteration = result.iteration;
  (void)now;
  return Publish(*job, *result.plan, result.iteration);
}

void ControllerCore::RecordObservations(const std::string& job_id,
                                        std::vector<LayerObservation> layers) {
  if (Job* job = FindJob(job_id)) job->observations = std::move(layers);
}

absl::StatusOr<std::shared_ptr<const pl::Plan>> ControllerCore::GetPlan(const std::string& job_id,
                                                                        uint64_t version) const {
  const Job* job = FindJob(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
  if (version == 0) {
    if (job->loop.current() == nullptr) {
      return absl::NotFoundError(absl::StrCat("job '", job_id, "' has no plan yet"));
    }
    return job->loop.current();
  }
  for (const auto& p : job->history) {
    if (p->id.version == version) return p;
  }
  return absl::NotFoundError(absl::StrCat("job '", job_id, "' has no plan version ", version));
}

std::shared_ptr<const pl::Plan> ControllerCore::CurrentPlan(const std::string& job_id) const {
  const Job* job = FindJob(job_id);
  return job == nullptr ? nullptr : job->loop.current();
}

std::vector<WorkerInfo> ControllerCore::ListWorkers(const std::string& job_id) const {
  std::vector<WorkerInfo> out;
  for (const auto& [id, job] : jobs_) {
    if (!job_id.empty() && id != job_id) continue;
    for (const auto& w : job->workers) {
      if (w.has_value()) out.push_back(*w);
    }
  }
  return out;
}

absl::StatusOr<std::vector<LayerLoadView>> ControllerCore::GetLoad(
    const std::string& job_id) const {
  const Job* job = FindJob(job_id);
  if (job == nullptr) return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
  std::vector<LayerLoadView> out;
  for (int l = 0; l < job->record.model.num_layers(); ++l) {
    LayerLoadView v;
    v.layer = l;
    v.expert_tokens = job->loop.window().ExpertMeans(l);
    if (v.expert_tokens.empty()) v.expert_tokens.assign(job->record.model.layers[l].num_experts, 0);
    v.window_iterations = job->loop.window().size();
    double sum = 0, max = 0;
    for (double t : v.expert_tokens) {
      sum += t;
      max = std::max(max, t);
    }
    const double mean = v.expert_tokens.empty() ? 0 : sum / v.expert_tokens.size();
    v.max_over_mean = mean > 0 ? max / mean : 0;
    if (l < static_cast<int>(job->observations.size())) {
      v.observed_balancedness = job->observations[l].balancedness;
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<JobStatusView> ControllerCore::Jobs() const {
  std::vector<JobStatusView> out;
  for (const auto& [id, job] : jobs_) {
    JobStatusView v;
    v.job_id = id;
    v.world_size = job->record.world_size;
    for (const auto& w : job->workers) {
      if (!w.has_value()) continue;
      switch (w->state) {
        case WorkerState::kLive:
          ++v.live;
          break;
        case WorkerState::kStale:
          ++v.stale;
          break;
        case WorkerState::kLost:
          ++v.lost;
          break;
      }
    }
    if (job->loop.current()) v.current_plan = job->loop.current()->id;
    v.last_planned_iteration = job->last_planned_iteration;
    v.policy = job->record.policy;
    v.frozen = job->record.frozen;
    v.plans_published = job->plans_published;
    out.push_back(v);
  }
  return out;
}

std::vector<LayerObservation> ControllerCore::Observations(const std::string& job_id) const {
  const Job* job = FindJob(job_id);
  return job == nullptr ? std::vector<LayerObservation>() : job->observations;
}

absl::StatusOr<std::vector<std::string>> ControllerCore::Freeze(const std::string& job_id) {
  if (!job_id.empty() && FindJob(job_id) == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
  }
  std::vector<std::string> frozen;
  for (auto& [id, job] : jobs_) {
    if (job_id.empty() || id == job_id) job->record.frozen = true;
    if (job->record.frozen) frozen.push_back(id);
  }
  return frozen;
}

absl::StatusOr<std::vector<std::string>> ControllerCore::Unfreeze(const std::string& job_id) {
  if (!job_id.empty() && FindJob(job_id) == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
  }
  std::vector<std::string> frozen;
  for (auto& [id, job] : jobs_) {
    if (job_id.empty() || id == job_id) job->record.frozen = false;
    if (job->record.frozen) frozen.push_back(id);
  }
  return frozen;
}

absl::StatusOr<std::string> ControllerCore::SetPolicy(const std::string& job_id,
                                                      const std::string& policy) {
  if (absl::StatusOr<std::unique_ptr<pl::Policy>> p = pl::MakePolicy(policy); !p.ok()) {
    return p.status();
  }
  if (!job_id.empty()) {
    Job* job = FindJob(job_id);
    if (job == nullptr) return absl::NotFoundError(absl::StrCat("unknown job '", job_id, "'"));
    std::string previous = job->record.policy;
    job->record.policy = policy;
    job->loop.set_policy(policy);
    job->planning_due = job->has_finalized;
    return previous;
  }
  std::string previous = config_.default_policy;
  config_.default_policy = policy;
  for (auto& [id, job] : jobs_) {
    job->record.policy = policy;
    job->loop.set_policy(policy);
    job->planning_due = job->has_finalized;
  }
  return previous;
}

absl::StatusOr<std::shared_ptr<const pl::Plan>> ControllerCore::Rollback(const std::string& job_id,
                                                                         uint64_t to_version,
                                                                         absl::Time now) {
  absl::StatusOr<std::shared_ptr<const pl::Plan>> target = GetPlan(job_id, to_version);
  if (!target.ok()) return target.status();
  Job* job = FindJob(job_id);
  pl::Plan plan = **target;
  plan.migrations.clear();
  if (job->loop.current() != nullptr) {
    plan.migrations =
        pl::Migrations(pl::OwnersOf(*job->loop.current()), pl::OwnersOf(plan), job->record.model);
  }
  const uint64_t computed_from = plan.computed_from_iteration;
  (void)now;
  return Publish(*job, std::move(plan), computed_from);
}

}  // namespace hecate::controller
