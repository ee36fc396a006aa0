// The controller's Prometheus metrics, declared in one place (DESIGN.md §10). Base units, `hecate_`
// prefix, counters end in `_total`, bounded labels (job_id, layer, result, state, stat; never a
// label Prometheus attaches to targets, such as `job` or `instance`); per-expert series as
// `ExpertDetail` says. Handles are cached; updating a metric is lock-free inside
// prometheus-cpp, so any thread may call these. The registry is exported by the composition root.
#ifndef HECATE_CONTROLLER_METRICS_CONTROLLER_METRICS_H_
#define HECATE_CONTROLLER_METRICS_CONTROLLER_METRICS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "controller/auth/auth.h"
#include "controller/core/controller_core.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace hecate::controller {

// Per-expert series (hecate_expert_tokens_total{job_id,layer,expert}): always, never, or for jobs
// whose layers x experts is at most kExpertDetailAutoCells (one series per expert of the job).
enum class ExpertDetail { kAuto, kOn, kOff };
inline constexpr int64_t kExpertDetailAutoCells = 16384;
// "auto", "on", "off" -> ExpertDetail; false for anything else.
bool ParseExpertDetail(const std::string& text, ExpertDetail* out);

class ControllerMetrics {
 public:
  ControllerMetrics(std::shared_ptr<prometheus::Registry> registry, ExpertDetail expert_detail,
                    const std::string& version);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void SetEpoch(uint64_t epoch);
  void SetRecoverySeconds(double s);
  void Report(ReportResult result);
  // A refused call (hecate_auth_failures_total{reason}).
  void AuthFailure(hecate::controller::AuthFailure why);
  // A request refused by a limit (hecate_limit_rejections_total{limit}): peer_streams, watchers,
  // watcher_queue, report_rate.
  void LimitRejection(const std::string& limit);
  void PlanComputed(double seconds);
  void PlanPublished(const std::string& job, const placement::Plan& plan, double unix_seconds,
                     bool reshard);
  void PlanPushed(double seconds);
  void Workers(int live, int stale, int lost);
  void Observed(const std::string& job, const std::vector<LayerObservation>& layers);
  // Per-expert tokens of one finalized iteration (as ExpertDetail says).
  void ExpertTokens(const std::string& job, const placement::ModelLoad& observed);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  ExpertDetail expert_detail_;
  prometheus::Gauge* epoch_;
  prometheus::Gauge* recovery_seconds_;
  prometheus::Family<prometheus::Counter>* reports_;
  std::map<ReportResult, prometheus::Counter*> report_counters_;
  std::map<hecate::controller::AuthFailure, prometheus::Counter*> auth_failures_;
  std::map<std::string, prometheus::Counter*> limit_rejections_;
  prometheus::Histogram* compute_seconds_;
  prometheus::Histogram* push_seconds_;
  prometheus::Family<prometheus::Gauge>* plan_version_;
  prometheus::Family<prometheus::Gauge>* plan_published_ts_;
  prometheus::Family<prometheus::Counter>* plans_published_;
  prometheus::Family<prometheus::Counter>* reshards_;
  prometheus::Family<prometheus::Counter>* migration_bytes_;
  prometheus::Family<prometheus::Gauge>* materialized_bytes_;
  prometheus::Family<prometheus::Gauge>* predicted_seconds_;
  prometheus::Family<prometheus::Gauge>* workers_;
  prometheus::Family<prometheus::Gauge>* balancedness_;
  prometheus::Family<prometheus::Gauge>* predicted_balancedness_;
  prometheus::Family<prometheus::Gauge>* expert_load_ratio_;
  prometheus::Family<prometheus::Counter>* expert_tokens_;
};

}  // namespace hecate::controller

#endif  // HECATE_CONTROLLER_METRICS_CONTROLLER_METRICS_H_
