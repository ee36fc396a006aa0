#include "sim/simulator.h"

#include <cstdlib>

#include <gtest/gtest.h>

#include "placement/synthetic.h"
#include "sim/configs.h"

namespace hecate::sim {
namespace {

namespace pl = placement;

TEST(SimulatorTest, HandComputedEpIteration) {
  // 1 node x 2 devices, 1 TFLOP/s, 1 GB/s links, no latency; one layer of 2 experts of 1 MFLOP
  // per token, 1000-byte tokens, 1 ms attention. Every device sends 100 tokens to expert 0
  // (device 0) and nothing to expert 1.
  pl::Cluster c = pl::Cluster::Uniform(1, 2, int64_t{1} << 30, 1e12, 1e9, 1e9);
  pl::ModelSpec m;
  m.top_k = 1;
  m.token_bytes = 1000;
  m.tokens_per_device = 100;
  m.attention_forward_seconds = 1e-3;
  m.layers.push_back(pl::LayerSpec{2, 1'000'000, 6'000'000, 1e6});
  auto loads = [](int) {
    pl::LoadMatrix x(2, 2);
    x.at(0, 0) = 100;
    x.at(1, 0) = 100;
    return pl::ModelLoad{x};
  };
  SimOptions o;
  o.policy = "ep";
  o.warmup = 0;
  absl::StatusOr<SimResult> r = Simulate(c, m, loads, 3, o);
  ASSERT_TRUE(r.ok()) << r.status();
  // attention: 3 x 1 ms; expert: 200 tokens x 1e6 / 1e12 x 3 = 0.6 ms;
  // All-to-All: device 1 sends 100 x 1000 B = 1e5 B at 1e9 B/s = 1e-4 s, x4.
  EXPECT_DOUBLE_EQ(r->mean.attention, 3e-3);
  EXPECT_DOUBLE_EQ(r->mean.expert, 6e-4);
  EXPECT_DOUBLE_EQ(r->mean.all_to_all, 4e-4);
  EXPECT_DOUBLE_EQ(r->mean.exposed_sparse, 0);
  EXPECT_DOUBLE_EQ(r->mean.migration, 0);
  EXPECT_DOUBLE_EQ(r->balancedness, 0.5);
  EXPECT_TRUE(r->tokens_conserved);
  // Exposed sparse time and migration: FlexMoE copies expert 0 (7 MB of params + optimizer
  // state at 1 GB/s = 7 ms migration) and then AllReduces its gradient: 2 x 1/2 x 1 MB = 1 MB at
  // 1 GB/s = 1 ms, minus 2 ms of backward attention = nothing exposed.
  o.policy = "flexmoe";
  r = Simulate(c, m, loads, 3, o);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(
      r->per_iteration[1].migration + r->per_iteration[0].migration + r->per_iteration[2].migration,
      7e-3, 1e-9);
  EXPECT_DOUBLE_EQ(r->mean.exposed_sparse, 0);
  EXPECT_DOUBLE_EQ(r->per_iteration[2].expert, 3e-4);
}

// Invariants for every policy on generated loads: tokens conserved, components non-negative and
// summing to the total, memory within budget (when the owned state alone fits), deterministic.
TEST(SimulatorTest, InvariantsForEveryPolicy) {
  pl::Cluster c = pl::Cluster::Uniform(2, 4, int64_t{2} << 30, 1e14, 1e11, 1.25e10, 5e-6);
  pl::ModelSpec m = pl::UniformModel("m", 3, 16, 2, 256, 512, 2, 2048, 3e-4);
  pl::SkewOptions opt;
  opt.zipf_s = 1.2;
  opt.drift_per_iteration = 0.3;
  auto loads = [&](int i) { return pl::SkewedLoad(c, m, opt, i); };
  for (const std::string& policy : pl::PolicyNames()) {
    SimOptions o;
    o.policy = policy;
    o.reshard_period = 7;
    o.planner.attention_forward_seconds = m.attention_forward_seconds;
    absl::StatusOr<SimResult> r = Simulate(c, m, loads, 20, o);
    ASSERT_TRUE(r.ok()) << policy << ": " << r.status();
    EXPECT_TRUE(r->tokens_conserved) << policy;
    for (const IterationTime& t : r->per_iteration) {
      for (double v :
           {t.attention, t.all_to_all, t.expert, t.exposed_sparse, t.migration, t.other}) {
        EXPECT_GE(v, 0) << policy;
      }
      EXPECT_NEAR(t.total(),
                  t.attention + t.all_to_all + t.expert + t.exposed_sparse + t.migration + t.other,
                  1e-15);
    }
    for (int d = 0; d < c.num_devices(); ++d) {
      EXPECT_LE(r->peak_memory_bytes[d], c.memory_bytes(d)) << policy << " device " << d;
    }
    absl::StatusOr<SimResult> again = Simulate(c, m, loads, 20, o);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->mean.total(), r->mean.total()) << policy << " is not deterministic";
  }
  SimOptions bad;
  bad.policy = "nope";
  EXPECT_EQ(Simulate(c, m, loads, 2, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// Calibration as the workers run it: on a drifting hot set it brings `hecate`'s layers closer to
// balance without making the simulated iteration slower (it is accepted only when the layer's
// predicted time, late gather included, is lower); policies that do not calibrate are
// unaffected by the option.
TEST(SimulatorTest, CalibrationBalancesHecateOnADriftingHotSet) {
  pl::Cluster c = pl::Cluster::Uniform(2, 4, int64_t{2} << 30, 1e12, 1e11, 1.25e10, 5e-6);
  pl::ModelSpec m = pl::UniformModel("m", 3, 16, 2, 256, 512, 2, 2048, 3e-4);
  pl::SkewOptions opt;
  opt.zipf_s = 1.0;
  opt.drift_per_iteration = 0.5;
  auto loads = [&](int i) { return pl::SkewedLoad(c, m, opt, i); };
  auto run = [&](const std::string& policy, bool calibration) {
    SimOptions o;
    o.policy = policy;
    o.planner.attention_forward_seconds = m.attention_forward_seconds;
    o.planner.extra_slots = 1;  // the plans cannot cover every rotation with copies
    o.calibration.enabled = calibration;
    absl::StatusOr<SimResult> r = Simulate(c, m, loads, 20, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  };
  const SimResult on = run("hecate", true), off = run("hecate", false);
  EXPECT_GT(on.calibrated_layer_share, 0);
  EXPECT_EQ(off.calibrated_layer_share, 0);
  EXPECT_LT(on.max_over_mean, off.max_over_mean - 0.05)
      << on.max_over_mean << " vs " << off.max_over_mean;
  EXPECT_LE(on.mean.total(), off.mean.total() * (1 + 1e-9));
  EXPECT_TRUE(on.tokens_conserved);
  const SimResult flex_on = run("flexmoe", true), flex_off = run("flexmoe", false);
  EXPECT_EQ(flex_on.calibrated_layer_share, 0);
  EXPECT_EQ(flex_on.mean.total(), flex_off.mean.total());
}

// 2 nodes x 4 devices, 2 layers x 16 experts, Zipf loads of skew `zipf`: the replay tests' setup.
struct ReplayCase {
  explicit ReplayCase(double zipf) { opt.zipf_s = zipf; }
  pl::Cluster c = pl::Cluster::Uniform(2, 4, int64_t{2} << 30, 1e14, 1e10, 1e9, 5e-6);
  pl::ModelSpec m = pl::UniformModel("m", 2, 16, 2, 256, 512, 2, 2048, 3e-4);
  pl::SkewOptions opt;
  LoadSource loads() const {
    return [this](int i) { return pl::SkewedLoad(c, m, opt, i); };
  }
};

// Replaying a recorded run: decisions come from the planning cluster, times from the simulated one.
TEST(SimulatorTest, PlanningClusterDecidesSimulatedClusterTimes) {
  const ReplayCase rc(1.2);
  const pl::Cluster& c = rc.c;
  const pl::ModelSpec& m = rc.m;
  const LoadSource loads = rc.loads();
  SimOptions o;
  absl::StatusOr<SimResult> plain = Simulate(c, m, loads, 12, o);
  ASSERT_TRUE(plain.ok()) << plain.status();
  // Planning on the simulated cluster itself changes nothing.
  o.planning_cluster = &c;
  absl::StatusOr<SimResult> same = Simulate(c, m, loads, 12, o);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->mean.total(), plain->mean.total());
  EXPECT_EQ(same->sparse_bytes_per_iter, plain->sparse_bytes_per_iter);
  // Workers that believed in 1000x faster links copied more; those copies are timed on the slow
  // links they actually crossed.
  pl::Cluster fast = pl::Cluster::Uniform(2, 4, int64_t{2} << 30, 1e14, 1e13, 1e12, 5e-6);
  o.planning_cluster = &fast;
  absl::StatusOr<SimResult> believed_fast = Simulate(c, m, loads, 12, o);
  ASSERT_TRUE(believed_fast.ok());
  EXPECT_GT(believed_fast->sparse_bytes_per_iter, plain->sparse_bytes_per_iter);
  absl::StatusOr<SimResult> on_fast = Simulate(fast, m, loads, 12, SimOptions{});
  ASSERT_TRUE(on_fast.ok());
  EXPECT_EQ(on_fast->sparse_bytes_per_iter, believed_fast->sparse_bytes_per_iter);
  EXPECT_GT(believed_fast->mean.exposed_sparse, on_fast->mean.exposed_sparse);
  // Nothing hides the collectives on a cluster whose transfers take compute's time.
  pl::ClusterSpec serial_spec = c.spec();
  serial_spec.transfers_overlap_compute = false;
  const pl::Cluster serial = *pl::Cluster::Create(serial_spec);
  absl::StatusOr<SimResult> no_overlap = Simulate(serial, m, loads, 12, o);
  ASSERT_TRUE(no_overlap.ok());
  EXPECT_EQ(no_overlap->sparse_bytes_per_iter, believed_fast->sparse_bytes_per_iter);
  EXPECT_GT(no_overlap->mean.exposed_sparse, believed_fast->mean.exposed_sparse);
  // A planning cluster of another size is an error.
  pl::Cluster small = pl::Cluster::Uniform(1, 4, int64_t{2} << 30, 1e14, 1e10, 1e9, 5e-6);
  o.planning_cluster = &small;
  EXPECT_EQ(Simulate(c, m, loads, 2, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SimulatorTest, PlanningModelDecidesWithItsCopyCost) {
  const ReplayCase rc(0.6);
  const pl::Cluster& c = rc.c;
  const pl::ModelSpec& m = rc.m;
  const LoadSource loads = rc.loads();
  SimOptions o;
  absl::StatusOr<SimResult> plain = Simulate(c, m, loads, 8, o);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_GT(plain->sparse_bytes_per_iter, 0);
  // Workers that believed every copy costs its holder a second place none, and the simulated
  // model times those copy-free plans (slower than the plans with copies).
  pl::ModelSpec costly = m;
  for (pl::LayerSpec& l : costly.layers) l.copy_seconds = 1.0;
  o.planning_model = &costly;
  absl::StatusOr<SimResult> believed = Simulate(c, m, loads, 8, o);
  ASSERT_TRUE(believed.ok()) << believed.status();
  EXPECT_EQ(believed->sparse_bytes_per_iter, 0);
  EXPECT_GT(believed->mean.total(), plain->mean.total());
  // Timed with that cost as well, the same plans take no longer (they hold no copy).
  absl::StatusOr<SimResult> timed = Simulate(c, costly, loads, 8, o);
  ASSERT_TRUE(timed.ok());
  EXPECT_EQ(timed->mean.total(), believed->mean.total());
  // A planning model of another shape is an error.
  pl::ModelSpec other = pl::UniformModel("m", 3, 16, 2, 256, 512, 2, 2048, 3e-4);
  o.planning_model = &other;
  EXPECT_EQ(Simulate(c, m, loads, 2, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SimulatorTest, FitRecoversGeneratorParameters) {
  pl::Cluster c = pl::Cluster::Uniform(1, 8, int64_t{1} << 30, 1e12, 1e11, 1e10);
  pl::ModelSpec m = pl::UniformModel("m", 2, 32, 2, 64, 128, 2, 4096, 1e-3);
  pl::SkewOptions opt;
  opt.zipf_s = 1.2;
  opt.source_noise = 0.2;
  std::vector<pl::ModelLoad> loads;
  for (int i = 0; i < 20; ++i) loads.push_back(pl::SkewedLoad(c, m, opt, i));
  GeneratorFit fit = Fit(loads);
  EXPECT_NEAR(fit.zipf_s, 1.2, 0.1);
  EXPECT_GT(fit.r2, 0.95);
  EXPECT_NEAR(fit.drift_per_iteration, 0.0, 1e-9);
  EXPECT_NEAR(fit.source_noise, 0.2, 0.08);
}

TEST(SimulatorTest, PaperConfigsLoad) {
  const std::string dir = std::string(std::getenv("TEST_SRCDIR")) + "/hecate/sim/configs/";
  absl::StatusOr<pl::Cluster> a = LoadCluster(dir + "cluster_a_32.json");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->num_devices(), 32);
  EXPECT_EQ(a->num_nodes(), 4);
  absl::StatusOr<pl::ModelSpec> s = LoadModel(dir + "gpt_moe_s_64.json");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->layers.size(), 12u);
  EXPECT_EQ(s->layers[0].num_experts, 64);
  // 4096 tokens x (8 x 768^2 + 4 x 2048 x 768) FLOP / 62.5 TFLOP/s = 0.72 ms.
  EXPECT_NEAR(AttentionSeconds(*s, *a), 4096.0 * (8 * 768.0 * 768 + 4 * 2048.0 * 768) / 62.5e12,
              1e-12);
  EXPECT_EQ(LoadCluster(dir + "missing.json").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace hecate::sim
