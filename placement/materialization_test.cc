#include "placement/calibration.h"
#include "placement/greedy.h"
#include "placement/paper_materialization.h"
#include "placement/refine.h"

#include "placement/synthetic.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <cstdio>

namespace hecate::placement {
namespace {

using ::testing::ElementsAre;

LayerPlan OwnersOnly(std::vector<DeviceId> owners) {
  LayerPlan l;
  l.owner = owners;
  for (DeviceId o : owners) l.replicas.push_back({o});
  return l;
}

TEST(MaterializePaperTest, CaseOneReplicatesTopTEverywhere) {
  Cluster c = Cluster::Uniform(2, 2, 1 << 30, 1e12, 100e9, 10e9);
  LayerPlan p = MaterializePaper(c, OwnersOnly({0, 1, 2, 3}), {100, 20, 20, 20}, /*t=*/1, /*m=*/2);
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(p.replicas[1], ElementsAre(1));
  EXPECT_THAT(p.replicas[3], ElementsAre(3));
}

TEST(MaterializePaperTest, CaseTwoWaterFillsSlotsAndSpreadsOverNodes) {
  Cluster c = Cluster::Uniform(2, 2, 1 << 30, 1e12, 100e9, 10e9);
  // t = 2 > m = 1: 4 slots. Water-filling: e0 gets 3 (capped at |D| = 4 copies), e1 gets 1.
  // e0's first copy goes to the node without one (node 1: devices 2, 3 tie -> 2), then the
  // least-loaded device (1), then 3. e1's copy: only device 0 still has a free slot.
  LayerPlan p = MaterializePaper(c, OwnersOnly({0, 1, 2, 3}), {100, 20, 20, 20}, 2, 1);
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(p.replicas[1], ElementsAre(0, 1));
  EXPECT_THAT(p.replicas[2], ElementsAre(2));
}

TEST(MaterializePaperTest, NoBudgetNoCopies) {
  Cluster c = Cluster::Uniform(1, 2, 1 << 30, 1e12, 100e9, 10e9);
  LayerPlan p = MaterializePaper(c, OwnersOnly({0, 1}), {100, 0}, 0, 5);
  EXPECT_THAT(p.replicas[0], ElementsAre(0));
  p = MaterializePaper(c, OwnersOnly({0, 1}), {100, 0}, 2, 0);
  EXPECT_THAT(p.replicas[0], ElementsAre(0));
}

// One layer of 4 experts, 1 MB each; `flops_per_token` per expert; `attention_s` to hide behind.
ModelSpec GreedyModel(double flops_per_token, double attention_s) {
  ModelSpec m;
  m.top_k = 1;
  m.attention_forward_seconds = attention_s;
  m.layers.push_back(LayerSpec{4, 1'000'000, 6'000'000, flops_per_token});
  return m;
}

// Global counts spread evenly over 4 source devices.
LoadMatrix Spread(std::vector<int64_t> totals) { return SpreadOverSources(totals, 4); }

TEST(MaterializeGreedyTest, ReplicatesUntilBalanced) {
  Cluster c = Cluster::Uniform(1, 4, 1 << 30, 1e12, 100e9, 100e9);
  ModelSpec m = GreedyModel(1e6, 1e-3);
  CostModel cost(c, m);
  GreedyBudget budget;
  budget.max_copies = {1, 1, 1, 1};
  int added = 0;
  LayerPlan p =
      MaterializeGreedy(cost, 0, OwnersOnly({0, 1, 2, 3}), Spread({400, 0, 0, 0}), budget, &added);
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(added, 3);
  // Already balanced: nothing to do.
  p = MaterializeGreedy(cost, 0, OwnersOnly({0, 1, 2, 3}), Spread({100, 100, 100, 100}), budget,
                        &added);
  EXPECT_EQ(added, 0);
}

TEST(MaterializeGreedyTest, CopiesPayTheirFixedCost) {
  Cluster c = Cluster::Uniform(1, 4, 1 << 30, 1e12, 100e9, 100e9);
  ModelSpec m = GreedyModel(1e6, 1e-3);
  GreedyBudget budget;
  budget.max_copies = {1, 1, 1, 1};
  int added = 0;
  // Mild skew: device 0 computes 200 tokens (6e-4 s), the others 60. A free copy saves up to
  // 1.2e-4 s; one costing its holder 1 ms cannot pay.
  const LoadMatrix mild = Spread({200, 60, 60, 60});
  MaterializeGreedy(CostModel(c, m), 0, OwnersOnly({0, 1, 2, 3}), mild, budget, &added);
  EXPECT_GE(added, 1);
  m.layers[0].copy_seconds = 1e-3;
  LayerPlan p =
      MaterializeGreedy(CostModel(c, m), 0, OwnersOnly({0, 1, 2, 3}), mild, budget, &added);
  EXPECT_EQ(added, 0);
  EXPECT_THAT(p.replicas[0], ElementsAre(0));
  // Under heavy skew (12 ms on device 0) the copies still pay for themselves.
  p = MaterializeGreedy(CostModel(c, m), 0, OwnersOnly({0, 1, 2, 3}), Spread({4000, 0, 0, 0}),
                        budget, &added);
  EXPECT_EQ(added, 3);
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
}

TEST(MaterializeGreedyTest, RespectsMemory) {
  Cluster c = Cluster::Uniform(1, 4, 1 << 30, 1e12, 100e9, 100e9);
  ModelSpec m = GreedyModel(1e6, 1e-3);
  CostModel cost(c, m);
  GreedyBudget budget;
  budget.max_copies = {0, 1, 0, 0};
  LayerPlan p =
      MaterializeGreedy(cost, 0, OwnersOnly({0, 1, 2, 3}), Spread({400, 0, 0, 0}), budget);
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1));  // only device 1 has memory
}

TEST(MaterializeGreedyTest, PaysForExposedTrafficOnlyWhenComputeSavesMore) {
  // 2 nodes x 2 devices; 1 MB copies take 10 us inside a node and 1 ms across; 0.5 ms of
  // attention hides the intra-node copy but not the cross-node ones.
  Cluster c = Cluster::Uniform(2, 2, 1 << 30, 1e12, 100e9, 1e9);
  GreedyBudget budget;
  budget.max_copies = {1, 1, 1, 1};
  {
    // 400 tokens x 1 MFLOP = 0.4 ms forward on one device: a cross-node copy (>= 0.5 ms exposed)
    // costs more than it saves.
    ModelSpec m = GreedyModel(1e6, 5e-4);
    CostModel cost(c, m);
    LayerPlan p =
        MaterializeGreedy(cost, 0, OwnersOnly({0, 1, 2, 3}), Spread({400, 0, 0, 0}), budget);
    EXPECT_THAT(p.replicas[0], ElementsAre(0, 1));
  }
  {
    // 100x the FLOPs: spreading over the other node pays for the exposed transfer.
    ModelSpec m = GreedyModel(1e8, 5e-4);
    CostModel cost(c, m);
    LayerPlan p =
        MaterializeGreedy(cost, 0, OwnersOnly({0, 1, 2, 3}), Spread({400, 0, 0, 0}), budget);
    EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
  }
}

// Last iteration's plan spread expert 0 over every device; now expert 1 is the hot one.
LayerPlan StaleCopies() {
  LayerPlan base = OwnersOnly({0, 1, 2, 3});
  base.replicas[0] = {0, 1, 2, 3};
  return base;
}

// One node of 4 devices, 1 MB experts, one free slot each; the last plan's copies as the start.
class ReviseTest : public ::testing::Test {
 protected:
  ReviseTest() { budget_.max_copies = {1, 1, 1, 1}; }
  LayerPlan Run(int* added = nullptr) {
    return MaterializeGreedy(cost_, 0, StaleCopies(), Spread({0, 400, 0, 0}), budget_, added);
  }
  Cluster c_ = Cluster::Uniform(1, 4, 1 << 30, 1e12, 100e9, 100e9);
  ModelSpec m_ = GreedyModel(1e6, 1e-3);
  CostModel cost_{c_, m_};
  GreedyBudget budget_;
};

TEST_F(ReviseTest, WithoutReviseCopiesAreOnlyAddedTo) {
  LayerPlan p = Run();
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));  // kept
  EXPECT_THAT(p.replicas[1], ElementsAre(0, 1));        // device 0's slot is the only one left
}

TEST_F(ReviseTest, PrunesCopiesWorthLessThanKeepGain) {
  budget_.revise = true;
  budget_.max_swaps = 0;
  // keep_gain 0: the idle copies cost nothing (hidden intra-node gather), so they stay.
  LayerPlan p = Run();
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
  // keep_gain 1%: they are worth less than that, are dropped, and the hot expert regrows.
  budget_.keep_gain = 1e-2;
  int added = 0;
  p = Run(&added);
  EXPECT_THAT(p.replicas[0], ElementsAre(0));
  EXPECT_THAT(p.replicas[1], ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(added, 3);
}

TEST_F(ReviseTest, SwapsIdleCopiesForUsefulOnes) {
  budget_.revise = true;
  budget_.keep_gain = 0;
  budget_.max_swaps = 8;
  // Device 0's free slot goes to expert 1 first; then idle copies of expert 0 give way on
  // devices 2 and 3 (the one on device 1 would free a slot expert 1's owner cannot use).
  LayerPlan p = Run();
  EXPECT_THAT(p.replicas[1], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1));
  // One swap allowed: one idle copy gives way.
  budget_.max_swaps = 1;
  p = Run();
  EXPECT_THAT(p.replicas[1], ElementsAre(0, 1, 2));
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 3));
}

TEST(BalancedSeedTest, CopiesWhileLoadPerCopyExceedsTheMeanOnTheBusiestNodes) {
  // One node of 4: expert 0 takes all 400 tokens (mean 100 per device): 4 copies.
  Cluster one = Cluster::Uniform(1, 4, 1 << 30, 1e12, 100e9, 100e9);
  LoadMatrix load = Spread({400, 0, 0, 0});
  LayerPlan p =
      BalancedSeed(one, OwnersOnly({0, 1, 2, 3}), LoadAggregate::Of(load, one), {1, 1, 1, 1});
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(p.replicas[1], ElementsAre(1));
  // Two nodes of 2; expert 0 (owned on node 0) gets its tokens from node 1's sources only: its
  // first copy goes to node 1, on a device with a free slot; then no slot is left.
  Cluster two = Cluster::Uniform(2, 2, 1 << 30, 1e12, 100e9, 10e9);
  LoadMatrix remote(4, 4);
  remote.at(2, 0) = 200;
  remote.at(3, 0) = 200;
  p = BalancedSeed(two, OwnersOnly({0, 1, 2, 3}), LoadAggregate::Of(remote, two), {1, 0, 0, 1});
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 3));
  // Balanced loads: nothing to do.
  p = BalancedSeed(one, OwnersOnly({0, 1, 2, 3}),
                   LoadAggregate::Of(Spread({100, 100, 100, 100}), one), {1, 1, 1, 1});
  for (ExpertId e = 0; e < 4; ++e) EXPECT_EQ(p.replicas[e].size(), 1u);
}

ModelSpec CalibModel(double flops_per_token) {
  ModelSpec m;
  m.top_k = 1;
  m.token_bytes = 0;  // isolate compute vs gather
  m.attention_forward_seconds = 0;
  m.layers.push_back(LayerSpec{2, 1'000'000, 6'000'000, flops_per_token});
  return m;
}

TEST(CalibrationTest, AcceptsWhenComputeSavingsBeatTheExtraGather) {
  Cluster c = Cluster::Uniform(1, 2, 1 << 30, 1e9, 1e11, 1e11);
  ModelSpec m = CalibModel(1e6);  // 1 ms per token per device: compute dominates
  CostModel cost(c, m);
  LayerPlan current = OwnersOnly({0, 1});
  LoadMatrix actual(2, 2);
  actual.at(0, 0) = 100;
  actual.at(1, 0) = 100;
  CalibrationResult r = Calibrate(cost, 0, current, actual, {1, 1}, DispatchRule::kLoadAware);
  EXPECT_TRUE(r.accepted);
  EXPECT_THAT(r.layer.replicas[0], ElementsAre(0, 1));
  EXPECT_LT(r.after_seconds, r.before_seconds);
  EXPECT_GT(r.extra_spag_seconds, 0);
}

TEST(CalibrationTest, RejectsWhenTheExtraGatherCostsMore) {
  Cluster c = Cluster::Uniform(1, 2, 1 << 30, 1e12, 1e6, 1e6);  // 1 MB/s links: 1 s per copy
  ModelSpec m = CalibModel(1e3);
  CostModel cost(c, m);
  LayerPlan current = OwnersOnly({0, 1});
  LoadMatrix actual(2, 2);
  actual.at(0, 0) = 100;
  actual.at(1, 0) = 100;
  CalibrationResult r = Calibrate(cost, 0, current, actual, {1, 1}, DispatchRule::kLoadAware);
  EXPECT_FALSE(r.accepted);
  EXPECT_THAT(r.layer.replicas[0], ElementsAre(0));
}

TEST(CalibrationTest, NoMemoryLeftNoChange) {
  Cluster c = Cluster::Uniform(1, 2, 1 << 30, 1e9, 1e11, 1e11);
  ModelSpec m = CalibModel(1e6);
  CostModel cost(c, m);
  LoadMatrix actual(2, 2);
  actual.at(0, 0) = 100;
  CalibrationResult r =
      Calibrate(cost, 0, OwnersOnly({0, 1}), actual, {0, 0}, DispatchRule::kLoadAware);
  EXPECT_FALSE(r.accepted);
  EXPECT_EQ(r.copies_added, 0);
}

// One node of 4 devices owning experts 0..3; device 0 holds the plan's one copy (of expert 2, hot
// when the plan was made). This iteration expert 3 takes 300 tokens, the others 100 (mean 150):
// devices 100 / 100 / 100 / 300 (expert 2's tokens stay with its owner, the lighter holder).
// With no free memory, the swap stage gives up device 0's copy of expert 2 (50 tokens per holder,
// the least useful) for one of expert 3 (the busiest device's heaviest; devices 0 and 1 tie as
// receivers, lower id first): 300 tokens level over devices 0 and 3 at 200 each -> 100 / 100 /
// 100 / 200 + 100 on device 0 = 200 / 100 / 100 / 200. Then no receiver has a slot: done.
struct SwapCase {
  Cluster c = Cluster::Uniform(1, 4, 1 << 30, 1e9, 1e11, 1e11);
  ModelSpec m;
  LoadMatrix actual{4, 4};
  LayerPlan plan = OwnersOnly({0, 1, 2, 3});
  SwapCase() {
    m.top_k = 1;
    m.token_bytes = 0;
    m.attention_forward_seconds = 0;
    m.layers.push_back(LayerSpec{4, 1'000'000, 6'000'000, 1e6});  // compute-bound
    plan.replicas[2] = {0, 2};
    for (ExpertId e = 0; e < 4; ++e) actual.at(e, e) = e == 3 ? 300 : 100;
  }
};

TEST(CalibrationTest, SwapsTheLeastUsefulCopyForTheBusiestDevicesExpert) {
  SwapCase t;
  const CostModel cost(t.c, t.m);
  CalibrationResult r =
      Calibrate(cost, 0, t.plan, t.actual, {0, 0, 0, 0}, DispatchRule::kLoadAware);
  ASSERT_TRUE(r.accepted);
  EXPECT_THAT(r.layer.replicas[3], ElementsAre(0, 3));
  EXPECT_THAT(r.layer.replicas[2], ElementsAre(2));
  EXPECT_THAT(r.layer.replicas[0], ElementsAre(0));
  EXPECT_THAT(r.layer.replicas[1], ElementsAre(1));
  EXPECT_EQ(r.copies_added, 1);
  EXPECT_EQ(r.copies_dropped, 1);
  EXPECT_GT(r.extra_spag_seconds, 0);
  EXPECT_LT(r.after_seconds, r.before_seconds);
  Dispatcher dispatcher(t.c);
  const LayerPrediction p = cost.EvaluateLayer(0, r.layer, t.actual, DispatchRule::kLoadAware,
                                               ReplicaSemantics::kEphemeral, &dispatcher);
  EXPECT_THAT(p.device_tokens, ElementsAre(200, 100, 100, 200));
  EXPECT_DOUBLE_EQ(r.after_seconds, p.total_seconds + r.extra_spag_seconds);
}

TEST(CalibrationTest, NoSwapsWithoutTheirBudgetOrWhenTheGatherCostsMore) {
  SwapCase t;
  const CostModel cost(t.c, t.m);
  CalibrationOptions off;
  off.swap_cell_budget = 0;  // the paper's calibration: free memory only, and there is none
  const CalibrationResult none =
      Calibrate(cost, 0, t.plan, t.actual, {0, 0, 0, 0}, DispatchRule::kLoadAware, off);
  EXPECT_FALSE(none.accepted);
  EXPECT_EQ(none.evaluations, 0) << "nothing it could change: not even the layer is evaluated";
  EXPECT_EQ(none.layer.replicas, t.plan.replicas);
  // 1 MB/s links: the late gather (1 s) costs more than the 100 tokens it saves (0.3 s).
  const Cluster slow = Cluster::Uniform(1, 4, 1 << 30, 1e9, 1e6, 1e6);
  const CostModel slow_cost(slow, t.m);
  CalibrationResult r =
      Calibrate(slow_cost, 0, t.plan, t.actual, {0, 0, 0, 0}, DispatchRule::kLoadAware);
  EXPECT_FALSE(r.accepted);
  EXPECT_EQ(r.layer.replicas, t.plan.replicas);
  EXPECT_EQ(r.copies_added, 0);
}

// The paper's Cluster A (4 nodes x 8 V100, NVLink 300 GB/s, 100 Gb/s a node).
Cluster ClusterA() {
  return Cluster::Uniform(4, 8, int64_t{32} << 30, 62.5e12, 300e9, 12.5e9, 5e-6);
}

// GPT-MoE-S-shaped layers (64 experts, top-2, 4,096 tokens a device, 1.5 ms of attention), one
// per entry of `flops_per_token`.
ModelSpec ClusterALayers(const std::vector<double>& flops_per_token) {
  ModelSpec m;
  m.top_k = 2;
  m.token_bytes = 1536;
  m.tokens_per_device = 4096;
  m.attention_forward_seconds = 1.5e-3;
  for (double f : flops_per_token) m.layers.push_back(LayerSpec{64, 4'718'592, 9'437'184, f});
  return m;
}

// `p`'s owners are `start`'s, each device holds at most max_copies[d] extra copies, and every
// expert's holders are ascending, unique and include its owner.
void ExpectLayerInvariants(const LayerPlan& p, const LayerPlan& start,
                           const std::vector<int>& max_copies) {
  EXPECT_EQ(p.owner, start.owner);
  const std::vector<int> extra = p.ExtraCopies(static_cast<int>(max_copies.size()));
  for (size_t d = 0; d < max_copies.size(); ++d) {
    EXPECT_LE(extra[d], max_copies[d]) << "device " << d;
  }
  for (ExpertId e = 0; e < p.num_experts(); ++e) {
    const std::vector<DeviceId>& h = p.replicas[e];
    EXPECT_TRUE(std::is_sorted(h.begin(), h.end()));
    EXPECT_EQ(std::adjacent_find(h.begin(), h.end()), h.end());
    EXPECT_TRUE(std::binary_search(h.begin(), h.end(), p.owner[e]));
  }
}

// Zipf(s) totals over 64 experts with a random hot set, spread over 32 sources with +-10% noise
// (8,192 assignments a source before the noise).
LoadMatrix RandomZipfLoad(Rng& rng, double s) {
  std::vector<double> share(64);
  for (int r = 0; r < 64; ++r) share[r] = std::pow(r + 1.0, -s);
  for (int i = 63; i > 0; --i) std::swap(share[i], share[rng.Below(i + 1)]);
  LoadMatrix load(32, 64);
  for (DeviceId src = 0; src < 32; ++src) {
    for (ExpertId e = 0; e < 64; ++e) {
      load.at(src, e) = static_cast<int64_t>(8192 * share[e] * (0.9 + 0.2 * rng.Uniform()));
    }
  }
  return load;
}

// 64 experts owned two a device by 32 devices, no copies.
LayerPlan TwoExpertsPerDevice() {
  LayerPlan base;
  for (ExpertId e = 0; e < 64; ++e) {
    base.owner.push_back(e / 2);
    base.replicas.push_back({e / 2});
  }
  return base;
}

// The exact repair: on random skewed layers of the paper's Cluster A shape, starting from the
// greedy's plan, it never raises the layer's predicted time, never raises the busiest device's
// tokens, keeps every invariant (owners held, ascending unique holders, at most `max_copies` extra
// copies a device), makes at most `moves` moves, and with 0 moves changes nothing. Somewhere it
// must find a move (the greedy's even-split estimate misses what the water-filling dispatch sees).
TEST(RepairLayerTest, NeverSlowerAndKeepsInvariantsOverRandomLayers) {
  const Cluster c = ClusterA();
  const ModelSpec m = ClusterALayers({14'155'776});
  const CostModel cost(c, m);
  Rng rng(7);
  int repaired_layers = 0;
  for (int trial = 0; trial < 12; ++trial) {
    const LoadMatrix load = RandomZipfLoad(rng, 0.5 + 0.1 * trial);
    const LoadAggregate agg = LoadAggregate::Of(load, c);
    const LayerPlan base = TwoExpertsPerDevice();
    GreedyBudget budget;
    budget.max_copies.assign(32, 1);
    const LayerPlan greedy = MaterializeGreedy(cost, 0, base, load, budget, nullptr, &agg);
    Dispatcher dispatcher(c);
    auto eval = [&](const LayerPlan& p) {
      return cost.EvaluateLayer(0, p, load, DispatchRule::kLoadAware, ReplicaSemantics::kEphemeral,
                                &dispatcher, &agg);
    };
    LayerPlan none = greedy;
    EXPECT_EQ(
        RepairLayer(cost, 0, load, agg, DispatchRule::kLoadAware, budget.max_copies, 0, 8, &none),
        0);
    EXPECT_EQ(none.replicas, greedy.replicas);
    LayerPlan fixed = greedy;
    const int made =
        RepairLayer(cost, 0, load, agg, DispatchRule::kLoadAware, budget.max_copies, 3, 8, &fixed);
    EXPECT_LE(made, 3);
    const LayerPrediction before = eval(greedy), after = eval(fixed);
    EXPECT_LE(after.total_seconds, before.total_seconds) << "trial " << trial;
    EXPECT_LE(after.max_tokens, before.max_tokens) << "trial " << trial;
    if (made > 0) {
      ++repaired_layers;
      EXPECT_TRUE(after.total_seconds < before.total_seconds ||
                  after.max_tokens < before.max_tokens);
    } else {
      EXPECT_EQ(fixed.replicas, greedy.replicas);
    }
    ExpectLayerInvariants(fixed, greedy, budget.max_copies);
  }
  EXPECT_GT(repaired_layers, 0);
}

// One node of 4 devices, owners 0..3, one free slot each; every source sends 100 tokens to
// expert 0 and 20 to each other expert (400 / 80 / 80 / 80 in all; mean 160 a device).
struct BalanceCase {
  Cluster c = Cluster::Uniform(1, 4, 1 << 30, 1e12, 100e9, 10e9);
  ModelSpec m;
  LoadMatrix load = Spread({400, 80, 80, 80});
  LoadAggregate agg;
  std::vector<int> slots{1, 1, 1, 1};
  Dispatcher dispatcher{c};
  explicit BalanceCase(double flops_per_token, double attention_s)
      : m(GreedyModel(flops_per_token, attention_s)), agg(LoadAggregate::Of(load, c)) {}
  LayerPrediction Eval(const CostModel& cost, const LayerPlan& p) {
    return cost.EvaluateLayer(0, p, load, DispatchRule::kLoadAware, ReplicaSemantics::kEphemeral,
                              &dispatcher, &agg);
  }
};

// Owners only, devices hold 400 / 80 / 80 / 80 (max/mean 2.5). Copies of expert 0 cost little and
// save compute, so the pass copies it to devices 1, 2, 3 (least loaded first; all tie, lower id
// first): after two copies 560 tokens level over three holders at 186.7 (1.17 > 1.1), after the
// third all four hold 160 (1.0) and it stops.
TEST(BalanceLayerTest, CopiesTheHotExpertUntilTheTargetHolds) {
  BalanceCase t(2e8, 1e-3);
  const CostModel cost(t.c, t.m);
  LayerPlan p = OwnersOnly({0, 1, 2, 3});
  EXPECT_DOUBLE_EQ(t.Eval(cost, p).max_tokens, 400);
  const int made = BalanceLayer(cost, 0, t.load, t.agg, DispatchRule::kLoadAware, t.slots, 1.1,
                                /*budget=*/1e9, /*moves=*/8, /*candidates=*/8, 0, &p);
  EXPECT_EQ(made, 3);
  EXPECT_THAT(p.replicas[0], ElementsAre(0, 1, 2, 3));
  for (ExpertId e : {1, 2, 3}) EXPECT_THAT(p.replicas[e], ElementsAre(e));
  const LayerPrediction after = t.Eval(cost, p);
  for (DeviceId d = 0; d < 4; ++d) EXPECT_NEAR(after.device_tokens[d], 160, 1e-9) << d;
  // Already within the target, or no slot left: nothing to do.
  EXPECT_EQ(BalanceLayer(cost, 0, t.load, t.agg, DispatchRule::kLoadAware, t.slots, 1.1, 1e9, 8, 8,
                         0, &p),
            0);
  LayerPlan full = OwnersOnly({0, 1, 2, 3});
  EXPECT_EQ(BalanceLayer(cost, 0, t.load, t.agg, DispatchRule::kLoadAware, {0, 0, 0, 0}, 1.1, 1e9,
                         8, 8, 0, &full),
            0);
  EXPECT_THAT(full.replicas[0], ElementsAre(0));
}

// Here a copy costs more than it saves: compute is cheap (1 kFLOP a token) and nothing hides the
// copy's 1 MB gather (no attention). The pass then buys balance with time, never past
// `max_seconds`: none at the layer's own time, some within a budget, all three without one.
TEST(BalanceLayerTest, BuysBalanceWithTimeOnlyUpToItsBudget) {
  BalanceCase t(1e3, 0);
  const CostModel cost(t.c, t.m);
  const LayerPlan start = OwnersOnly({0, 1, 2, 3});
  const LayerPrediction before = t.Eval(cost, start);
  LayerPlan p = start;
  EXPECT_EQ(BalanceLayer(cost, 0, t.load, t.agg, DispatchRule::kLoadAware, t.slots, 1.1,
                         /*budget=*/0, 8, 8, 0, &p),
            0);
  EXPECT_EQ(p.replicas, start.replicas);

  LayerPlan all = start;
  EXPECT_EQ(BalanceLayer(cost, 0, t.load, t.agg, DispatchRule::kLoadAware, t.slots, 1.1, 1e9, 8, 8,
                         0, &all),
            3);
  const LayerPrediction balanced = t.Eval(cost, all);
  EXPECT_NEAR(balanced.max_tokens, 160, 1e-9);
  EXPECT_GT(balanced.total_seconds, before.total_seconds) << "balance was bought with time";

  // A cap between the two: at least one copy, never over the cap.
  const double cap = (before.total_seconds + balanced.total_seconds) / 2;
  LayerPlan some = start;
  const int made = BalanceLayer(cost, 0, t.load, t.agg, DispatchRule::kLoadAware, t.slots, 1.1,
                                cap / before.total_seconds - 1, 8, 8, 0, &some);
  EXPECT_GE(made, 1);
  EXPECT_LT(made, 3);
  const LayerPrediction capped = t.Eval(cost, some);
  EXPECT_LE(capped.total_seconds, cap);
  EXPECT_LT(capped.max_tokens, before.max_tokens);

  // One evaluation is one candidate tried: with a budget of 2 (the layer itself and one
  // candidate) the pass makes at most one move.
  LayerPlan one = start;
  EXPECT_LE(BalanceLayer(cost, 0, t.load, t.agg, DispatchRule::kLoadAware, t.slots, 1.1, 1e9, 8, 8,
                         2, &one),
            1);
}

// On random skewed layers of the paper's Cluster A shape (compute-bound, and All-to-All-bound
// with 1/50 of the FLOPs), after the greedy and the exact repair:
// the pass never takes the layer past its budget (1%), never leaves more tokens above the target
// than it found, keeps every invariant, is deterministic, and somewhere lowers the maximum.
TEST(BalanceLayerTest, WithinItsBudgetAndKeepsInvariantsOverRandomLayers) {
  const Cluster c = ClusterA();
  // Compute-bound and (1/50 of the FLOPs) All-to-All-bound layers.
  const ModelSpec m = ClusterALayers({14'155'776, 14'155'776 / 50});
  const CostModel cost(c, m);
  Rng rng(11);
  int lowered = 0;
  for (int trial = 0; trial < 12; ++trial) {
    const LayerId l = trial % 2;
    const LoadMatrix load = RandomZipfLoad(rng, 0.6 + 0.1 * (trial / 2));
    const LoadAggregate agg = LoadAggregate::Of(load, c);
    const LayerPlan base = TwoExpertsPerDevice();
    GreedyBudget budget;
    budget.max_copies.assign(32, trial % 3 == 0 ? 2 : 1);
    LayerPlan start = MaterializeGreedy(cost, l, base, load, budget, nullptr, &agg);
    RepairLayer(cost, l, load, agg, DispatchRule::kLoadAware, budget.max_copies, 4, 16, &start);
    Dispatcher dispatcher(c);
    auto eval = [&](const LayerPlan& p) {
      return cost.EvaluateLayer(l, p, load, DispatchRule::kLoadAware, ReplicaSemantics::kEphemeral,
                                &dispatcher, &agg);
    };
    const double target = 1.05;
    auto excess = [&](const LayerPrediction& p) {
      double sum = 0;
      for (double t : p.device_tokens) sum += std::max(0.0, t - target * p.mean_tokens);
      return sum;
    };
    const LayerPrediction before = eval(start);
    const double cap = before.total_seconds * 1.01;
    LayerPlan p = start;
    const int made = BalanceLayer(cost, l, load, agg, DispatchRule::kLoadAware, budget.max_copies,
                                  target, 0.01, 12, 16, 0, &p);
    EXPECT_LE(made, 12);
    const LayerPrediction after = eval(p);
    EXPECT_LE(after.total_seconds, cap) << "trial " << trial;
    EXPECT_LE(excess(after), excess(before) + 1e-6) << "trial " << trial;
    if (made == 0) {
      EXPECT_EQ(p.replicas, start.replicas);
    }
    lowered += after.max_tokens < before.max_tokens;
    ExpectLayerInvariants(p, start, budget.max_copies);
    LayerPlan again = start;
    BalanceLayer(cost, l, load, agg, DispatchRule::kLoadAware, budget.max_copies, target, 0.01, 12,
                 16, 0, &again);
    EXPECT_EQ(again.replicas, p.replicas) << "deterministic";
  }
  EXPECT_GT(lowered, 0);
}

// Calibration within the plan's memory on Cluster A: plans made for one random Zipf load meet
// another (a new hot set, as after a drift); the swaps never exceed the plan's slots (every copy
// gathered replaces one), keep owners and unique ascending holders, never make the layer slower
// than the plan, late gather included, and are deterministic; over the trials they must bring
// the layers closer to balance.
TEST(CalibrationTest, SwapsKeepInvariantsAndBalanceLayersWithinThePlansMemory) {
  const Cluster c = ClusterA();
  const ModelSpec m = ClusterALayers({14'155'776, 14'155'776 / 50});
  const CostModel cost(c, m);
  Rng rng(5);
  double ratio_before = 0, ratio_after = 0;
  int accepted = 0;
  const int trials = 10;
  for (int trial = 0; trial < trials; ++trial) {
    const LayerId l = trial % 2;
    const double s = 0.8 + 0.1 * (trial / 2);
    const LoadMatrix planned_for = RandomZipfLoad(rng, s);
    const LoadMatrix actual = RandomZipfLoad(rng, s);
    const LoadAggregate agg = LoadAggregate::Of(planned_for, c);
    GreedyBudget budget;
    budget.max_copies.assign(32, 1);
    LayerPlan plan =
        MaterializeGreedy(cost, l, TwoExpertsPerDevice(), planned_for, budget, nullptr, &agg);
    const std::vector<int> slots = plan.ExtraCopies(32);
    const std::vector<int> none(32, 0);
    const CalibrationResult r = Calibrate(cost, l, plan, actual, none, DispatchRule::kLoadAware);
    EXPECT_LE(r.evaluations, 2 + kCalibrationCellBudget / (32 * 64)) << "trial " << trial;
    ExpectLayerInvariants(r.layer, plan, slots);
    Dispatcher dispatcher(c);
    const LayerPrediction before = cost.EvaluateLayer(l, plan, actual, DispatchRule::kLoadAware,
                                                      ReplicaSemantics::kEphemeral, &dispatcher);
    const LayerPrediction after = cost.EvaluateLayer(l, r.layer, actual, DispatchRule::kLoadAware,
                                                     ReplicaSemantics::kEphemeral, &dispatcher);
    EXPECT_DOUBLE_EQ(r.before_seconds, before.total_seconds);
    if (r.accepted) {
      ++accepted;
      EXPECT_EQ(r.copies_added, r.copies_dropped) << "no free memory: swaps only";
      EXPECT_LE(r.after_seconds, r.before_seconds) << "trial " << trial;
      EXPECT_DOUBLE_EQ(r.after_seconds, after.total_seconds + r.extra_spag_seconds);
    } else {
      EXPECT_EQ(r.layer.replicas, plan.replicas);
    }
    ratio_before += before.max_tokens / before.mean_tokens;
    ratio_after += after.max_tokens / after.mean_tokens;
    const CalibrationResult again =
        Calibrate(cost, l, plan, actual, none, DispatchRule::kLoadAware);
    EXPECT_EQ(again.layer.replicas, r.layer.replicas) << "deterministic";
  }
  EXPECT_GT(accepted, 0);
  EXPECT_LT(ratio_after / trials, ratio_before / trials - 0.05)
      << "max/mean " << ratio_before / trials << " -> " << ratio_after / trials;
  std::printf("calibration over %d trials: mean max/mean %.3f -> %.3f, %d accepted\n", trials,
              ratio_before / trials, ratio_after / trials, accepted);
}

}  // namespace
}  // namespace hecate::placement
