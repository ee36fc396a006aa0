#include "worker/agent/agent.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>

#include "absl/time/clock.h"

#include "common/log.h"
#include "wire/convert.h"
#include "wire/plan_codec.h"

namespace hecate::worker {

namespace pl = placement;

namespace {
std::chrono::system_clock::time_point Deadline(absl::Duration d) {
  return std::chrono::system_clock::now() + std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}
// Plans kept for agreement: ranks must hold the agreed plan, so a rank lagging more than this many
// versions behind another cannot switch until it catches up (plans are small: ~KB per layer).
constexpr size_t kPlansKept = 64;
}  // namespace

ControllerAgent::ControllerAgent(AgentConfig config) : config_(std::move(config)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  // Reconnect quickly after a controller restart (gRPC's defaults wait up to 20 s or more).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(config_.backoff_max)));
  // After a lost connection the channel re-resolves the target before reconnecting, and the DNS
  // resolver allows one resolution per 30 s by default, so a restarted controller would be
  // reached seconds after it was serving; 100 ms between resolutions makes that a fraction of a
  // second.
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 100);
  channel_ = grpc::CreateCustomChannel(
      config_.controller,
      config_.credentials != nullptr ? config_.credentials : grpc::InsecureChannelCredentials(),
      args);
  stub_ = v1::Controller::NewStub(channel_);
}

ControllerAgent::~ControllerAgent() { Stop(); }

void ControllerAgent::Start() {
  sender_ = std::thread([this] { SendLoop(); });
  watcher_ = std::thread([this] { WatchLoop(); });
}

void ControllerAgent::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
    if (send_ctx_ != nullptr) send_ctx_->TryCancel();
  }
  if (sender_.joinable()) sender_.join();
  if (watcher_.joinable()) watcher_.join();
}

bool ControllerAgent::Sleep(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  mu_.AwaitWithTimeout(absl::Condition(&stop), d);
  return !stopping_;
}

void ControllerAgent::Enqueue(v1::LoadReport report) {
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= config_.queue_capacity) {
    queue_.pop_front();
    ++reports_dropped_;
  }
  queue_.push_back(std::move(report));
}

std::shared_ptr<const pl::Plan> ControllerAgent::Candidate(uint64_t iteration) const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (auto it = plans_.rbegin(); it != plans_.rend(); ++it) {
    if (it->second.visible <= now && it->second.plan->effective_iteration <= iteration) {
      return it->second.plan;
    }
  }
  return nullptr;
}

std::shared_ptr<const pl::Plan> ControllerAgent::Get(const pl::PlanId& id) const {
  absl::MutexLock lock(&mu_);
  auto it = plans_.find(id);
  return it == plans_.end() || it->second.visible > absl::Now() ? nullptr : it->second.plan;
}

bool ControllerAgent::Register(v1::Controller::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(config_.rpc_timeout));
  v1::RegisterWorkerResponse resp;
  v1::RegisterWorkerRequest req = config_.registration;
  {
    // Registering again (a reconnect, a restarted controller) presents this incarnation's secret.
    absl::MutexLock lock(&mu_);
    req.set_worker_secret(secret_);
  }
  grpc::Status s = stub->RegisterWorker(&ctx, req, &resp);
  if (!s.ok()) {
    // One line per outage, then one every 30 s: a restarting controller is not log spam.
    static thread_local absl::Time last_logged = absl::InfinitePast();
    if (absl::Now() - last_logged > absl::Seconds(30)) {
      LogWarn("controller registration failed; retrying with backoff",
              LogFields()("controller", config_.controller)("code", s.error_code())(
                  "error", s.error_message()));
      last_logged = absl::Now();
    }
    return false;
  }
  epoch_ = resp.epoch();
  absl::MutexLock lock(&mu_);
  secret_ = resp.worker_secret();
  registered_ = true;
  return true;
}

void ControllerAgent::SendLoop() {
  absl::Duration backoff = config_.backoff_min;
  bool was_connected = false;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (!Register(stub_.get())) {
      connected_ = false;
      if (was_connected) LogWarn("controller unreachable; training continues on the last plan");
      was_connected = false;
      if (!Sleep(backoff)) return;
      backoff = std::min(backoff * 2, config_.backoff_max);
      ++reconnects_;
      continue;
    }
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      send_ctx_ = &ctx;
    }
    v1::ReportLoadResponse resp;
    std::unique_ptr<grpc::ClientWriter<v1::LoadReport>> writer = stub_->ReportLoad(&ctx, &resp);
    bool ok = true;
    while (ok) {
      v1::LoadReport report;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !queue_.empty();
        };
        mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(1));
        if (stopping_) break;
        if (queue_.empty()) {
          connected_ = watching_.load();
          continue;
        }
        report = std::move(queue_.front());
        queue_.pop_front();
        report.set_worker_secret(secret_);
      }
      ok = writer->Write(report);
      if (ok) {
        ++reports_sent_;
        connected_ = watching_.load();
        if (!was_connected && connected_) {
          LogInfo("controller connected",
                  LogFields()("controller", config_.controller)("epoch", epoch_.load()));
          was_connected = true;
        }
        backoff = config_.backoff_min;
      } else {
        // Put it back: the next stream retries it (duplicates are idempotent on the controller).
        absl::MutexLock lock(&mu_);
        queue_.push_front(std::move(report));
      }
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    {
      absl::MutexLock lock(&mu_);
      send_ctx_ = nullptr;
      if (stopping_) return;
    }
    connected_ = false;
    if (!s.ok() && s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::CANCELLED) {
      // The controller refused a report: drop it (it would be refused again) and say why.
      ++reports_rejected_;
      absl::MutexLock lock(&mu_);
      if (!queue_.empty()) queue_.pop_front();
      LogWarn("controller rejected a load report",
              LogFields()("code", s.error_code())("error", s.error_message()));
    } else if (was_connected) {
      LogWarn("controller unreachable; training continues on the last plan",
              LogFields()("error", s.error_message()));
      was_connected = false;
    }
    if (!Sleep(backoff)) return;
    backoff = std::min(backoff * 2, config_.backoff_max);
    ++reconnects_;
  }
}

void ControllerAgent::WatchLoop() {
  absl::Duration backoff = config_.backoff_min;
  for (;;) {
    bool registered;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      registered = registered_;
    }
    if (!registered) {
      if (!Sleep(config_.backoff_min)) return;
      continue;
    }
    grpc::ClientContext ctx;
    v1::WatchPlansRequest req;
    req.set_job_id(config_.registration.job_id());
    req.set_rank(config_.registration.rank());
    req.set_incarnation(config_.registration.incarnation());
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      if (!plans_.empty() && !resync_) {
        *req.mutable_after() = wire::ToProto(plans_.rbegin()->first);
      }
      req.set_worker_secret(secret_);
      watch_ctx_ = &ctx;
    }
    req.set_accept_deltas(true);
    req.set_compact_holders(true);
    req.set_acknowledge(true);
    resync_ = false;
    std::unique_ptr<grpc::ClientReader<v1::Plan>> reader = stub_->WatchPlans(&ctx, req);
    watching_ = true;
    v1::Plan proto;
    while (reader->Read(&proto)) {
      backoff = config_.backoff_min;
      if (!proto.has_id()) continue;  // the acknowledgement: the watch is open, no plan yet
      {
        // Rebuilds a delta and restores compact holder lists (a full plan in replicas form comes
        // back as itself).
        const bool delta = proto.has_delta_base();
        absl::StatusOr<v1::Plan> full = wire::ApplyDelta(last_proto_, proto);
        if (!full.ok()) {
          // Cannot happen with a well-behaved controller; start over from its current plan.
          LogWarn("plan delta does not apply; watching again from the current plan",
                  LogFields()("error", full.status().ToString()));
          resync_ = true;
          ctx.TryCancel();
          break;
        }
        proto = *std::move(full);
        if (delta) ++deltas_applied_;
      }
      last_proto_ = proto;
      auto plan = std::make_shared<const pl::Plan>(wire::FromProto(proto));
      absl::MutexLock lock(&mu_);
      // Fencing: only strictly newer plans are kept.
      if (!plans_.empty() && !(plans_.rbegin()->first < plan->id)) continue;
      plans_[plan->id] = Held{plan, absl::Now() + config_.plan_delay};
      while (plans_.size() > kPlansKept) plans_.erase(plans_.begin());
      ++plans_received_;
    }
    watching_ = false;
    connected_ = false;
    reader->Finish();
    {
      absl::MutexLock lock(&mu_);
      watch_ctx_ = nullptr;
      if (stopping_) return;
      registered_ = false;  // re-register (the controller may have restarted)
    }
    if (!Sleep(backoff)) return;
    backoff = std::min(backoff * 2, config_.backoff_max);
  }
}

absl::StatusOr<PlanAgreement::Outcome> PlanAgreement::Agree(Communicator& comm,
                                                            const ControllerAgent* agent,
                                                            uint64_t iteration,
                                                            const pl::PlanId& applied) {
  Outcome out;
  std::shared_ptr<const pl::Plan> mine = agent != nullptr ? agent->Candidate(iteration) : nullptr;
  int64_t round1[2] = {mine ? Key(mine->id) : 0, agent != nullptr && agent->connected() ? 1 : 0};
  if (absl::Status s = comm.AllReduceMinInt64(round1, 2); !s.ok()) return s;
  out.all_connected = round1[1] == 1;
  const int64_t agreed = round1[0];
  if (agreed <= Key(applied) || agreed == 0) return out;
  // Does every rank hold exactly the agreed plan? (One may have skipped it on reconnect.)
  std::shared_ptr<const pl::Plan> plan;
  if (agent != nullptr) {
    const pl::PlanId id{static_cast<uint64_t>(agreed) >> 40,
                        static_cast<uint64_t>(agreed) & ((uint64_t{1} << 40) - 1)};
    plan = agent->Get(id);
  }
  int64_t have = plan ? 1 : 0;
  if (absl::Status s = comm.AllReduceMinInt64(&have, 1); !s.ok()) return s;
  if (have == 1) out.plan = plan;
  return out;
}

}  // namespace hecate::worker
