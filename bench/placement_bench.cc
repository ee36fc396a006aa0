// Planning speed of the placement core (one core, Google Benchmark).
//
//   bazel run //bench:placement_bench
//
// Targets: per-iteration planning (materialization + dispatch + prediction for all
// layers) <= 1 ms at paper scale and <= 10 ms at DeepSeek-V3-like scale; sharding (Alg. 2)
// <= 100 ms at DeepSeek-V3-like scale. BM_PlanSteady is the planning loop's per-iteration cost
// (warm start from the previous plan, new loads every call; layers whose loads moved less than
// 2% kept, the default; the every_layer variants re-plan every layer; the no_balance variants turn
// the balance bound off, PlannerConfig::balance_target = 0); BM_PlanCold plans from scratch.
// BM_Calibrate is the workers' calibration of one layer after the gate (on the critical path):
// `hecate` plans made from one iteration's loads, calibrated on the next one's.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <vector>

#include "bench/scales.h"
#include "placement/calibration.h"
#include "placement/cost_model.h"
#include "placement/greedy.h"
#include "placement/paper_materialization.h"
#include "placement/policy.h"
#include "placement/refine.h"
#include "placement/sharding.h"
#include "placement/synthetic.h"

namespace hecate::bench {
namespace {

using placement::Cluster;
using placement::ModelLoad;
using placement::ModelSpec;

struct Fixture {
  Cluster cluster;
  ModelSpec model;
  ModelLoad load;
};

Fixture Make(bool deepseek) {
  Fixture f{
      deepseek ? DeepSeekCluster() : PaperCluster(), deepseek ? DeepSeekModel() : PaperModel(), {}};
  placement::SkewOptions opt;
  opt.zipf_s = 1.0;
  f.load = placement::SkewedLoad(f.cluster, f.model, opt, 0);
  return f;
}

// Cold: no previous plan (the first iteration, or after a re-shard).
void BM_PlanCold(benchmark::State& state, bool deepseek, const char* policy_name) {
  Fixture f = Make(deepseek);
  auto policy = *placement::MakePolicy(policy_name);
  placement::PlanRequest r{&f.cluster, &f.model, &f.load};
  placement::Plan p;
  for (auto _ : state) {
    p = policy->Compute(r);
    benchmark::DoNotOptimize(p.layers.data());
  }
  state.counters["predicted_moe_s"] = p.prediction.moe_seconds;
}

// Steady state: every call plans the next iteration's loads (per-source noise around the same
// Zipf hot set) from the previous call's plan, as the controller's planning loop does. Warm-up
// iterations (not timed) let the warm start settle first.
// `replan_threshold` > 0 keeps the settled layers whose load did not move (PlannerConfig). The
// counter next_moe_s is each plan's predicted MoE time on the next call's loads (the plan's real
// use), predicted_moe_s the plan's own prediction, max_mean its layers' mean predicted max/mean
// device tokens. `balance_target` < 0: the default.
void BM_PlanSteady(benchmark::State& state, bool deepseek, const char* policy_name,
                   double replan_threshold, double balance_target) {
  Fixture f = Make(deepseek);
  auto policy = *placement::MakePolicy(policy_name);
  placement::SkewOptions opt;
  opt.zipf_s = 1.0;
  constexpr int kLoads = 8;
  std::vector<ModelLoad> loads;
  for (int i = 0; i < kLoads; ++i) {
    loads.push_back(placement::SkewedLoad(f.cluster, f.model, opt, static_cast<uint64_t>(i)));
  }
  placement::Plan previous;
  uint64_t iteration = 0;
  auto next = [&]() {
    placement::PlanRequest r{&f.cluster, &f.model, &loads[iteration % kLoads]};
    r.config.replan_threshold = replan_threshold;
    if (balance_target >= 0) r.config.balance_target = balance_target;
    if (iteration > 0) r.previous = &previous;
    r.iteration = iteration++;
    return policy->Compute(r);
  };
  for (int i = 0; i < 16; ++i) previous = next();
  double moe = 0, next_moe = 0, max_mean = 0;
  int64_t planned = 0;
  const placement::CostModel cost(f.cluster, f.model);
  for (auto _ : state) {
    placement::Plan p = next();
    moe += p.prediction.moe_seconds;
    ++planned;
    state.PauseTiming();
    double layers = 0;
    for (const placement::LayerPrediction& lp : p.prediction.layers) {
      layers += lp.mean_tokens > 0 ? lp.max_tokens / lp.mean_tokens : 1.0;
    }
    max_mean += layers / std::max<size_t>(1, p.prediction.layers.size());
    placement::Plan on_next = p;
    cost.Evaluate(&on_next, loads[iteration % kLoads]);
    next_moe += on_next.prediction.moe_seconds;
    previous = std::move(p);
    state.ResumeTiming();
  }
  state.counters["predicted_moe_s"] = planned > 0 ? moe / planned : 0;
  state.counters["next_moe_s"] = planned > 0 ? next_moe / planned : 0;
  state.counters["max_mean"] = planned > 0 ? max_mean / planned : 0;
}

// One layer's calibration (the workers' defaults: swaps within the plan's memory) per call,
// cycling over the layers of kPairs (plan, next iteration's loads) pairs; `drift` rotates the
// Zipf(1.0) ranking (0.5: one rank every second iteration, so half the pairs see a new hot
// expert). Counters: mean max/mean device tokens of the layers as planned and as calibrated on
// the actual loads, the share of layers calibration changed, and evaluations per layer.
void BM_Calibrate(benchmark::State& state, bool deepseek, double drift) {
  Fixture f = Make(deepseek);
  auto policy = *placement::MakePolicy("hecate");
  placement::SkewOptions opt;
  opt.zipf_s = 1.0;
  opt.drift_per_iteration = drift;
  constexpr int kPairs = 4;
  std::vector<placement::Plan> plans;
  std::vector<ModelLoad> actual;
  placement::Plan previous;
  for (int i = 0; i < kPairs; ++i) {
    const ModelLoad now = placement::SkewedLoad(f.cluster, f.model, opt, static_cast<uint64_t>(i));
    placement::PlanRequest r{&f.cluster, &f.model, &now};
    if (i > 0) r.previous = &previous;
    r.iteration = static_cast<uint64_t>(i);
    previous = policy->Compute(r);
    plans.push_back(previous);
    actual.push_back(placement::SkewedLoad(f.cluster, f.model, opt, static_cast<uint64_t>(i) + 1));
  }
  const placement::CostModel cost(f.cluster, f.model);
  const int layers = f.model.num_layers();
  const std::vector<int> none(f.cluster.num_devices(), 0);
  const placement::CalibrationOptions options;
  // Quality, untimed: every layer of every pair once.
  double before = 0, after = 0, changed = 0, evaluations = 0;
  placement::Dispatcher dispatcher(f.cluster);
  auto max_mean = [&](int l, const placement::LayerPlan& layer, const placement::LoadMatrix& load) {
    const placement::LayerPrediction p =
        cost.EvaluateLayer(l, layer, load, placement::DispatchRule::kLoadAware,
                           placement::ReplicaSemantics::kEphemeral, &dispatcher);
    return p.mean_tokens > 0 ? p.max_tokens / p.mean_tokens : 1.0;
  };
  for (int p = 0; p < kPairs; ++p) {
    for (int l = 0; l < layers; ++l) {
      const placement::CalibrationResult r = placement::Calibrate(
          cost, l, plans[p].layers[l], actual[p][l], none, plans[p].dispatch_rule, options);
      before += max_mean(l, plans[p].layers[l], actual[p][l]);
      after += max_mean(l, r.layer, actual[p][l]);
      changed += r.accepted;
      evaluations += static_cast<double>(r.evaluations);
    }
  }
  int64_t k = 0;
  for (auto _ : state) {
    const int p = static_cast<int>(k / layers % kPairs), l = static_cast<int>(k % layers);
    ++k;
    placement::CalibrationResult r = placement::Calibrate(cost, l, plans[p].layers[l], actual[p][l],
                                                          none, plans[p].dispatch_rule, options);
    benchmark::DoNotOptimize(r.layer.replicas.data());
  }
  const double n = static_cast<double>(kPairs) * layers;
  state.counters["planned_max_mean"] = before / n;
  state.counters["calibrated_max_mean"] = after / n;
  state.counters["changed_share"] = changed / n;
  state.counters["evaluations"] = evaluations / n;
}

void BM_Sharding(benchmark::State& state, bool deepseek) {
  Fixture f = Make(deepseek);
  const auto loads = placement::ExpertLoads(f.load);
  std::vector<int> t;
  for (int l = 0; l < f.model.num_layers(); ++l) {
    t.push_back(placement::OverlapDegree(f.cluster, f.model, l, f.model.attention_forward_seconds));
  }
  const placement::Owners current = placement::EvenSharding(f.cluster, f.model);
  for (auto _ : state) {
    placement::ShardingResult r =
        placement::HeterogeneousSharding(f.cluster, f.model, loads, t, &current);
    benchmark::DoNotOptimize(r.migration_bytes);
  }
}

BENCHMARK_CAPTURE(BM_PlanSteady, paper_hecate, false, "hecate", 0.02, -1.0)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanSteady, paper_hecate_no_balance, false, "hecate", 0.02, 0.0)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanSteady, paper_hecate_every_layer, false, "hecate", 0.0, -1.0)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanSteady, paper_hecate_every_layer_no_balance, false, "hecate", 0.0, 0.0)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanCold, paper_hecate, false, "hecate")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanCold, paper_hecate_paper, false, "hecate-paper")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanSteady, deepseek_hecate, true, "hecate", 0.02, -1.0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanSteady, deepseek_hecate_no_balance, true, "hecate", 0.02, 0.0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanSteady, deepseek_hecate_every_layer, true, "hecate", 0.0, -1.0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanSteady, deepseek_hecate_every_layer_no_balance, true, "hecate", 0.0, 0.0)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanCold, deepseek_hecate, true, "hecate")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanCold, deepseek_hecate_paper, true, "hecate-paper")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Calibrate, paper_drift, false, 0.5)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Calibrate, paper_steady, false, 0.0)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Calibrate, deepseek_drift, true, 0.5)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Sharding, paper, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Sharding, deepseek, true)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hecate::bench
