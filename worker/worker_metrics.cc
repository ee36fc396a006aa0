#include "worker/worker_metrics.h"

namespace hecate::worker {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

WorkerMetrics::WorkerMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  prometheus::Registry& r = *registry_;
  BuildGauge()
      .Name("hecate_build_info")
      .Help("Build metadata of this worker (always 1).")
      .Register(r)
      .Add({{"version", "0.1.0"}, {"component", "worker"}})
      .Set(1);
  connected_ = &BuildGauge()
                    .Name("hecate_agent_controller_connected")
                    .Help("1 while the agent is registered and streaming to the controller.")
                    .Register(r)
                    .Add({});
  plan_version_ = &BuildGauge()
                       .Name("hecate_agent_plan_version_applied")
                       .Help("Version of the plan this worker trains under.")
                       .Register(r)
                       .Add({});
  plan_epoch_ = &BuildGauge()
                     .Name("hecate_agent_plan_epoch_applied")
                     .Help("Controller epoch of the plan this worker trains under.")
                     .Register(r)
                     .Add({});
  local_planning_ = &BuildGauge()
                         .Name("hecate_agent_local_planning")
                         .Help("1 while plans come from the local (fail-static) planner.")
                         .Register(r)
                         .Add({});
  phase_family_ = &BuildHistogram()
                       .Name("hecate_worker_step_phase_seconds")
                       .Help("Seconds per training step spent in each phase.")
                       .Register(r);
  for (const char* p : {"attention", "gate", "dispatch", "expert", "combine", "spag", "sprs",
                        "spag_exposed", "sprs_exposed", "optimizer", "dense_allreduce", "step"}) {
    phases_[p] = &phase_family_->Add(
        {{"phase", p}}, prometheus::Histogram::BucketBoundaries{0.0001, 0.0005, 0.001, 0.005, 0.01,
                                                                0.05, 0.1, 0.5, 1, 5});
  }
  steps_ =
      &BuildCounter().Name("hecate_worker_steps_total").Help("Training steps.").Register(r).Add({});
  tokens_ = &BuildCounter()
                 .Name("hecate_worker_tokens_total")
                 .Help("Tokens of the global batch processed (per job, counted on every rank).")
                 .Register(r)
                 .Add({});
  loss_ = &BuildGauge().Name("hecate_worker_loss").Help("Last global loss.").Register(r).Add({});
  bytes_family_ = &BuildCounter()
                       .Name("hecate_worker_collective_bytes_total")
                       .Help("Payload bytes by collective kind and direction.")
                       .Register(r);
  for (int k = 0; k < static_cast<int>(CommKind::kCount); ++k) {
    for (bool sent : {true, false}) {
      bytes_[{k, sent}] = &bytes_family_->Add({{"kind", CommKindName(static_cast<CommKind>(k))},
                                               {"direction", sent ? "sent" : "received"}});
    }
  }
  reports_family_ = &BuildCounter()
                         .Name("hecate_agent_reports_total")
                         .Help("Load reports by result.")
                         .Register(r);
  reports_sent_ = &reports_family_->Add({{"result", "sent"}});
  reports_rejected_ = &reports_family_->Add({{"result", "rejected"}});
  dropped_ = &BuildCounter()
                  .Name("hecate_agent_report_queue_dropped_total")
                  .Help("Reports dropped because the bounded queue was full.")
                  .Register(r)
                  .Add({});
  auto& calibration = BuildCounter()
                          .Name("hecate_worker_calibration_copies_total")
                          .Help(
                              "Expert copies calibration gathered after the gate (gathered) "
                              "and planned copies it gave up for them (dropped), all layers.")
                          .Register(r);
  calibration_gathered_ = &calibration.Add({{"change", "gathered"}});
  calibration_dropped_ = &calibration.Add({{"change", "dropped"}});
  copy_peak_ = &BuildGauge()
                    .Name("hecate_worker_copy_peak_bytes")
                    .Help("Most bytes of materialized expert copies held at once in the last step.")
                    .Register(r)
                    .Add({});
  copy_predicted_ =
      &BuildGauge()
           .Name("hecate_worker_copy_predicted_bytes")
           .Help("Copy bytes the plan's memory model predicts for this rank at most at once.")
           .Register(r)
           .Add({});
}

void WorkerMetrics::Calibration(int gathered, int dropped) {
  calibration_gathered_->Increment(gathered);
  calibration_dropped_->Increment(dropped);
}

void WorkerMetrics::Phase(const std::string& phase, double seconds) {
  auto it = phases_.find(phase);
  if (it != phases_.end()) it->second->Observe(seconds);
}

void WorkerMetrics::Step(double seconds, double loss, int64_t tokens) {
  Phase("step", seconds);
  steps_->Increment();
  tokens_->Increment(static_cast<double>(tokens));
  loss_->Set(loss);
}

void WorkerMetrics::SyncBytes(const CommCounters& counters) {
  for (auto& [key, counter] : bytes_) {
    const auto kind = static_cast<CommKind>(key.first);
    const double total =
        static_cast<double>(key.second ? counters.sent(kind) : counters.received(kind));
    if (total > counter->Value()) counter->Increment(total - counter->Value());
  }
}

void WorkerMetrics::SetReportCounters(int64_t sent, int64_t dropped, int64_t rejected) {
  if (sent > reports_sent_->Value()) reports_sent_->Increment(sent - reports_sent_->Value());
  if (rejected > reports_rejected_->Value()) {
    reports_rejected_->Increment(rejected - reports_rejected_->Value());
  }
  if (dropped > dropped_->Value()) dropped_->Increment(dropped - dropped_->Value());
}

}  // namespace hecate::worker
