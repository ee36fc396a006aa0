// The gRPC edge of the controller: translates hecate.v1 messages to the core's domain types and
// back, maps absl::Status to canonical gRPC codes, owns the watcher streams, runs the planning
// thread, and persists before it publishes. It never plans by itself (that is core/ComputePlan).
//
// Threading: every handler is a gRPC callback reactor (nothing blocks a gRPC thread). One mutex
// guards the core and the watcher set; a second serializes publication (commit -> persist ->
// push) so versions reach the store and the watchers in order. Planning runs on its own thread
// without holding the core mutex.
#ifndef HECATE_CONTROLLER_SERVICE_CONTROLLER_SERVICE_H_
#define HECATE_CONTROLLER_SERVICE_CONTROLLER_SERVICE_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "controller/auth/auth.h"
#include "controller/core/controller_core.h"
#include "controller/metrics/controller_metrics.h"
#include "controller/store/state_store.h"
#include "hecate/v1/controller.grpc.pb.h"

namespace hecate::controller {

struct ServiceConfig {
  CoreConfig core;
  // Largest LoadReport accepted, bytes (the gRPC receive limit is set from it too).
  int64_t max_report_bytes = 16 << 20;
  // How often the planning thread runs liveness and report deadlines.
  absl::Duration tick = absl::Milliseconds(200);
  // Plans kept in the store per job.
  int store_keep_plans = 1000;
  // No planning thread: tests call RunPlannerOnce() themselves.
  bool manual_planning = false;
  std::string version = "dev";
  // Who may call what (controller/auth/auth.h); the default lets every caller act as an operator.
  Authenticator auth;
  // Limits (each refusal is RESOURCE_EXHAUSTED and counted in
  // hecate_limit_rejections_total{limit}): ReportLoad and WatchPlans streams open at once from one
  // peer address; watchers in all; plans queued for one watcher before it is dropped (a stalled
  // watcher is not buffered forever: it reconnects and resumes after its last plan); reports per
  // second of one rank (a token bucket holding two seconds' worth).
  int max_streams_per_peer = 1024;  // 0: unlimited
  int max_watchers = 65536;
  int max_watcher_queue = 64;
  double max_reports_per_second = 100;
};

// WatchPlans is served raw: a published plan is serialized once into a grpc::ByteBuffer whose
// slices every watcher shares, so fan-out costs one serialization, not one per watcher.
// ReportLoad is read raw, so that bytes that do not parse are INVALID_ARGUMENT (and counted), and
// a report over max_report_bytes is RESOURCE_EXHAUSTED (and counted) rather than refused by gRPC
// unseen.
class ControllerService final
    : public v1::Controller::WithRawCallbackMethod_ReportLoad<
          v1::Controller::WithRawCallbackMethod_WatchPlans<v1::Controller::CallbackService>> {
 public:
  ControllerService(ServiceConfig config, StateStore* store, ControllerMetrics* metrics,
                    const Clock* clock);
  ~ControllerService() override;

  // Loads --state-dir, starts a new epoch (stored + 1) and persists it. Handlers answer
  // UNAVAILABLE until this succeeds.
  absl::Status Recover();
  // Starts the planning thread (unless manual_planning).
  void Start();
  // Finishes every watcher stream, stops the planning thread. Idempotent.
  void Shutdown();
  bool ready() const { return ready_.load(); }
  uint64_t epoch() const;
  // One planning pass: tick, take due tasks, compute, commit, persist, push.
  void RunPlannerOnce();
  int watcher_count() const;

  // hecate.v1.Controller
  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* ctx,
                                           const v1::RegisterWorkerRequest* req,
                                           v1::RegisterWorkerResponse* resp) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* ReportLoad(grpc::CallbackServerContext* ctx,
                                                        grpc::ByteBuffer* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchPlans(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* req) override;
  grpc::ServerUnaryReactor* GetPlan(grpc::CallbackServerContext* ctx, const v1::GetPlanRequest* req,
                                    v1::Plan* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* ctx, const v1::GetLoadRequest* req,
                                    v1::GetLoadResponse* resp) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const v1::GetStatusRequest* req,
                                      v1::GetStatusResponse* resp) override;
  grpc::ServerUnaryReactor* Freeze(grpc::CallbackServerContext* ctx, const v1::FreezeRequest* req,
                                   v1::FreezeResponse* resp) override;
  grpc::ServerUnaryReactor* Unfreeze(grpc::CallbackServerContext* ctx,
                                     const v1::UnfreezeRequest* req,
                                     v1::UnfreezeResponse* resp) override;
  grpc::ServerUnaryReactor* SetPolicy(grpc::CallbackServerContext* ctx,
                                      const v1::SetPolicyRequest* req,
                                      v1::SetPolicyResponse* resp) override;
  grpc::ServerUnaryReactor* RollbackPlan(grpc::CallbackServerContext* ctx,
                                         const v1::RollbackPlanRequest* req,
                                         v1::Plan* resp) override;

 private:
  class Watcher;
  struct Encoded;
  class ReportReader;

  // Ingests one report (validation, the worker secret, counting); non-OK ends the caller's
  // stream. `*result` says how it was counted.
  absl::Status IngestReport(const v1::LoadReport& report, ReportResult* result);
  // The caller's role for `method` (UNAUTHENTICATED / PERMISSION_DENIED, counted and logged
  // without the credential).
  absl::StatusOr<Role> Authorize(grpc::CallbackServerContext* ctx, Method method);
  // Persists `plan`, then queues it on the job's watchers. Caller holds publish_mu_.
  void Deliver(const std::shared_ptr<const placement::Plan>& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(publish_mu_);
  void RemoveWatcher(Watcher* w);
  // Counts a stream of `peer` (its address without the port); false (and nothing counted) when
  // the peer already has max_streams_per_peer open. ReleaseStream undoes it.
  bool AcquireStream(const std::string& peer);
  void ReleaseStream(const std::string& peer);
  // Counts the refusal and says why.
  absl::Status PeerStreamsExhausted(const std::string& peer);
  // A report of (job, rank) within max_reports_per_second; takes one token.
  bool TakeReportToken(const std::string& job, int rank) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PlannerLoop();
  absl::Status PersistJob(const std::string& job) ABSL_LOCKS_EXCLUDED(mu_);

  ServiceConfig config_;
  StateStore* const store_;
  ControllerMetrics* const metrics_;
  const Clock* const clock_;
  const absl::Time started_;
  std::atomic<bool> ready_{false};

  absl::Mutex publish_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::unique_ptr<ControllerCore> core_ ABSL_GUARDED_BY(mu_);
  // Watchers have their own lock: pushing a plan to thousands of them must not hold up ingest.
  mutable absl::Mutex watchers_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::map<std::string, std::set<Watcher*>> watchers_ ABSL_GUARDED_BY(watchers_mu_);
  absl::Mutex streams_mu_;
  std::map<std::string, int> streams_by_peer_ ABSL_GUARDED_BY(streams_mu_);
  struct Bucket {
    double tokens = 0;
    absl::Time last;
  };
  std::map<std::pair<std::string, int>, Bucket> report_buckets_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  // The lean encoding of each job's last delivered plan: the base of the next delta.
  std::map<std::string, std::shared_ptr<const v1::Plan>> last_lean_ ABSL_GUARDED_BY(publish_mu_);
  std::thread planner_;
};

}  // namespace hecate::controller

#endif  // HECATE_CONTROLLER_SERVICE_CONTROLLER_SERVICE_H_
