#include "placement/sharding.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/synthetic.h"

namespace hecate::placement {
namespace {

using ::testing::ElementsAre;

ModelSpec Model(int layers, int experts) {
  ModelSpec m;
  m.top_k = 1;
  m.token_bytes = 8;
  for (int l = 0; l < layers; ++l) m.layers.push_back(LayerSpec{experts, 100, 600, 1});
  return m;
}

TEST(EvenShardingTest, ContiguousBlocks) {
  Cluster c = Cluster::Uniform(1, 4, 1 << 30, 1, 1, 1);
  Owners o = EvenSharding(c, Model(2, 8));
  EXPECT_THAT(o[0], ElementsAre(0, 0, 1, 1, 2, 2, 3, 3));
  EXPECT_THAT(o[1], ElementsAre(0, 0, 1, 1, 2, 2, 3, 3));
}

TEST(EvenShardingTest, FewerExpertsThanDevicesRotates) {
  Cluster c = Cluster::Uniform(1, 4, 1 << 30, 1, 1, 1);
  Owners o = EvenSharding(c, Model(2, 2));
  EXPECT_THAT(o[0], ElementsAre(0, 1));
  EXPECT_THAT(o[1], ElementsAre(2, 3));
}

TEST(HeterogeneousShardingTest, UnderloadedFirstThenTopT) {
  Cluster c = Cluster::Uniform(1, 2, 1 << 30, 1, 1, 1);
  ModelSpec m = Model(1, 4);
  // t = 0: all experts are under-loaded; LPT-like alternation by node/device load.
  ShardingResult r = HeterogeneousSharding(c, m, {{40, 30, 20, 10}}, {0}, nullptr);
  EXPECT_THAT(r.owners[0], ElementsAre(0, 1, 1, 0));
  // t = 1: the hottest expert is placed last, into whatever slot remains.
  r = HeterogeneousSharding(c, m, {{40, 30, 20, 10}}, {1}, nullptr);
  EXPECT_THAT(r.owners[0], ElementsAre(0, 0, 1, 1));
  EXPECT_THAT(r.owned_bytes, ElementsAre(1600, 1600));
}

// Two experts of every layer carry all the tokens, two none: every cold expert is a tie. The
// paper's tie-break (fewer free slots) packs them onto the device that already holds more, which
// fills first, and the last layer's two hot experts must share the other device; spreading keeps
// one hot expert on each device in every layer.
TEST(HeterogeneousShardingTest, SpreadingKeepsRoomForLaterLayersWhenExpertsCarryNoLoad) {
  Cluster c = Cluster::Uniform(1, 2, 1 << 30, 1, 1, 1);
  ModelSpec m = Model(3, 4);
  const std::vector<std::vector<double>> loads(3, {10, 10, 0, 0});
  ShardingResult packed = HeterogeneousSharding(c, m, loads, {0, 0, 0}, nullptr);
  EXPECT_THAT(packed.owners[0], ElementsAre(0, 1, 0, 0));
  EXPECT_THAT(packed.owners[2], ElementsAre(1, 1, 1, 1));
  ShardingResult spread =
      HeterogeneousSharding(c, m, loads, {0, 0, 0}, nullptr, SlotTieBreak::kMoreFree);
  for (int l = 0; l < 3; ++l) {
    EXPECT_NE(spread.owners[l][0], spread.owners[l][1]) << "layer " << l;
  }
  EXPECT_THAT(spread.owned_bytes, ElementsAre(4800, 4800));
}

TEST(HeterogeneousShardingTest, NodeFirstThenDevice) {
  // Two nodes of 2 devices, 8 experts: the four hottest under-loaded experts spread over nodes
  // (node 0, node 1, then the less loaded node) before a node gets a second one.
  Cluster c = Cluster::Uniform(2, 2, 1 << 30, 1, 1, 1);
  ModelSpec m = Model(1, 8);
  ShardingResult r = HeterogeneousSharding(c, m, {{80, 70, 60, 50, 40, 30, 20, 10}}, {0}, nullptr);
  // e0 -> node0/dev0; e1 -> node1/dev2; e2 -> node1 (70/2 < 80/2)/dev3; e3 -> node0/dev1;
  // loads then node0 130, node1 130: tie -> fewer free slots (equal) -> node 0 ... every device
  // ends with exactly 2 experts.
  std::vector<int> count(4, 0);
  for (DeviceId d : r.owners[0]) ++count[d];
  EXPECT_THAT(count, ElementsAre(2, 2, 2, 2));
  EXPECT_EQ(r.owners[0][0], 0);
  EXPECT_EQ(r.owners[0][1], 2);
  EXPECT_EQ(r.owners[0][2], 3);
  EXPECT_EQ(r.owners[0][3], 1);
}

TEST(HeterogeneousShardingTest, MigrationListIsExact) {
  Cluster c = Cluster::Uniform(1, 2, 1 << 30, 1, 1, 1);
  ModelSpec m = Model(1, 4);
  Owners current = {{0, 0, 1, 1}};
  ShardingResult r = HeterogeneousSharding(c, m, {{40, 30, 20, 10}}, {0}, &current);
  ASSERT_THAT(r.owners[0], ElementsAre(0, 1, 1, 0));
  // Experts 1 and 3 swap owners; each moves params + optimizer state (100 + 600 bytes).
  EXPECT_THAT(r.migrations, ElementsAre(Migration{0, 1, 0, 1, 700}, Migration{0, 3, 1, 0, 700}));
  EXPECT_EQ(r.migration_bytes, 1400);
}

// Property: every expert gets exactly one owner inside the cluster; with equal-size experts every
// device owns at most ceil(N / D) experts over all layers; migrations list exactly the changes.
TEST(HeterogeneousShardingTest, InvariantsOnRandomInputs) {
  Rng rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    ClusterSpec spec;
    const int nodes = 1 + static_cast<int>(rng.Below(4));
    for (int n = 0; n < nodes; ++n) {
      spec.nodes.push_back({"n", 1 + static_cast<int>(rng.Below(5)), 1 << 30, 1e12});
    }
    spec.intra_node_bandwidth_bytes_per_second = 1e11;
    spec.inter_node_bandwidth_bytes_per_second = 1e10;
    Cluster c = *Cluster::Create(spec);
    ModelSpec m = Model(1 + static_cast<int>(rng.Below(4)), 1 + static_cast<int>(rng.Below(12)));
    std::vector<std::vector<double>> loads;
    std::vector<int> t;
    for (int l = 0; l < m.num_layers(); ++l) {
      std::vector<double> w(m.layers[l].num_experts);
      for (double& x : w) x = rng.Below(3) == 0 ? 0 : static_cast<double>(rng.Below(1000));
      if (trial % 7 == 0) std::fill(w.begin(), w.end(), 0.0);  // zero loads
      if (trial % 5 == 0) w[0] = 1e9;                          // one expert takes everything
      loads.push_back(w);
      t.push_back(static_cast<int>(rng.Below(m.layers[l].num_experts + 2)));
    }
    Owners current = EvenSharding(c, m);
    ShardingResult r = HeterogeneousSharding(c, m, loads, t, &current);
    const int total = m.total_experts();
    const int cap = (total + c.num_devices() - 1) / c.num_devices();
    std::vector<int> count(c.num_devices(), 0);
    for (int l = 0; l < m.num_layers(); ++l) {
      ASSERT_EQ(static_cast<int>(r.owners[l].size()), m.layers[l].num_experts);
      for (DeviceId d : r.owners[l]) {
        ASSERT_GE(d, 0);
        ASSERT_LT(d, c.num_devices());
        ++count[d];
      }
    }
    for (int n : count) ASSERT_LE(n, cap);
    EXPECT_EQ(r.migrations, Migrations(current, r.owners, m));
    int64_t bytes = 0;
    for (const Migration& mig : r.migrations) bytes += mig.bytes;
    EXPECT_EQ(bytes, r.migration_bytes);
    // Deterministic.
    EXPECT_EQ(HeterogeneousSharding(c, m, loads, t, &current).owners, r.owners);
  }
}

TEST(OverlapDegreeTest, PaperFormula) {
  // 2 nodes: bw = inter-node 10 GB/s. T_attn = 2 ms, expert 4.7 MB -> floor(4.25) = 4.
  Cluster c = Cluster::Uniform(2, 8, 1 << 30, 1e12, 300e9, 10e9);
  ModelSpec m = Model(1, 64);
  m.layers[0].expert_param_bytes = 4'700'000;
  EXPECT_EQ(OverlapDegree(c, m, 0, 2e-3), 4);
  EXPECT_EQ(OverlapDegree(c, m, 0, 0), 0);
  EXPECT_EQ(OverlapDegree(c, m, 0, 10.0), 64);  // capped at the expert count
  // One node: intra-node bandwidth.
  Cluster one = Cluster::Uniform(1, 8, 1 << 30, 1e12, 300e9, 10e9);
  EXPECT_EQ(OverlapDegree(one, m, 0, 2e-3), 64);
}

}  // namespace
}  // namespace hecate::placement
