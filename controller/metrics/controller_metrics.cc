#include "controller/metrics/controller_metrics.h"

#include "absl/strings/str_cat.h"

namespace hecate::controller {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

ControllerMetrics::ControllerMetrics(std::shared_ptr<prometheus::Registry> registry,
                                     ExpertDetail expert_detail, const std::string& version)
    : registry_(std::move(registry)), expert_detail_(expert_detail) {
  prometheus::Registry& r = *registry_;
  BuildGauge()
      .Name("hecate_build_info")
      .Help("Build metadata of this controller (always 1).")
      .Register(r)
      .Add({{"version", version}, {"component", "controller"}})
      .Set(1);
  epoch_ = &BuildGauge()
                .Name("hecate_controller_epoch")
                .Help("Controller epoch: rises on every start; fences plans.")
                .Register(r)
                .Add({});
  recovery_seconds_ = &BuildGauge()
                           .Name("hecate_recovery_duration_seconds")
                           .Help("Time spent recovering state from --state-dir at start.")
                           .Register(r)
                           .Add({});
  reports_ = &BuildCounter()
                  .Name("hecate_reports_received_total")
                  .Help("Load reports received, by result (accepted or the rejection reason).")
                  .Register(r);
  prometheus::Family<prometheus::Counter>& auth =
      BuildCounter()
          .Name("hecate_auth_failures_total")
          .Help(
              "Calls refused: no credential, unknown token or certificate, wrong role, or a "
              "worker secret that does not match.")
          .Register(r);
  for (hecate::controller::AuthFailure f :
       {AuthFailure::kNoCredential, AuthFailure::kBadToken, AuthFailure::kUnknownCertificate,
        AuthFailure::kWrongRole, AuthFailure::kBadSecret}) {
    auth_failures_[f] = &auth.Add({{"reason", AuthFailureName(f)}});
  }
  prometheus::Family<prometheus::Counter>& limits =
      BuildCounter()
          .Name("hecate_limit_rejections_total")
          .Help("Requests refused by a limit: peer_streams, watchers, watcher_queue, report_rate.")
          .Register(r);
  for (const char* l : {"peer_streams", "watchers", "watcher_queue", "report_rate"}) {
    limit_rejections_[l] = &limits.Add({{"limit", l}});
  }
  for (ReportResult res : AllReportResults()) {
    report_counters_[res] = &reports_->Add({{"result", ReportResultName(res)}});
  }
  compute_seconds_ =
      &BuildHistogram()
           .Name("hecate_plan_compute_duration_seconds")
           .Help("Time to compute one plan (policy + sharding + prediction).")
           .Register(r)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                            0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5});
  push_seconds_ = &BuildHistogram()
                       .Name("hecate_plan_push_duration_seconds")
                       .Help("Time from commit to the plan queued on every watcher.")
                       .Register(r)
                       .Add({}, prometheus::Histogram::BucketBoundaries{
                                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1});
  plan_version_ = &BuildGauge()
                       .Name("hecate_plan_version")
                       .Help("Version of the job's current plan.")
                       .Register(r);
  plan_published_ts_ = &BuildGauge()
                            .Name("hecate_plan_last_published_timestamp_seconds")
                            .Help("Unix time the job's current plan was published.")
                            .Register(r);
  plans_published_ =
      &BuildCounter().Name("hecate_plans_published_total").Help("Plans published.").Register(r);
  reshards_ = &BuildCounter()
                   .Name("hecate_reshards_total")
                   .Help("Plans that changed the sharding (owners) of some expert.")
                   .Register(r);
  migration_bytes_ = &BuildCounter()
                          .Name("hecate_plan_migration_bytes_total")
                          .Help("Parameter and optimizer bytes moved by published plans.")
                          .Register(r);
  materialized_bytes_ = &BuildGauge()
                             .Name("hecate_plan_materialized_bytes")
                             .Help("Bytes the current plan moves per iteration (spAG + spRS).")
                             .Register(r);
  predicted_seconds_ = &BuildGauge()
                            .Name("hecate_plan_predicted_moe_seconds")
                            .Help("Predicted MoE time per iteration of the current plan.")
                            .Register(r);
  workers_ = &BuildGauge()
                  .Name("hecate_workers")
                  .Help("Registered workers by liveness state.")
                  .Register(r);
  balancedness_ = &BuildGauge()
                       .Name("hecate_layer_balancedness_ratio")
                       .Help("Observed mean/max device tokens per layer (0-1; 1 = balanced).")
                       .Register(r);
  predicted_balancedness_ = &BuildGauge()
                                 .Name("hecate_layer_predicted_balancedness_ratio")
                                 .Help("Balancedness the plan in force predicted per layer (0-1).")
                                 .Register(r);
  expert_load_ratio_ = &BuildGauge()
                            .Name("hecate_layer_expert_load_ratio")
                            .Help("Expert load over the layer mean: stat = max, p50, min.")
                            .Register(r);
  expert_tokens_ = expert_detail_ != ExpertDetail::kOff
                       ? &BuildCounter()
                              .Name("hecate_expert_tokens_total")
                              .Help("Tokens routed to each expert (per-expert detail).")
                              .Register(r)
                       : nullptr;
}

bool ParseExpertDetail(const std::string& text, ExpertDetail* out) {
  if (text == "auto") {
    *out = ExpertDetail::kAuto;
  } else if (text == "on") {
    *out = ExpertDetail::kOn;
  } else if (text == "off") {
    *out = ExpertDetail::kOff;
  } else {
    return false;
  }
  return true;
}

void ControllerMetrics::SetEpoch(uint64_t epoch) { epoch_->Set(static_cast<double>(epoch)); }
void ControllerMetrics::SetRecoverySeconds(double s) { recovery_seconds_->Set(s); }
void ControllerMetrics::Report(ReportResult result) { report_counters_[result]->Increment(); }
void ControllerMetrics::LimitRejection(const std::string& limit) {
  auto it = limit_rejections_.find(limit);
  if (it != limit_rejections_.end()) it->second->Increment();
}

void ControllerMetrics::AuthFailure(hecate::controller::AuthFailure why) {
  auth_failures_[why]->Increment();
}
void ControllerMetrics::PlanComputed(double seconds) { compute_seconds_->Observe(seconds); }
void ControllerMetrics::PlanPushed(double seconds) { push_seconds_->Observe(seconds); }

void ControllerMetrics::PlanPublished(const std::string& job, const placement::Plan& plan,
                                      double unix_seconds, bool reshard) {
  plan_version_->Add({{"job_id", job}}).Set(static_cast<double>(plan.id.version));
  plan_published_ts_->Add({{"job_id", job}}).Set(unix_seconds);
  plans_published_->Add({{"job_id", job}}).Increment();
  if (reshard || !plan.migrations.empty()) reshards_->Add({{"job_id", job}}).Increment();
  migration_bytes_->Add({{"job_id", job}}).Increment(static_cast<double>(plan.migration_bytes()));
  materialized_bytes_->Add({{"job_id", job}})
      .Set(static_cast<double>(plan.prediction.sparse_bytes));
  predicted_seconds_->Add({{"job_id", job}}).Set(plan.prediction.moe_seconds);
}

void ControllerMetrics::Workers(int live, int stale, int lost) {
  workers_->Add({{"state", "live"}}).Set(live);
  workers_->Add({{"state", "stale"}}).Set(stale);
  workers_->Add({{"state", "lost"}}).Set(lost);
}

void ControllerMetrics::Observed(const std::string& job,
                                 const std::vector<LayerObservation>& layers) {
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string layer = absl::StrCat(l);
    const LayerObservation& o = layers[l];
    balancedness_->Add({{"job_id", job}, {"layer", layer}, {"scope", "rank"}}).Set(o.balancedness);
    predicted_balancedness_->Add({{"job_id", job}, {"layer", layer}}).Set(o.predicted_balancedness);
    expert_load_ratio_->Add({{"job_id", job}, {"layer", layer}, {"stat", "max"}}).Set(o.expert_max);
    expert_load_ratio_->Add({{"job_id", job}, {"layer", layer}, {"stat", "p50"}}).Set(o.expert_p50);
    expert_load_ratio_->Add({{"job_id", job}, {"layer", layer}, {"stat", "min"}}).Set(o.expert_min);
  }
}

void ControllerMetrics::ExpertTokens(const std::string& job, const placement::ModelLoad& observed) {
  if (expert_tokens_ == nullptr) return;
  if (expert_detail_ == ExpertDetail::kAuto) {
    int64_t cells = 0;
    for (const placement::LoadMatrix& m : observed) cells += m.num_experts();
    if (cells > kExpertDetailAutoCells) return;
  }
  for (size_t l = 0; l < observed.size(); ++l) {
    std::vector<int64_t> totals = observed[l].ExpertTotals();
    for (size_t e = 0; e < totals.size(); ++e) {
      expert_tokens_
          ->Add({{"job_id", job}, {"layer", absl::StrCat(l)}, {"expert", absl::StrCat(e)}})
          .Increment(static_cast<double>(totals[e]));
    }
  }
}

}  // namespace hecate::controller
