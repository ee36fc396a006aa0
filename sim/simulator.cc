#include "sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "placement/cost_model.h"
#include "placement/planning_loop.h"

namespace hecate::sim {

namespace pl = placement;

namespace {

bool SamePlacement(const pl::Plan& a, const pl::Plan& b) {
  if (a.layers.size() != b.layers.size()) return false;
  for (size_t l = 0; l < a.layers.size(); ++l) {
    if (a.layers[l].owner != b.layers[l].owner || a.layers[l].replicas != b.layers[l].replicas ||
        a.layers[l].remat != b.layers[l].remat) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<SimResult> Simulate(const pl::Cluster& cluster, const pl::ModelSpec& model,
                                   const LoadSource& loads, int iterations,
                                   const SimOptions& options) {
  absl::StatusOr<std::unique_ptr<pl::Policy>> policy = pl::MakePolicy(options.policy);
  if (!policy.ok()) return absl::InvalidArgumentError(policy.status().message());
  if (absl::Status s = model.Validate(); !s.ok()) return s;
  const pl::Cluster& planning = options.planning_cluster ? *options.planning_cluster : cluster;
  if (planning.num_devices() != cluster.num_devices()) {
    return absl::InvalidArgumentError(absl::StrCat("planning cluster has ", planning.num_devices(),
                                                   " devices, simulated ", cluster.num_devices()));
  }
  const pl::ModelSpec& believed = options.planning_model ? *options.planning_model : model;
  bool same_shape = believed.num_layers() == model.num_layers();
  for (int l = 0; same_shape && l < model.num_layers(); ++l) {
    same_shape = believed.layers[l].num_experts == model.layers[l].num_experts;
  }
  if (!same_shape) {
    return absl::InvalidArgumentError("planning model differs from the simulated one in shape");
  }
  pl::CostModel cost(cluster, model,
                     options.attention_seconds >= 0 ? options.attention_seconds
                                                    : options.planner.attention_forward_seconds);
  // Calibration decides with what the workers believe (the planning cluster and model).
  const pl::CostModel planning_cost(planning, believed, options.planner.attention_forward_seconds);
  const double planner_attention = planning_cost.attention_forward_seconds();
  const int layers = model.num_layers();
  int calibrated_layers = 0;
  pl::PlanningConfig planning_config;
  planning_config.policy = options.policy;
  planning_config.window = options.window;
  planning_config.reshard_period = options.reshard_period;
  planning_config.damping = options.damping;
  planning_config.planner = options.planner;
  pl::PlanningLoop loop(planning_config, /*epoch=*/0);
  SimResult result;
  result.policy = options.policy;
  result.peak_memory_bytes.assign(cluster.num_devices(), 0);
  double balance_sum = 0, maxmean_sum = 0;
  int balance_n = 0;
  for (int i = 0; i < iterations; ++i) {
    auto actual = std::make_shared<const pl::ModelLoad>(loads(i));
    if (absl::Status s = pl::CheckShape(*actual, cluster, model); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("iteration ", i, ": ", s.message()));
    }
    // A policy that decides after the gate plans from the iteration's own counts, everyone else
    // from the window; the first iteration plans from its own counts, as a profiling step would.
    pl::PlanningTask task = loop.MakeTask(static_cast<uint64_t>(i));
    task.gate = actual;
    absl::StatusOr<pl::PlanOutcome> d = pl::PlanStep(planning, believed, std::move(task));
    if (!d.ok()) return absl::InternalError(d.status().message());
    double migration_s = 0;
    int64_t migration_bytes = 0;
    const std::shared_ptr<const pl::Plan>& current = loop.current();
    if (d->plan.has_value() && (current == nullptr || !SamePlacement(*d->plan, *current))) {
      // Relative to the plan in force (the first plan: relative to even sharding).
      migration_s = cost.MigrationSeconds(d->plan->migrations);
      migration_bytes = d->plan->migration_bytes();
      loop.Commit(*std::move(d->plan), static_cast<uint64_t>(i), static_cast<uint64_t>(i));
      ++result.plans_published;
    }
    pl::Judgement judgement =
        pl::Judge(*loop.current(), *actual, options.calibration, planning_cost, cost);
    const pl::Plan& judged = judgement.plan;
    if (i >= options.warmup) calibrated_layers += judgement.calibrated_layers;

    IterationTime t;
    t.attention = 3.0 *
                  (options.attention_seconds >= 0 ? options.attention_seconds : planner_attention) *
                  layers;
    t.other = options.other_seconds_per_layer * layers;
    t.migration = migration_s;
    t.exposed_sparse += judgement.late_seconds;
    for (int l = 0; l < layers; ++l) {
      const pl::LayerPrediction& lp = judged.prediction.layers[l];
      t.expert += lp.compute_seconds;
      t.all_to_all += lp.all_to_all_seconds;
      t.exposed_sparse += lp.exposed_comm_seconds;
      double dispatched = 0;
      for (double x : lp.device_tokens) dispatched += x;
      if (static_cast<int64_t>(dispatched) != (*actual)[l].Total()) {
        result.tokens_conserved = false;
      }
      if (i >= options.warmup) {
        balance_sum += lp.balancedness;
        maxmean_sum += pl::MaxOverMean(lp);
        ++balance_n;
      }
    }
    for (int d = 0; d < cluster.num_devices(); ++d) {
      result.peak_memory_bytes[d] =
          std::max(result.peak_memory_bytes[d], judged.prediction.device_memory_bytes[d]);
    }
    result.per_iteration.push_back(t);
    if (i >= options.warmup) {
      ++result.iterations;
      result.mean.attention += t.attention;
      result.mean.all_to_all += t.all_to_all;
      result.mean.expert += t.expert;
      result.mean.exposed_sparse += t.exposed_sparse;
      result.mean.migration += t.migration;
      result.mean.other += t.other;
      result.sparse_bytes_per_iter += judged.prediction.sparse_bytes + judgement.late_bytes;
      result.migration_bytes_total += migration_bytes;
    }
    (void)loop.Observe(actual);
  }
  if (result.iterations > 0) {
    const double n = result.iterations;
    result.mean.attention /= n;
    result.mean.all_to_all /= n;
    result.mean.expert /= n;
    result.mean.exposed_sparse /= n;
    result.mean.migration /= n;
    result.mean.other /= n;
    result.sparse_bytes_per_iter = static_cast<int64_t>(result.sparse_bytes_per_iter / n);
  }
  result.balancedness = balance_n ? balance_sum / balance_n : 1.0;
  result.max_over_mean = balance_n ? maxmean_sum / balance_n : 1.0;
  result.calibrated_layer_share =
      balance_n ? static_cast<double>(calibrated_layers) / balance_n : 0.0;
  result.peak_memory_max =
      *std::max_element(result.peak_memory_bytes.begin(), result.peak_memory_bytes.end());
  return result;
}

GeneratorFit Fit(const std::vector<pl::ModelLoad>& loads) {
  GeneratorFit fit;
  if (loads.empty()) return fit;
  const size_t layers = loads[0].size();
  double s_sum = 0, r2_sum = 0, drift_sum = 0, noise_sum = 0;
  int noise_n = 0;
  for (size_t l = 0; l < layers; ++l) {
    const int experts = loads[0][l].num_experts();
    std::vector<double> mean(experts, 0);
    for (const pl::ModelLoad& it : loads) {
      std::vector<int64_t> t = it[l].ExpertTotals();
      for (int e = 0; e < experts; ++e) mean[e] += static_cast<double>(t[e]);
    }
    std::vector<double> sorted = mean;
    std::sort(sorted.rbegin(), sorted.rend());
    const double total = std::accumulate(sorted.begin(), sorted.end(), 0.0);
    // log(share) = a - s * log(rank): least squares over ranks with a non-zero share.
    double sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
    int n = 0;
    for (int r = 0; r < experts; ++r) {
      if (sorted[r] <= 0) continue;
      const double x = std::log(r + 1.0), y = std::log(sorted[r] / total);
      sx += x;
      sy += y;
      sxx += x * x;
      sxy += x * y;
      syy += y * y;
      ++n;
    }
    double s = 0, r2 = 0;
    if (n >= 2) {
      const double cov = sxy - sx * sy / n, vx = sxx - sx * sx / n, vy = syy - sy * sy / n;
      s = vx > 0 ? -cov / vx : 0;
      r2 = vx > 0 && vy > 0 ? cov * cov / (vx * vy) : 1.0;
    }
    fit.layer_zipf.push_back(s);
    s_sum += s;
    r2_sum += r2;
    // Drift: how often the hottest expert changes between consecutive iterations (a rotation of
    // the ranking by d ranks per iteration changes it with probability ~d for d <= 1).
    int changes = 0;
    for (size_t i = 1; i < loads.size(); ++i) {
      std::vector<int64_t> a = loads[i - 1][l].ExpertTotals(), b = loads[i][l].ExpertTotals();
      if (std::max_element(a.begin(), a.end()) - a.begin() !=
          std::max_element(b.begin(), b.end()) - b.begin()) {
        ++changes;
      }
    }
    drift_sum += loads.size() > 1 ? static_cast<double>(changes) / (loads.size() - 1) : 0;
    // Source noise: spread of each source's share of a hot expert around the global share.
    for (const pl::ModelLoad& it : loads) {
      const pl::LoadMatrix& m = it[l];
      std::vector<int64_t> t = m.ExpertTotals();
      const int64_t tot = m.Total();
      if (tot == 0) continue;
      const int hot = static_cast<int>(std::max_element(t.begin(), t.end()) - t.begin());
      const double g = static_cast<double>(t[hot]) / tot;
      double var = 0;
      int k = 0;
      for (int d = 0; d < m.num_devices(); ++d) {
        int64_t row = 0;
        for (int e = 0; e < m.num_experts(); ++e) row += m.at(d, e);
        if (row == 0 || g == 0) continue;
        const double rel = (static_cast<double>(m.at(d, hot)) / row - g) / g;
        var += rel * rel;
        ++k;
      }
      if (k > 0) {
        noise_sum += std::sqrt(3.0 * var / k);  // uniform(-a, a) has variance a^2 / 3
        ++noise_n;
      }
    }
  }
  fit.zipf_s = s_sum / layers;
  fit.r2 = r2_sum / layers;
  fit.drift_per_iteration = drift_sum / layers;
  fit.source_noise = noise_n ? noise_sum / noise_n : 0;
  return fit;
}

}  // namespace hecate::sim
