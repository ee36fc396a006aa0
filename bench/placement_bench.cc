// Planning speed of the placement core (one core, Google Benchmark).
//
//   bazel run //bench:placement_bench
//
// Targets (issue 3): per-iteration planning (materialization + dispatch + prediction for all
// layers) <= 1 ms at paper scale and <= 10 ms at DeepSeek-V3-like scale; sharding (Alg. 2)
// <= 100 ms at DeepSeek-V3-like scale.
#include <benchmark/benchmark.h>

#include "bench/scales.h"
#include "placement/policy.h"
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

void BM_PlanIteration(benchmark::State& state, bool deepseek, const char* policy_name) {
  Fixture f = Make(deepseek);
  auto policy = *placement::MakePolicy(policy_name);
  placement::PlanRequest r{&f.cluster, &f.model, &f.load};
  placement::Plan previous = policy->Compute(r);
  r.previous = &previous;
  for (auto _ : state) {
    placement::Plan p = policy->Compute(r);
    benchmark::DoNotOptimize(p.prediction.moe_seconds);
  }
  state.counters["balancedness"] = previous.prediction.balancedness;
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

BENCHMARK_CAPTURE(BM_PlanIteration, paper_hecate, false, "hecate")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanIteration, paper_hecate_paper, false, "hecate-paper")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PlanIteration, deepseek_hecate, true, "hecate")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PlanIteration, deepseek_hecate_paper, true, "hecate-paper")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Sharding, paper, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Sharding, deepseek, true)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hecate::bench
