// The training loop of a started Worker: every iteration, agree on the plan (the controller's,
// else the local planner's), apply it, step, report the loads, update metrics, print progress
// and checkpoint; at the end, the job-wide figures and rank 0's summary line.
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "placement/planning_loop.h"
#include "wire/convert.h"
#include "worker/model/checkpoint.h"
#include "worker/worker_parts.h"

namespace hecate::worker {

namespace pl = placement;

namespace {

// The median of `v` (0 when empty): a step time robust to this machine's stalls.
double MedianSeconds(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

absl::Status Collective(const std::string& what, const absl::Status& s) {
  return WithExitCode(ExitCode::kCollective,
                      absl::Status(s.code(), absl::StrCat(what, " failed: ", s.message())));
}

// Sums over the run for the summary line.
struct Totals {
  double first_loss = 0, last_loss = 0, step_sum = 0;
  std::vector<double> step_times, iteration_times;
  int64_t tokens = 0, calibration_gathered = 0, calibration_dropped = 0;
  int64_t peak_copy_bytes = 0, max_predicted_copy_bytes = 0;
  double spag = 0, spag_exposed = 0, sprs = 0, sprs_exposed = 0;
  PhaseTimes phases;  // summed over the run
};

class TrainingLoop {
 public:
  TrainingLoop(const WorkerConfig& config, WorkerParts& parts) : c_(config), p_(parts) {}

  absl::StatusOr<RunSummary> Run() {
    const absl::Duration pace = c_.step_interval;
    absl::Time next_start = absl::Now();
    for (uint64_t it = p_.start; it < static_cast<uint64_t>(c_.iterations); ++it) {
      if (pace > absl::ZeroDuration()) {
        absl::SleepFor(next_start - absl::Now());
        next_start = std::max(next_start + pace, absl::Now());
      }
      if (static_cast<int64_t>(it) == c_.debug_exit_at) {
        LogError("exiting on --debug_exit_at", LogFields()("iteration", it));
        std::fflush(stdout);
        _exit(static_cast<int>(ExitCode::kError));
      }
      if (absl::Status s = Iteration(it); !s.ok()) return s;
    }
    return Finish();
  }

 private:
  // Agrees on this iteration's plan and applies it when it changed.
  absl::Status AgreeAndApply(uint64_t it) {
    std::shared_ptr<const pl::Plan> next;
    if (c_.mode == "fssdp") {
      absl::StatusOr<PlanAgreement::Outcome> o =
          PlanAgreement::Agree(*p_.comm, p_.agent.get(), it, p_.controller_applied);
      if (!o.ok()) return Collective("plan agreement", o.status());
      if (o->plan != nullptr) {
        next = o->plan;
        p_.controller_applied = next->id;
        if (p_.local) p_.local->Seed(next);
        local_mode_ = false;
      } else if (p_.local && (p_.agent == nullptr || !o->all_connected)) {
        if (!local_mode_ && p_.agent != nullptr) {
          LogWarn("controller unreachable from some rank; planning locally (fail-static)",
                  LogFields()("iteration", it));
        }
        local_mode_ = p_.agent != nullptr;
        next = p_.local->Next(it, last_global_);
      } else if (p_.local) {
        p_.local->Observe(last_global_);
      }
      if (o->all_connected) local_mode_ = false;  // back under the controller's plans
    }
    if (next != nullptr && next != p_.applied) {
      if (absl::Status s = p_.trainer->ApplyPlan(*next); !s.ok()) {
        return Collective(absl::StrCat("applying plan ", next->id.version), s);
      }
      p_.applied = next;
      ++summary_.plans_applied;
    }
    return absl::OkStatus();
  }

  absl::Status Iteration(uint64_t it) {
    const absl::Time start = absl::Now();
    if (absl::Status s = AgreeAndApply(it); !s.ok()) return s;
    if (p_.plan_log.is_open()) {
      p_.plan_log << it << " " << p_.applied->id.epoch << " " << p_.applied->id.version << "\n";
      p_.plan_log.flush();
    }
    absl::StatusOr<StepResult> r = p_.trainer->Step(it);
    if (!r.ok()) {
      const absl::Status s(r.status().code(),
                           absl::StrCat("iteration ", it, " failed: ", r.status().message()));
      return WithExitCode(r.status().code() == absl::StatusCode::kInternal ? ExitCode::kError
                                                                           : ExitCode::kCollective,
                          s);
    }
    Report(it, *r);
    // The whole iteration as a training script times it: agreement, switch, step and the load
    // report (the PyTorch front end's hecate.step() sends it too); the metrics and logs after it
    // are this binary's own.
    totals_.iteration_times.push_back(absl::ToDoubleSeconds(absl::Now() - start));
    last_global_ = r->global_counts;
    if (p_.trace) (void)p_.trace->Append(it, r->global_counts);
    Observe(*r);
    summary_.losses.push_back(r->loss);
    summary_.plans.push_back(p_.applied->id);
    if (c_.rank == 0 && c_.out != nullptr &&
        (it % std::max(1, c_.log_every) == 0 || it + 1 == static_cast<uint64_t>(c_.iterations))) {
      Progress(it, *r);
    }
    if (!c_.checkpoint_dir.empty() && c_.checkpoint_every > 0 &&
        (it + 1) % c_.checkpoint_every == 0) {
      if (absl::Status s =
              SaveCheckpoint(c_.checkpoint_dir, it + 1, *p_.trainer, *p_.applied, *p_.comm);
          !s.ok()) {
        const bool collective = s.code() == absl::StatusCode::kUnavailable ||
                                s.code() == absl::StatusCode::kDeadlineExceeded;
        return WithExitCode(
            collective ? ExitCode::kCollective : ExitCode::kError,
            absl::Status(s.code(), absl::StrCat("checkpoint failed: ", s.message())));
      }
    }
    return absl::OkStatus();
  }

  void Report(uint64_t it, const StepResult& r) {
    if (p_.agent == nullptr || !c_.report_loads) return;
    wire::LoadReport rep;
    rep.job_id = c_.job;
    rep.rank = c_.rank;
    rep.incarnation = c_.incarnation;
    rep.iteration = it;
    rep.plan = p_.controller_applied;
    rep.layers = r.local_counts;
    rep.timings.attention_seconds = r.times.attention / c_.trainer.layers;
    rep.timings.gate_seconds = r.times.gate;
    rep.timings.dispatch_seconds = r.times.dispatch;
    rep.timings.expert_seconds = r.times.expert;
    rep.timings.combine_seconds = r.times.combine;
    rep.timings.spag_seconds = r.times.spag;
    rep.timings.sprs_seconds = r.times.sprs;
    rep.timings.optimizer_seconds = r.times.optimizer;
    rep.timings.step_seconds = r.times.step;
    rep.tokens = int64_t{c_.trainer.batch} * c_.trainer.seq_len;
    rep.free_memory_bytes = p_.cluster->spec().nodes.front().device_memory_bytes;
    p_.agent->Enqueue(wire::ToProto(rep));
  }

  // Metrics and the run's sums.
  void Observe(const StepResult& r) {
    WorkerMetrics& m = *p_.metrics;
    m.Step(r.times.step, r.loss, r.tokens);
    const PhaseTimes& t = r.times;
    for (const auto& [phase, seconds] : {std::pair<const char*, double>{"attention", t.attention},
                                         {"gate", t.gate},
                                         {"dispatch", t.dispatch},
                                         {"expert", t.expert},
                                         {"combine", t.combine},
                                         {"spag", t.spag},
                                         {"sprs", t.sprs},
                                         {"spag_exposed", t.spag_exposed},
                                         {"sprs_exposed", t.sprs_exposed},
                                         {"optimizer", t.optimizer},
                                         {"dense_allreduce", t.dense_allreduce}}) {
      m.Phase(phase, seconds);
    }
    m.Calibration(r.calibration_copies, r.calibration_dropped);
    const int64_t predicted =
        pl::CopyBytesPerDevice(*p_.applied, *p_.cluster, p_.model)[static_cast<size_t>(c_.rank)];
    m.SetCopyBytes(r.peak_copy_bytes, predicted);
    m.SyncBytes(p_.comm->counters());
    m.SetPlan(p_.applied->id.epoch, p_.applied->id.version);
    m.SetLocalPlanning(local_mode_);
    if (p_.agent) {
      m.SetConnected(p_.agent->connected());
      m.SetReportCounters(p_.agent->reports_sent(), p_.agent->reports_dropped(),
                          p_.agent->reports_rejected());
    }
    Totals& s = totals_;
    s.peak_copy_bytes = std::max(s.peak_copy_bytes, r.peak_copy_bytes);
    s.max_predicted_copy_bytes = std::max(s.max_predicted_copy_bytes, predicted);
    for (auto [sum, value] : {std::pair<double*, double>{&s.phases.attention, t.attention},
                              {&s.phases.gate, t.gate},
                              {&s.phases.dispatch, t.dispatch},
                              {&s.phases.expert, t.expert},
                              {&s.phases.combine, t.combine},
                              {&s.phases.optimizer, t.optimizer},
                              {&s.phases.dense_allreduce, t.dense_allreduce}}) {
      *sum += value;
    }
    s.spag += t.spag;
    s.spag_exposed += t.spag_exposed;
    s.sprs += t.sprs;
    s.sprs_exposed += t.sprs_exposed;
    s.calibration_gathered += r.calibration_copies;
    s.calibration_dropped += r.calibration_dropped;
    if (summary_.iterations == 0) s.first_loss = r.loss;
    s.last_loss = r.loss;
    s.step_sum += t.step;
    s.step_times.push_back(t.step);
    s.tokens += r.tokens;
    ++summary_.iterations;
  }

  void Progress(uint64_t it, const StepResult& r) {
    const PhaseTimes& tm = r.times;
    std::fprintf(
        c_.out,
        "progress iter=%llu loss=%.4f tokens_per_s=%.0f balancedness=%.3f plan=%llu.%llu "
        "step_ms=%.1f attention_ms=%.1f gate_ms=%.1f dispatch_ms=%.1f expert_ms=%.1f "
        "combine_ms=%.1f spag_ms=%.1f spag_exposed_ms=%.1f sprs_ms=%.1f sprs_exposed_ms=%.1f "
        "optimizer_ms=%.1f peak_copy_bytes=%lld controller=%s\n",
        static_cast<unsigned long long>(it), r.loss, r.tokens / std::max(1e-9, tm.step),
        pl::Judge(*p_.applied, r.global_counts, c_.trainer.calibration, *p_.cost, *p_.cost)
            .plan.prediction.balancedness,
        static_cast<unsigned long long>(p_.applied->id.epoch),
        static_cast<unsigned long long>(p_.applied->id.version), tm.step * 1e3, tm.attention * 1e3,
        tm.gate * 1e3, tm.dispatch * 1e3, tm.expert * 1e3, tm.combine * 1e3, tm.spag * 1e3,
        tm.spag_exposed * 1e3, tm.sprs * 1e3, tm.sprs_exposed * 1e3, tm.optimizer * 1e3,
        static_cast<long long>(r.peak_copy_bytes),
        p_.agent == nullptr     ? "none"
        : local_mode_           ? "unreachable"
        : p_.agent->connected() ? "connected"
                                : "connecting");
    std::fflush(c_.out);
  }

  // Job-wide figures: the most copy bytes any rank held at once, and the bytes every rank sent by
  // the sparse collectives (or the replicas' AllReduce) and by migrations.
  absl::StatusOr<RunSummary> Finish() {
    if (p_.agent) p_.agent->Stop();
    const CommCounters& counters = p_.comm->counters();
    const int64_t sparse =
        counters.sent(CommKind::kSparseAllGather) + counters.sent(CommKind::kSparseReduceScatter);
    const int64_t mine[3] = {totals_.peak_copy_bytes, sparse, counters.sent(CommKind::kMigration)};
    const int world = c_.world_size;
    std::vector<int64_t> all(3 * static_cast<size_t>(world));
    if (absl::Status s = p_.comm->AllGatherInt64(mine, 3, all.data(), CommKind::kControl);
        !s.ok()) {
      return Collective("final exchange", s);
    }
    int64_t job_peak = 0, job_sparse = 0, job_migration = 0;
    for (int r = 0; r < world; ++r) {
      job_peak = std::max(job_peak, all[3 * r]);
      job_sparse += all[3 * r + 1];
      job_migration += all[3 * r + 2];
    }
    const Totals& t = totals_;
    const int steps = summary_.iterations;
    summary_.mean_step_seconds = steps ? t.step_sum / steps : 0;
    summary_.peak_copy_bytes = t.peak_copy_bytes;
    summary_.sparse_bytes_sent = sparse;
    if (c_.rank != 0 || c_.out == nullptr) return summary_;
    auto mean_ms = [&](double sum) { return steps ? sum / steps * 1e3 : 0.0; };
    std::fprintf(
        c_.out,
        "summary iterations=%d first_loss=%.4f last_loss=%.4f mean_step_ms=%.1f "
        "tokens_per_s=%.0f plans_applied=%d final_plan=%llu.%llu sharding_version=%llu "
        "spag_bytes=%lld sprs_bytes=%lld a2a_bytes=%lld reports_dropped=%lld "
        "calibration_gathered=%lld calibration_dropped=%lld mean_spag_ms=%.2f "
        "mean_spag_exposed_ms=%.2f mean_sprs_ms=%.2f mean_sprs_exposed_ms=%.2f "
        "peak_copy_bytes=%lld predicted_copy_bytes=%lld overlap=%d median_step_ms=%.1f "
        "job_peak_copy_bytes=%lld job_sparse_bytes=%lld job_migration_bytes=%lld device=%s "
        "comm=%s mean_attention_ms=%.2f mean_gate_ms=%.2f mean_dispatch_ms=%.2f "
        "mean_expert_ms=%.2f mean_combine_ms=%.2f mean_optimizer_ms=%.2f "
        "mean_dense_allreduce_ms=%.2f median_iteration_ms=%.1f\n",
        steps, t.first_loss, t.last_loss, mean_ms(t.step_sum),
        t.step_sum > 0 ? t.tokens / t.step_sum : 0.0, summary_.plans_applied,
        static_cast<unsigned long long>(p_.applied->id.epoch),
        static_cast<unsigned long long>(p_.applied->id.version),
        static_cast<unsigned long long>(p_.applied->sharding_version),
        static_cast<long long>(counters.sent(CommKind::kSparseAllGather)),
        static_cast<long long>(counters.sent(CommKind::kSparseReduceScatter)),
        static_cast<long long>(counters.sent(CommKind::kAllToAll)),
        static_cast<long long>(p_.agent ? p_.agent->reports_dropped() : 0),
        static_cast<long long>(t.calibration_gathered),
        static_cast<long long>(t.calibration_dropped), mean_ms(t.spag), mean_ms(t.spag_exposed),
        mean_ms(t.sprs), mean_ms(t.sprs_exposed), static_cast<long long>(t.peak_copy_bytes),
        static_cast<long long>(t.max_predicted_copy_bytes), p_.lane != nullptr ? 1 : 0,
        MedianSeconds(t.step_times) * 1e3, static_cast<long long>(job_peak),
        static_cast<long long>(job_sparse), static_cast<long long>(job_migration),
        DeviceKindName(c_.trainer.device), CommBackendName(c_.comm), mean_ms(t.phases.attention),
        mean_ms(t.phases.gate), mean_ms(t.phases.dispatch), mean_ms(t.phases.expert),
        mean_ms(t.phases.combine), mean_ms(t.phases.optimizer), mean_ms(t.phases.dense_allreduce),
        MedianSeconds(t.iteration_times) * 1e3);
    std::fflush(c_.out);
    return summary_;
  }

  const WorkerConfig& c_;
  WorkerParts& p_;
  RunSummary summary_;
  Totals totals_;
  pl::ModelLoad last_global_;
  bool local_mode_ = false;
};

}  // namespace

absl::StatusOr<RunSummary> RunTrainingLoop(const WorkerConfig& config, WorkerParts& parts) {
  return TrainingLoop(config, parts).Run();
}

}  // namespace hecate::worker
