// The worker's Prometheus metrics (DESIGN.md §10), declared in one place. No per-expert or
// per-layer labels on workers: bounded labels only (phase, kind, direction, result).
#ifndef HECATE_WORKER_WORKER_METRICS_H_
#define HECATE_WORKER_WORKER_METRICS_H_

#include <map>
#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

class WorkerMetrics {
 public:
  explicit WorkerMetrics(std::shared_ptr<prometheus::Registry> registry);
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void SetConnected(bool connected) { connected_->Set(connected ? 1 : 0); }
  void SetPlan(uint64_t epoch, uint64_t version) {
    plan_version_->Set(static_cast<double>(version));
    plan_epoch_->Set(static_cast<double>(epoch));
  }
  void SetLocalPlanning(bool on) { local_planning_->Set(on ? 1 : 0); }
  // Phase seconds of one step (histogram per phase + last value).
  void Phase(const std::string& phase, double seconds);
  void Step(double seconds, double loss, int64_t tokens);
  // Brings the collective byte counters up to the communicator's totals.
  void SyncBytes(const CommCounters& counters);
  void SetReportCounters(int64_t sent, int64_t dropped, int64_t rejected);
  // Copies calibration gathered after the gate, and planned copies it gave up for them, in one
  // step (all layers).
  void Calibration(int gathered, int dropped);
  // The most bytes of materialized copies held at once in the last step, and what the plan's
  // memory model predicts for this rank (placement::CopyBytesPerDevice).
  void SetCopyBytes(int64_t peak, int64_t predicted) {
    copy_peak_->Set(static_cast<double>(peak));
    copy_predicted_->Set(static_cast<double>(predicted));
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* connected_;
  prometheus::Gauge* plan_version_;
  prometheus::Gauge* plan_epoch_;
  prometheus::Gauge* local_planning_;
  prometheus::Family<prometheus::Histogram>* phase_family_;
  std::map<std::string, prometheus::Histogram*> phases_;
  prometheus::Counter* steps_;
  prometheus::Counter* tokens_;
  prometheus::Gauge* loss_;
  prometheus::Family<prometheus::Counter>* bytes_family_;
  std::map<std::pair<int, bool>, prometheus::Counter*> bytes_;
  prometheus::Family<prometheus::Counter>* reports_family_;
  prometheus::Counter* reports_sent_;
  prometheus::Counter* reports_rejected_;
  prometheus::Counter* dropped_;
  prometheus::Counter* calibration_gathered_;
  prometheus::Counter* calibration_dropped_;
  prometheus::Gauge* copy_peak_;
  prometheus::Gauge* copy_predicted_;
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_WORKER_METRICS_H_
