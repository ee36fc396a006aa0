// The worker's link to the controller. Registers, streams one LoadReport per iteration and
// watches plans, each on a background thread; reconnects (re-registering) with exponential
// backoff. A training step never waits on it: Enqueue() is a bounded, drop-oldest queue, and plan
// lookups read what has already arrived.
//
// Plan agreement (DESIGN.md §9.3) is done by PlanAgreement below over the communicator, not here.
// Thread-safe: the training thread calls Enqueue/Candidate/Get/connected concurrently with the
// agent's own threads.
#ifndef HECATE_WORKER_AGENT_AGENT_H_
#define HECATE_WORKER_AGENT_AGENT_H_

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/security/credentials.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hecate/v1/controller.grpc.pb.h"
#include "placement/plan.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

struct AgentConfig {
  std::string controller;  // host:port
  // TLS / mTLS / token (common/grpc_credentials.h); null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  v1::RegisterWorkerRequest registration;
  size_t queue_capacity = 64;
  absl::Duration backoff_min = absl::Milliseconds(100);
  absl::Duration backoff_max = absl::Seconds(5);
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Test hook: each received plan becomes visible this long after it arrived (a slow link: the
  // latency grows, the plan rate does not drop).
  absl::Duration plan_delay = absl::ZeroDuration();
};

class ControllerAgent {
 public:
  explicit ControllerAgent(AgentConfig config);
  ~ControllerAgent();

  void Start();
  void Stop();

  // True while registered and both streams are up.
  bool connected() const { return connected_.load(); }
  // The secret this incarnation's registration returned (empty before it registered); reports
  // sent through Enqueue carry it. For callers that report on another stream (tests).
  std::string worker_secret() const {
    absl::MutexLock lock(&mu_);
    return secret_;
  }
  // Queues a report; when full, drops the oldest (counted). Never blocks.
  void Enqueue(v1::LoadReport report);
  // The newest received plan whose effective_iteration <= iteration (null if none).
  std::shared_ptr<const placement::Plan> Candidate(uint64_t iteration) const;
  // A received plan by id (null if not received or already evicted).
  std::shared_ptr<const placement::Plan> Get(const placement::PlanId& id) const;
  uint64_t epoch() const { return epoch_.load(); }

  int64_t reports_sent() const { return reports_sent_.load(); }
  int64_t reports_dropped() const { return reports_dropped_.load(); }
  int64_t reports_rejected() const { return reports_rejected_.load(); }
  int64_t reconnects() const { return reconnects_.load(); }
  int64_t plans_received() const { return plans_received_.load(); }
  // Plans that arrived as deltas (WatchPlansRequest.accept_deltas) and were rebuilt.
  int64_t deltas_applied() const { return deltas_applied_.load(); }

 private:
  void SendLoop();
  void WatchLoop();
  bool Register(v1::Controller::Stub* stub);
  bool Sleep(absl::Duration d);  // false when stopping

  AgentConfig config_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Controller::Stub> stub_;
  std::thread sender_, watcher_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  // This incarnation's secret from RegisterWorker; reports and watches carry it.
  std::string secret_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::LoadReport> queue_ ABSL_GUARDED_BY(mu_);
  struct Held {
    std::shared_ptr<const placement::Plan> plan;
    absl::Time visible;  // arrival + plan_delay
  };
  std::map<placement::PlanId, Held> plans_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* watch_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ClientContext* send_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;

  std::atomic<bool> connected_{false};
  std::atomic<bool> watching_{false};
  // WatchLoop's own: the last plan received as sent (lean), the base of the next delta; and
  // whether the next watch must start over from the current plan (a delta did not apply).
  v1::Plan last_proto_;
  bool resync_ = false;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int64_t> reports_sent_{0}, reports_dropped_{0}, reports_rejected_{0};
  std::atomic<int64_t> reconnects_{0}, plans_received_{0}, deltas_applied_{0};
};

// Per-iteration plan agreement across ranks: every rank proposes the newest controller plan it
// has whose effective_iteration has come; the group takes the minimum (one AllReduceMin), and
// switches only if every rank actually holds that plan (a second AllReduceMin). Plans not newer
// than the applied one are never applied (fencing by (epoch, version)).
class PlanAgreement {
 public:
  struct Outcome {
    std::shared_ptr<const placement::Plan> plan;  // the plan to switch to, or null
    bool all_connected = false;
  };
  // Collective. `agent` may be null (no controller).
  static absl::StatusOr<Outcome> Agree(Communicator& comm, const ControllerAgent* agent,
                                       uint64_t iteration, const placement::PlanId& applied);
  static int64_t Key(const placement::PlanId& id) {
    return static_cast<int64_t>((id.epoch << 40) | (id.version & ((uint64_t{1} << 40) - 1)));
  }
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_AGENT_AGENT_H_
