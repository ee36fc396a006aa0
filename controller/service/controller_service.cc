#include "controller/service/controller_service.h"

#include <grpc/grpc_security_constants.h>

#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "wire/convert.h"
#include "wire/plan_codec.h"

namespace hecate::controller {

namespace pl = placement;

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpc(s));
  return r;
}

const absl::Status kNotReady = absl::UnavailableError("controller is recovering its state");

// "ipv4:10.0.0.5:41234" -> "ipv4:10.0.0.5": streams are counted per peer address, not per
// connection.
std::string PeerHost(const std::string& peer) {
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos || colon < 5 ? peer : peer.substr(0, colon);
}

v1::WorkerState ToProto(WorkerState s) {
  switch (s) {
    case WorkerState::kLive:
      return v1::WORKER_STATE_LIVE;
    case WorkerState::kStale:
      return v1::WORKER_STATE_STALE;
    case WorkerState::kLost:
      return v1::WORKER_STATE_LOST;
  }
  return v1::WORKER_STATE_UNSPECIFIED;
}

double UnixSeconds(absl::Time t) { return absl::ToDoubleSeconds(t - absl::UnixEpoch()); }

// One serialization, shared by every watcher (slices are reference counted).
std::shared_ptr<const grpc::ByteBuffer> Serialize(const v1::Plan& plan) {
  grpc::Slice slice(plan.SerializeAsString());
  return std::make_shared<const grpc::ByteBuffer>(&slice, 1);
}

}  // namespace

// The encodings of one published plan: lean (no per-device predictions), full, lean as a delta
// against the plan published before it (null when there is none), and lean and delta with compact
// holder lists (WatchPlansRequest.compact_holders).
struct ControllerService::Encoded {
  std::shared_ptr<const grpc::ByteBuffer> lean, full, delta, compact_lean, compact_delta;
  pl::PlanId delta_base;
};

// ------------------------------------------------------------------------------------------
// Streams

// One WatchPlans stream: a queue of plans written one at a time. Push is called with the
// service mutex held; the reactor's own mutex guards its queue.
class ControllerService::Watcher : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  Watcher(ControllerService* service, std::string job, pl::PlanId after, bool device_detail,
          bool accept_deltas, bool compact_holders, std::string peer)
      : service_(service),
        job_(std::move(job)),
        peer_(std::move(peer)),
        device_detail_(device_detail),
        accept_deltas_(accept_deltas && !device_detail),
        compact_(compact_holders && !device_detail),
        last_(after) {}

  const std::string& job() const { return job_; }

  void Push(const pl::PlanId& id, const Encoded& plan) {
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    if (!(last_ < id)) return;  // re-delivery of an older or the same plan: no-op
    // A delta only on top of the plan this stream delivered last.
    const bool delta = accept_deltas_ && plan.delta != nullptr && last_ == plan.delta_base;
    if (static_cast<int>(queue_.size()) >= service_->config_.max_watcher_queue) {
      // A stalled watcher: drop it rather than buffer plans for it forever. It reconnects and
      // resumes after the last plan it received.
      if (service_->metrics_ != nullptr) service_->metrics_->LimitRejection("watcher_queue");
      finishing_ = true;
      final_status_ = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                   "watcher fell too many plans behind; reconnect");
      queue_.erase(queue_.begin() + (writing_ ? 1 : 0), queue_.end());
      if (!writing_) Finish(final_status_);
      return;
    }
    last_ = id;
    pushed_ = true;
    queue_.push_back(device_detail_ ? plan.full
                     : delta        ? (compact_ ? plan.compact_delta : plan.delta)
                                    : (compact_ ? plan.compact_lean : plan.lean));
    if (!writing_) {
      writing_ = true;
      StartWrite(queue_.front().get());
    }
  }

  // Writes the acknowledgement (WatchPlansRequest.acknowledge) unless a plan went out already.
  void Acknowledge(std::shared_ptr<const grpc::ByteBuffer> ack) {
    absl::MutexLock lock(&mu_);
    if (finishing_ || pushed_) return;
    pushed_ = true;
    queue_.push_back(std::move(ack));
    writing_ = true;
    StartWrite(queue_.front().get());
  }

  // Ends the stream with `status` once any write in flight completes.
  void Close(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    finishing_ = true;
    final_status_ = std::move(status);
    queue_.erase(queue_.begin() + (writing_ ? 1 : 0), queue_.end());
    if (!writing_) Finish(final_status_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    if (!ok && !finishing_) {
      finishing_ = true;
      final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
      queue_.clear();
    }
    if (!queue_.empty()) {
      StartWrite(queue_.front().get());
      return;
    }
    writing_ = false;
    if (finishing_) Finish(final_status_);
  }

  void OnCancel() override { Close(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")); }

  void OnDone() override {
    service_->RemoveWatcher(this);
    if (!peer_.empty()) service_->ReleaseStream(peer_);
    delete this;
  }
  // Counted against the peer's streams (released when the stream ends).
  void set_counted_peer(std::string peer) { peer_ = std::move(peer); }

 private:
  ControllerService* const service_;
  const std::string job_;
  std::string peer_;
  const bool device_detail_;
  const bool accept_deltas_;
  const bool compact_;
  absl::Mutex mu_;
  pl::PlanId last_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<const grpc::ByteBuffer>> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool pushed_ ABSL_GUARDED_BY(mu_) = false;  // a plan or the acknowledgement was queued
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

// One ReportLoad stream, read raw: each report is parsed and ingested as it arrives; the first
// rejected report ends the stream with its code (a refused caller's stream ends at once).
class ControllerService::ReportReader : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  ReportReader(ControllerService* service, grpc::ByteBuffer* response, absl::Status refused,
               std::string counted_peer)
      : service_(service), response_(response), peer_(std::move(counted_peer)) {
    if (!refused.ok()) {
      Finish(ToGrpc(refused));
      return;
    }
    StartRead(&raw_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      grpc::Slice slice(counts_.SerializeAsString());
      *response_ = grpc::ByteBuffer(&slice, 1);
      Finish(grpc::Status::OK);
      return;
    }
    ReportResult result = ReportResult::kAccepted;
    absl::Status s = Parse();
    if (s.ok()) {
      s = service_->IngestReport(report_, &result);
    } else if (service_->metrics_ != nullptr) {
      service_->metrics_->Report(s.code() == absl::StatusCode::kResourceExhausted
                                     ? ReportResult::kOversized
                                     : ReportResult::kMalformed);
    }
    if (!s.ok()) {
      Finish(ToGrpc(s));
      return;
    }
    counts_.set_accepted(counts_.accepted() + 1);
    if (result == ReportResult::kDuplicate) counts_.set_duplicates(counts_.duplicates() + 1);
    StartRead(&raw_);
  }
  void OnDone() override {
    if (!peer_.empty()) service_->ReleaseStream(peer_);
    delete this;
  }

 private:
  absl::Status Parse() {
    const size_t size = raw_.Length();
    if (static_cast<int64_t>(size) > service_->config_.max_report_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("report of ", size, " bytes exceeds ", service_->config_.max_report_bytes));
    }
    std::vector<grpc::Slice> slices;
    std::string bytes;
    bool ok = raw_.Dump(&slices).ok();
    for (const grpc::Slice& sl : slices) {
      bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
    if (!ok || !report_.ParseFromString(bytes)) {
      return absl::InvalidArgumentError("malformed LoadReport (the bytes do not parse)");
    }
    return absl::OkStatus();
  }

  ControllerService* const service_;
  grpc::ByteBuffer* const response_;
  const std::string peer_;  // counted against its streams; empty: not counted
  grpc::ByteBuffer raw_;
  v1::LoadReport report_;
  v1::ReportLoadResponse counts_;
};

// ------------------------------------------------------------------------------------------

ControllerService::ControllerService(ServiceConfig config, StateStore* store,
                                     ControllerMetrics* metrics, const Clock* clock)
    : config_(std::move(config)),
      store_(store),
      metrics_(metrics),
      clock_(clock),
      started_(clock->Now()) {}

ControllerService::~ControllerService() { Shutdown(); }

uint64_t ControllerService::epoch() const {
  absl::MutexLock lock(&mu_);
  return core_ ? core_->epoch() : 0;
}

int ControllerService::watcher_count() const {
  absl::MutexLock lock(&watchers_mu_);
  int n = 0;
  for (const auto& [job, set] : watchers_) n += static_cast<int>(set.size());
  return n;
}

absl::Status ControllerService::Recover() {
  const absl::Time t0 = clock_->Now();
  absl::StatusOr<StoreSnapshot> snap = store_->Load();
  if (!snap.ok()) return snap.status();
  const uint64_t epoch = snap->epoch + 1;
  if (absl::Status s = store_->SetEpoch(epoch); !s.ok()) return s;
  CoreConfig core_config = config_.core;
  if (auto it = snap->settings.find("default_policy"); it != snap->settings.end()) {
    core_config.default_policy = it->second;
  }
  auto core = std::make_unique<ControllerCore>(core_config, epoch);
  const absl::Time now = clock_->Now();
  for (const JobRecord& job : snap->jobs) core->RestoreJob(job);
  for (const WorkerRegistration& w : snap->workers) core->RestoreWorker(w, now);
  for (const v1::Plan& p : snap->plans) core->RestorePlan(wire::FromProto(p));
  {
    absl::MutexLock lock(&mu_);
    core_ = std::move(core);
  }
  const double seconds = absl::ToDoubleSeconds(clock_->Now() - t0);
  if (metrics_ != nullptr) {
    metrics_->SetEpoch(epoch);
    metrics_->SetRecoverySeconds(seconds);
  }
  LogInfo("recovered state",
          LogFields()("epoch", epoch)("jobs", snap->jobs.size())("workers", snap->workers.size())(
              "plans", snap->plans.size())("seconds", seconds));
  ready_ = true;
  return absl::OkStatus();
}

void ControllerService::Start() {
  if (config_.manual_planning || planner_.joinable()) return;
  planner_ = std::thread([this] { PlannerLoop(); });
}

void ControllerService::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    shutting_down_ = true;  // no watcher registers after this
  }
  {
    absl::MutexLock lock(&watchers_mu_);
    for (auto& [job, set] : watchers_) {
      for (Watcher* w : set) {
        w->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller is shutting down"));
      }
    }
  }
  if (planner_.joinable()) planner_.join();
}

bool ControllerService::AcquireStream(const std::string& peer) {
  if (config_.max_streams_per_peer <= 0) return true;  // unlimited
  absl::MutexLock lock(&streams_mu_);
  int& n = streams_by_peer_[peer];
  if (n >= config_.max_streams_per_peer) return false;
  ++n;
  return true;
}

void ControllerService::ReleaseStream(const std::string& peer) {
  if (config_.max_streams_per_peer <= 0) return;
  absl::MutexLock lock(&streams_mu_);
  auto it = streams_by_peer_.find(peer);
  if (it != streams_by_peer_.end() && --it->second <= 0) streams_by_peer_.erase(it);
}

absl::Status ControllerService::PeerStreamsExhausted(const std::string& peer) {
  if (metrics_ != nullptr) metrics_->LimitRejection("peer_streams");
  return absl::ResourceExhaustedError(
      absl::StrCat(peer, " has ", config_.max_streams_per_peer,
                   " report and watch streams open already (--max_streams_per_peer)"));
}

bool ControllerService::TakeReportToken(const std::string& job, int rank) {
  const double rate = config_.max_reports_per_second;
  if (rate <= 0) return true;
  const absl::Time now = clock_->Now();
  auto [it, fresh] = report_buckets_.try_emplace({job, rank});
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = 2 * rate;
  } else {
    b.tokens = std::min(2 * rate, b.tokens + rate * absl::ToDoubleSeconds(now - b.last));
  }
  b.last = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

void ControllerService::RemoveWatcher(Watcher* w) {
  absl::MutexLock lock(&watchers_mu_);
  auto it = watchers_.find(w->job());
  if (it != watchers_.end()) {
    it->second.erase(w);
    if (it->second.empty()) watchers_.erase(it);
  }
}

void ControllerService::PlannerLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto cond = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_ || shutting_down_; };
      mu_.AwaitWithTimeout(absl::Condition(&cond), config_.tick);
      if (shutting_down_) return;
      wake_ = false;
    }
    RunPlannerOnce();
  }
}

void ControllerService::RunPlannerOnce() {
  if (!ready_) return;
  absl::MutexLock publish(&publish_mu_);
  std::vector<PlanningTask> tasks;
  {
    absl::MutexLock lock(&mu_);
    core_->Tick(clock_->Now());
    tasks = core_->TakePlanningTasks();
    if (metrics_ != nullptr) {
      int live = 0, stale = 0, lost = 0;
      for (const JobStatusView& j : core_->Jobs()) {
        live += j.live;
        stale += j.stale;
        lost += j.lost;
      }
      metrics_->Workers(live, stale, lost);
    }
  }
  for (PlanningTask& task : tasks) {
    const absl::Time t0 = absl::Now();
    const std::string job_id = task.job_id;
    std::shared_ptr<const pl::ModelLoad> observed = task.observed;
    PlanningResult result = PlanWithRevisions(std::move(task), [&](const PlanningResult& r) {
      absl::MutexLock lock(&mu_);
      std::optional<PlanningTask> revision = core_->TakeRevisionTask(r);
      if (revision.has_value()) {
        observed = revision->observed;
        LogInfo("first plan is stale: revising it before publication",
                LogFields()("job", job_id)("iteration", revision->step.iteration)(
                    "seconds_so_far", absl::ToDoubleSeconds(absl::Now() - t0)));
      }
      return revision;
    });
    const double compute_s = absl::ToDoubleSeconds(absl::Now() - t0);
    absl::StatusOr<std::shared_ptr<const pl::Plan>> committed;
    {
      absl::MutexLock lock(&mu_);
      committed = core_->CommitPlan(result, clock_->Now());
    }
    if (metrics_ != nullptr) {
      metrics_->PlanComputed(compute_s);
      metrics_->Observed(job_id, result.layers);
      if (observed != nullptr) metrics_->ExpertTokens(job_id, *observed);
    }
    if (!result.status.ok()) {
      LogWarn("planning failed", LogFields()("job", job_id)("error", result.status.ToString()));
    }
    if (!committed.ok() || *committed == nullptr) continue;
    const std::shared_ptr<const pl::Plan>& plan = *committed;
    LogInfo(
        "plan published",
        LogFields()("job", plan->job_id)("epoch", plan->id.epoch)("version", plan->id.version)(
            "effective_iteration", plan->effective_iteration)(
            "decision", pl::DecisionName(result.decision))("revisions", result.revisions)(
            "gain", result.predicted_gain)("predicted_moe_seconds", plan->prediction.moe_seconds)(
            "balancedness", plan->prediction.balancedness)("compute_seconds", compute_s));
    if (metrics_ != nullptr) {
      metrics_->PlanPublished(plan->job_id, *plan, UnixSeconds(clock_->Now()),
                              result.decision == pl::Decision::kReshard);
    }
    Deliver(plan);
  }
}

void ControllerService::Deliver(const std::shared_ptr<const pl::Plan>& plan) {
  const absl::Time t0 = absl::Now();
  v1::Plan proto = wire::ToProto(*plan);
  proto.set_published_unix_seconds(UnixSeconds(clock_->Now()));
  // Durable before visible: a watcher never sees a plan a restart could forget.
  if (absl::Status s = store_->PutPlan(proto, config_.store_keep_plans); !s.ok()) {
    LogError("could not persist plan",
             LogFields()("job", plan->job_id)("version", plan->id.version)("error", s.ToString()));
  }
  const absl::Time persisted = absl::Now();
  v1::Plan lean = wire::Lean(proto);
  Encoded bytes{Serialize(lean), Serialize(proto),
                nullptr,         Serialize(wire::CompactHolders(lean, lean)),
                nullptr,         {}};
  std::shared_ptr<const v1::Plan>& last = last_lean_[plan->job_id];
  if (last != nullptr) {
    v1::Plan delta = wire::MakeDelta(*last, lean);
    bytes.compact_delta = Serialize(wire::CompactHolders(delta, lean));
    bytes.delta = Serialize(delta);
    bytes.delta_base = wire::FromProto(last->id());
  }
  last = std::make_shared<const v1::Plan>(std::move(lean));
  size_t watchers = 0;
  {
    absl::MutexLock lock(&watchers_mu_);
    auto it = watchers_.find(plan->job_id);
    if (it != watchers_.end()) {
      for (Watcher* w : it->second) w->Push(plan->id, bytes);
      watchers = it->second.size();
    }
  }
  const absl::Time queued = absl::Now();
  if (metrics_ != nullptr) metrics_->PlanPushed(absl::ToDoubleSeconds(queued - t0));
  LogInfo("plan queued to watchers",
          LogFields()("job", plan->job_id)("version", plan->id.version)("watchers", watchers)(
              "persist_ms", absl::ToDoubleMilliseconds(persisted - t0))(
              "queue_ms", absl::ToDoubleMilliseconds(queued - persisted))(
              "lean_bytes", bytes.lean->Length())("full_bytes", bytes.full->Length())(
              "delta_bytes", bytes.delta != nullptr ? bytes.delta->Length() : 0)(
              "compact_bytes", bytes.compact_lean->Length())(
              "compact_delta_bytes",
              bytes.compact_delta != nullptr ? bytes.compact_delta->Length() : 0));
}

absl::Status ControllerService::PersistJob(const std::string& job) {
  std::optional<JobRecord> record;
  {
    absl::MutexLock lock(&mu_);
    record = core_->GetJobRecord(job);
  }
  if (!record.has_value()) return absl::OkStatus();
  return store_->PutJob(*record);
}

absl::Status ControllerService::IngestReport(const v1::LoadReport& p, ReportResult* result) {
  *result = ReportResult::kAccepted;
  if (!ready_) return kNotReady;
  if (static_cast<int64_t>(p.ByteSizeLong()) > config_.max_report_bytes) {
    *result = ReportResult::kOversized;
    if (metrics_ != nullptr) metrics_->Report(*result);
    return absl::ResourceExhaustedError(
        absl::StrCat("report of ", p.ByteSizeLong(), " bytes exceeds ", config_.max_report_bytes));
  }
  absl::StatusOr<LoadReport> r = wire::FromProto(p);
  if (!r.ok()) {
    *result = ReportResult::kBadShape;
    if (metrics_ != nullptr) metrics_->Report(*result);
    return r.status();
  }
  const std::string presented = Sha256(p.worker_secret());
  IngestOutcome outcome;
  {
    absl::MutexLock lock(&mu_);
    // The reporting incarnation must prove it is the registered one: one rank cannot report for
    // another. (A superseded incarnation is the core's stale_incarnation.)
    const WorkerRegistration* w = core_->FindWorker(r->job_id, r->rank);
    if (w != nullptr && w->incarnation == r->incarnation && !w->secret_sha256.empty() &&
        !DigestsEqual(presented, w->secret_sha256)) {
      outcome.result = ReportResult::kBadSecret;
      outcome.status = absl::PermissionDeniedError(absl::StrCat(
          "the worker secret does not match rank ", r->rank, "'s registration in job ", r->job_id));
    } else if (!TakeReportToken(r->job_id, r->rank)) {
      outcome.result = ReportResult::kAccepted;  // not counted as a report result
      outcome.status = absl::ResourceExhaustedError(
          absl::StrCat("rank ", r->rank, " reports faster than ", config_.max_reports_per_second,
                       " per second (--max_reports_per_second)"));
      if (metrics_ != nullptr) metrics_->LimitRejection("report_rate");
      *result = outcome.result;
      return outcome.status;
    } else {
      outcome = core_->Ingest(*r, clock_->Now());
      // Only a completed iteration can make planning due; deadlines and liveness are the tick's.
      if (outcome.finalized) wake_ = true;
    }
  }
  *result = outcome.result;
  if (metrics_ != nullptr) {
    metrics_->Report(outcome.result);
    if (outcome.result == ReportResult::kBadSecret) metrics_->AuthFailure(AuthFailure::kBadSecret);
  }
  return outcome.status;
}

absl::StatusOr<Role> ControllerService::Authorize(grpc::CallbackServerContext* ctx, Method method) {
  if (!config_.auth.enabled()) return Role::kOperator;
  CallCredentials c;
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    absl::string_view v(it->second.data(), it->second.size());
    if (absl::ConsumePrefix(&v, "Bearer ")) c.bearer_token = std::string(v);
  }
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
      c.peer_names.emplace_back(cn.data(), cn.size());
    }
  }
  AuthFailure why = AuthFailure::kNoCredential;
  absl::StatusOr<Role> role = config_.auth.Authorize(c, method, &why);
  if (!role.ok()) {
    if (metrics_ != nullptr) metrics_->AuthFailure(why);
    LogWarn("call refused", LogFields()("method", MethodName(method))(
                                "reason", AuthFailureName(why))("peer", ctx->peer()));
  }
  return role;
}

// ------------------------------------------------------------------------------------------
// Handlers

grpc::ServerUnaryReactor* ControllerService::RegisterWorker(grpc::CallbackServerContext* ctx,
                                                            const v1::RegisterWorkerRequest* req,
                                                            v1::RegisterWorkerResponse* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kRegisterWorker); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  WorkerRegistration reg = wire::FromProto(*req);
  // A new incarnation gets a fresh secret; the same one registering again presents its own.
  const std::string issued = NewSecret();
  reg.secret_sha256 = Sha256(issued);
  const std::string presented = req->worker_secret().empty() ? "" : Sha256(req->worker_secret());
  absl::Status s;
  WorkerRegistration stored;
  {
    absl::MutexLock lock(&mu_);
    s = core_->Register(reg, clock_->Now(), presented);
    if (s.ok()) {
      stored = *core_->FindWorker(reg.job_id, reg.rank);
      resp->set_epoch(core_->epoch());
      if (auto plan = core_->CurrentPlan(reg.job_id))
        *resp->mutable_current_plan() = wire::ToProto(plan->id);
      resp->set_max_report_bytes(config_.max_report_bytes);
      resp->set_worker_secret(
          DigestsEqual(stored.secret_sha256, reg.secret_sha256) ? issued : req->worker_secret());
    }
  }
  if (s.code() == absl::StatusCode::kPermissionDenied && metrics_ != nullptr) {
    metrics_->AuthFailure(AuthFailure::kBadSecret);
  }
  if (s.ok()) {
    s = PersistJob(reg.job_id);
    if (s.ok()) s = store_->PutWorker(stored);
    LogInfo("worker registered", LogFields()("job", reg.job_id)("rank", reg.rank)("node", reg.node)(
                                     "incarnation", reg.incarnation));
  }
  if (!s.ok()) resp->clear_worker_secret();
  return Done(ctx, s);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ControllerService::ReportLoad(
    grpc::CallbackServerContext* ctx, grpc::ByteBuffer* resp) {
  absl::StatusOr<Role> role = Authorize(ctx, Method::kReportLoad);
  if (!role.ok()) return new ReportReader(this, resp, role.status(), "");
  const std::string peer = PeerHost(ctx->peer());
  if (!AcquireStream(peer)) {
    return new ReportReader(this, resp, PeerStreamsExhausted(peer), "");
  }
  return new ReportReader(this, resp, absl::OkStatus(), peer);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ControllerService::WatchPlans(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
  const absl::StatusOr<Role> role = Authorize(ctx, Method::kWatchPlans);
  v1::WatchPlansRequest parsed;
  std::vector<grpc::Slice> slices;
  bool ok = raw->Dump(&slices).ok();
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  ok = ok && parsed.ParseFromString(bytes);
  const v1::WatchPlansRequest* req = &parsed;
  auto* w = new Watcher(this, req->job_id(), wire::FromProto(req->after()), req->device_detail(),
                        req->accept_deltas(), req->compact_holders(), "");
  if (!role.ok()) {
    w->Close(ToGrpc(role.status()));
    return w;
  }
  if (!ok) {
    w->Close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed WatchPlansRequest"));
    return w;
  }
  if (watcher_count() >= config_.max_watchers) {
    if (metrics_ != nullptr) metrics_->LimitRejection("watchers");
    w->Close(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the controller serves ", config_.max_watchers,
                                       " watchers at most (--max_watchers)")));
    return w;
  }
  if (const std::string peer = PeerHost(ctx->peer()); AcquireStream(peer)) {
    w->set_counted_peer(peer);
  } else {
    w->Close(ToGrpc(PeerStreamsExhausted(peer)));
    return w;
  }
  if (*role == Role::kWorker && req->incarnation() == 0) {
    w->Close(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "a worker's watch names its rank, incarnation and worker secret"));
    return w;
  }
  const std::string presented = Sha256(req->worker_secret());
  absl::MutexLock lock(&mu_);
  if (!ready_ || shutting_down_) {
    w->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller is not serving"));
    return w;
  }
  if (req->incarnation() > 0) {
    // A worker's watch: the incarnation must be the registered one, with its secret.
    const WorkerRegistration* reg = core_->FindWorker(req->job_id(), static_cast<int>(req->rank()));
    if (reg != nullptr && reg->incarnation == req->incarnation() && !reg->secret_sha256.empty() &&
        !DigestsEqual(presented, reg->secret_sha256)) {
      if (metrics_ != nullptr) metrics_->AuthFailure(AuthFailure::kBadSecret);
      w->Close(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            absl::StrCat("the worker secret does not match rank ", req->rank(),
                                         "'s registration in job ", req->job_id())));
      return w;
    }
  }
  if (!core_->HasJob(req->job_id())) {
    w->Close(grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("unknown job '", req->job_id(), "'")));
    return w;
  }
  {
    absl::MutexLock watchers_lock(&watchers_mu_);
    watchers_[req->job_id()].insert(w);
  }
  // A late watcher gets the current plan first (a newer one delivered meanwhile makes this a
  // no-op: Push ignores anything not newer than what the watcher has).
  std::shared_ptr<const pl::Plan> plan = core_->CurrentPlan(req->job_id());
  if (plan != nullptr && wire::FromProto(req->after()) < plan->id) {
    const v1::Plan proto = wire::ToProto(*plan);
    Encoded encoded;
    if (req->device_detail()) {
      encoded.full = Serialize(proto);
    } else if (req->compact_holders()) {
      const v1::Plan lean = wire::Lean(proto);
      encoded.compact_lean = Serialize(wire::CompactHolders(lean, lean));
    } else {
      encoded.lean = Serialize(wire::Lean(proto));
    }
    w->Push(plan->id, encoded);
  } else if (req->acknowledge()) {
    v1::Plan ack;
    ack.set_job_id(req->job_id());
    w->Acknowledge(Serialize(ack));
  }
  return w;
}

grpc::ServerUnaryReactor* ControllerService::GetPlan(grpc::CallbackServerContext* ctx,
                                                     const v1::GetPlanRequest* req,
                                                     v1::Plan* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kGetPlan); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  absl::StatusOr<std::shared_ptr<const pl::Plan>> plan;
  {
    absl::MutexLock lock(&mu_);
    plan = core_->GetPlan(req->job_id(), req->version());
  }
  if (!plan.ok()) return Done(ctx, plan.status());
  *resp = wire::ToProto(**plan);
  if (req->has_layer()) {
    if (req->layer() >= static_cast<uint32_t>(resp->layers_size())) {
      return Done(ctx,
                  absl::InvalidArgumentError(absl::StrCat("layer ", req->layer(), " out of range (",
                                                          resp->layers_size(), " layers)")));
    }
    v1::LayerPlan keep = resp->layers(static_cast<int>(req->layer()));
    resp->clear_layers();
    *resp->add_layers() = std::move(keep);
  }
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::ListWorkers(grpc::CallbackServerContext* ctx,
                                                         const v1::ListWorkersRequest* req,
                                                         v1::ListWorkersResponse* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kListWorkers); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  absl::MutexLock lock(&mu_);
  core_->Tick(clock_->Now());
  if (!req->job_id().empty() && !core_->HasJob(req->job_id())) {
    return Done(ctx, absl::NotFoundError(absl::StrCat("unknown job '", req->job_id(), "'")));
  }
  const absl::Time now = clock_->Now();
  for (const WorkerInfo& w : core_->ListWorkers(req->job_id())) {
    v1::WorkerInfo* p = resp->add_workers();
    p->set_job_id(w.reg.job_id);
    p->set_rank(w.reg.rank);
    p->set_world_size(w.reg.world_size);
    p->set_node(w.reg.node);
    p->set_local_rank(w.reg.local_rank);
    p->set_device_kind(w.reg.device_kind);
    p->set_device_memory_bytes(w.reg.device_memory_bytes);
    p->set_incarnation(w.reg.incarnation);
    p->set_state(ToProto(w.state));
    p->set_last_iteration(w.last_iteration);
    p->set_seconds_since_seen(absl::ToDoubleSeconds(now - w.last_seen));
    *p->mutable_last_plan() = wire::ToProto(w.last_plan);
  }
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::GetLoad(grpc::CallbackServerContext* ctx,
                                                     const v1::GetLoadRequest* req,
                                                     v1::GetLoadResponse* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kGetLoad); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  absl::StatusOr<std::vector<LayerLoadView>> load;
  {
    absl::MutexLock lock(&mu_);
    load = core_->GetLoad(req->job_id());
  }
  if (!load.ok()) return Done(ctx, load.status());
  if (req->has_layer() && req->layer() >= load->size()) {
    return Done(ctx, absl::InvalidArgumentError(absl::StrCat(
                         "layer ", req->layer(), " out of range (", load->size(), " layers)")));
  }
  resp->set_job_id(req->job_id());
  for (const LayerLoadView& v : *load) {
    if (req->has_layer() && static_cast<uint32_t>(v.layer) != req->layer()) continue;
    v1::LayerLoadWindow* w = resp->add_layers();
    w->set_layer(v.layer);
    for (double t : v.expert_tokens) w->add_expert_tokens(t);
    w->set_window_iterations(v.window_iterations);
    w->set_max_over_mean(v.max_over_mean);
    w->set_observed_balancedness(v.observed_balancedness);
  }
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::GetStatus(grpc::CallbackServerContext* ctx,
                                                       const v1::GetStatusRequest* /*req*/,
                                                       v1::GetStatusResponse* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kGetStatus); !role.ok()) {
    return Done(ctx, role.status());
  }
  resp->set_serving(ready_);
  resp->set_version(config_.version);
  resp->set_uptime_seconds(absl::ToDoubleSeconds(clock_->Now() - started_));
  if (!ready_) return Done(ctx, absl::OkStatus());
  absl::MutexLock lock(&mu_);
  core_->Tick(clock_->Now());
  resp->set_epoch(core_->epoch());
  resp->set_default_policy(core_->default_policy());
  for (const JobStatusView& j : core_->Jobs()) {
    v1::JobStatus* p = resp->add_jobs();
    p->set_job_id(j.job_id);
    p->set_world_size(j.world_size);
    p->set_live_workers(j.live);
    p->set_stale_workers(j.stale);
    p->set_lost_workers(j.lost);
    *p->mutable_current_plan() = wire::ToProto(j.current_plan);
    p->set_last_planned_iteration(j.last_planned_iteration);
    p->set_policy(j.policy);
    p->set_frozen(j.frozen);
    p->set_plans_published(j.plans_published);
  }
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::Freeze(grpc::CallbackServerContext* ctx,
                                                    const v1::FreezeRequest* req,
                                                    v1::FreezeResponse* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kFreeze); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  absl::StatusOr<std::vector<std::string>> frozen;
  {
    absl::MutexLock lock(&mu_);
    frozen = core_->Freeze(req->job_id());
  }
  if (!frozen.ok()) return Done(ctx, frozen.status());
  for (const std::string& job : *frozen) {
    if (absl::Status s = PersistJob(job); !s.ok()) return Done(ctx, s);
    *resp->add_frozen_jobs() = job;
  }
  LogInfo("planning frozen", LogFields()("job", req->job_id().empty() ? "*" : req->job_id()));
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::Unfreeze(grpc::CallbackServerContext* ctx,
                                                      const v1::UnfreezeRequest* req,
                                                      v1::UnfreezeResponse* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kUnfreeze); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  absl::StatusOr<std::vector<std::string>> frozen;
  std::vector<std::string> all;
  {
    absl::MutexLock lock(&mu_);
    frozen = core_->Unfreeze(req->job_id());
    for (const JobStatusView& j : core_->Jobs()) all.push_back(j.job_id);
  }
  if (!frozen.ok()) return Done(ctx, frozen.status());
  for (const std::string& job : all) {
    if (absl::Status s = PersistJob(job); !s.ok()) return Done(ctx, s);
  }
  for (const std::string& job : *frozen) *resp->add_frozen_jobs() = job;
  LogInfo("planning unfrozen", LogFields()("job", req->job_id().empty() ? "*" : req->job_id()));
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::SetPolicy(grpc::CallbackServerContext* ctx,
                                                       const v1::SetPolicyRequest* req,
                                                       v1::SetPolicyResponse* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kSetPolicy); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  absl::StatusOr<std::string> previous;
  std::vector<std::string> jobs;
  {
    absl::MutexLock lock(&mu_);
    previous = core_->SetPolicy(req->job_id(), req->policy());
    for (const JobStatusView& j : core_->Jobs()) jobs.push_back(j.job_id);
    wake_ = true;
  }
  if (!previous.ok()) return Done(ctx, previous.status());
  if (req->job_id().empty()) {
    if (absl::Status s = store_->PutSetting("default_policy", req->policy()); !s.ok()) {
      return Done(ctx, s);
    }
  }
  for (const std::string& job : jobs) {
    if (!req->job_id().empty() && job != req->job_id()) continue;
    if (absl::Status s = PersistJob(job); !s.ok()) return Done(ctx, s);
  }
  resp->set_previous_policy(*previous);
  resp->set_policy(req->policy());
  LogInfo("policy set", LogFields()("job", req->job_id().empty() ? "*" : req->job_id())(
                            "policy", req->policy())("previous", *previous));
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::RollbackPlan(grpc::CallbackServerContext* ctx,
                                                          const v1::RollbackPlanRequest* req,
                                                          v1::Plan* resp) {
  if (absl::StatusOr<Role> role = Authorize(ctx, Method::kRollbackPlan); !role.ok()) {
    return Done(ctx, role.status());
  }
  if (!ready_) return Done(ctx, kNotReady);
  absl::MutexLock publish(&publish_mu_);
  absl::StatusOr<std::shared_ptr<const pl::Plan>> plan;
  {
    absl::MutexLock lock(&mu_);
    plan = core_->Rollback(req->job_id(), req->to_version(), clock_->Now());
  }
  if (!plan.ok()) return Done(ctx, plan.status());
  LogInfo("plan rolled back", LogFields()("job", req->job_id())("to", req->to_version())(
                                  "version", (*plan)->id.version));
  if (metrics_ != nullptr) {
    metrics_->PlanPublished((*plan)->job_id, **plan, UnixSeconds(clock_->Now()), false);
  }
  Deliver(*plan);
  *resp = wire::ToProto(**plan);
  return Done(ctx, absl::OkStatus());
}

}  // namespace hecate::controller
