#include "placement/dispatch.h"

#include <algorithm>
#include <numeric>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/synthetic.h"

namespace hecate::placement {
namespace {

using ::testing::ElementsAre;

// 2 nodes x 2 devices: devices 0,1 on node 0; 2,3 on node 1.
Cluster TwoByTwo() { return Cluster::Uniform(2, 2, int64_t{1} << 30, 1e12, 100e9, 10e9); }

LayerPlan Layer(std::vector<DeviceId> owner, std::vector<std::vector<DeviceId>> replicas) {
  LayerPlan l;
  l.owner = std::move(owner);
  l.replicas = std::move(replicas);
  return l;
}

TEST(SplitTest, EvenRotatesRemainder) {
  std::vector<int64_t> shares;
  SplitEven(7, 3, 0, &shares);
  EXPECT_THAT(shares, ElementsAre(3, 2, 2));
  SplitEven(7, 3, 1, &shares);
  EXPECT_THAT(shares, ElementsAre(2, 3, 2));
  SplitEven(0, 2, 5, &shares);
  EXPECT_THAT(shares, ElementsAre(0, 0));
}

TEST(SplitTest, WaterFillLevelsTheLeastLoaded) {
  std::vector<int64_t> load = {10, 0, 4, 100};
  std::vector<int> order;
  std::vector<int64_t> shares;
  // Candidates 0,1,2 with loads 10,0,4; 12 tokens: fill 1 to 4 (4), then 1,2 to 10 (6+6=12 > 8
  // left) -> level (12 + 0 + 4) / 2 = 8: shares 0, 8, 4.
  SplitWaterFill(12, {0, 1, 2}, load, &order, &shares);
  EXPECT_THAT(shares, ElementsAre(0, 8, 4));
  // 30 tokens reach every candidate: level (30+14)/3 = 14 r 2 -> lowest loads get the +1.
  SplitWaterFill(30, {0, 1, 2}, load, &order, &shares);
  EXPECT_EQ(std::accumulate(shares.begin(), shares.end(), int64_t{0}), 30);
  EXPECT_THAT(shares, ElementsAre(4, 15, 11));
}

TEST(LoadAggregateTest, SumsPerNodeExpertAndSource) {
  // 2 nodes: devices {0, 1} and {2}.
  ClusterSpec spec;
  spec.nodes.push_back({"a", 2, 1 << 30, 1e12});
  spec.nodes.push_back({"b", 1, 1 << 30, 1e12});
  spec.intra_node_bandwidth_bytes_per_second = 1e11;
  spec.inter_node_bandwidth_bytes_per_second = 1e10;
  Cluster c = *Cluster::Create(spec);
  LoadMatrix load(3, 5);
  int64_t v = 1;
  for (DeviceId d = 0; d < 3; ++d) {
    for (ExpertId e = 0; e < 5; ++e) load.at(d, e) = v++;  // 1..15
  }
  const LoadAggregate a = LoadAggregate::Of(load, c);
  EXPECT_EQ(a.mass(0, 0), 1 + 6);
  EXPECT_EQ(a.mass(0, 4), 5 + 10);
  EXPECT_EQ(a.mass(1, 2), 13);
  EXPECT_THAT(a.expert_total, ElementsAre(18, 21, 24, 27, 30));
  EXPECT_THAT(a.source_total, ElementsAre(15, 40, 65));
}

TEST(DispatchTest, LocalThenSameNodeThenRemote) {
  Cluster c = TwoByTwo();
  // Expert 0: held by 0 and 1 (node 0). Expert 1: only by 3.
  LayerPlan layer = Layer({0, 3}, {{0, 1}, {3}});
  LoadMatrix load(4, 2);
  for (DeviceId d = 0; d < 4; ++d) {
    load.at(d, 0) = 10;
    load.at(d, 1) = 6;
  }
  Dispatcher dispatcher(c);
  LayerDispatch dispatch = dispatcher.Compute(layer, load, DispatchRule::kEven);
  // Expert 0: 0 and 1 keep theirs; node 1 (devices 2, 3) has no holder -> 20 tokens split over
  // {0, 1} evenly -> 10 each, apportioned north-west: device 2 -> 0, device 3 -> 1.
  EXPECT_THAT(dispatch.by_expert[0],
              ElementsAre(Flow{0, 0, 10}, Flow{1, 1, 10}, Flow{2, 0, 10}, Flow{3, 1, 10}));
  EXPECT_THAT(dispatch.by_expert[1],
              ElementsAre(Flow{0, 3, 6}, Flow{1, 3, 6}, Flow{2, 3, 6}, Flow{3, 3, 6}));
  EXPECT_THAT(dispatch.device_tokens, ElementsAre(20, 20, 0, 24));

  DispatchSummary s;
  dispatcher.Summarize(layer, load, DispatchRule::kEven, &s);
  EXPECT_EQ(s.device_tokens, dispatch.device_tokens);
  EXPECT_THAT(s.out_inter, ElementsAre(6, 6, 10, 10));
  EXPECT_THAT(s.out_intra, ElementsAre(0, 0, 6, 0));
  EXPECT_THAT(s.in_inter, ElementsAre(10, 10, 0, 12));
  EXPECT_THAT(s.in_intra, ElementsAre(0, 0, 0, 6));
}

TEST(DispatchTest, SameNodeHolderPreferredOverRemote) {
  Cluster c = TwoByTwo();
  // Expert 0 held by 1 (node 0) and 2 (node 1): device 0's tokens go to 1, device 3's to 2.
  LayerPlan layer = Layer({1}, {{1, 2}});
  LoadMatrix load(4, 1);
  load.at(0, 0) = 5;
  load.at(3, 0) = 7;
  Dispatcher dispatcher(c);
  LayerDispatch d = dispatcher.Compute(layer, load, DispatchRule::kLoadAware);
  EXPECT_THAT(d.by_expert[0], ElementsAre(Flow{0, 1, 5}, Flow{3, 2, 7}));
}

TEST(DispatchTest, LoadAwareFillsLeastLoadedHolder) {
  Cluster c = Cluster::Uniform(1, 3, int64_t{1} << 30, 1e12, 100e9, 100e9);
  // Device 0 owns a busy expert 1 (local tokens 30). Expert 0 is held by 0 and 1; device 2 sends
  // it 20 tokens. Even: 10/10. Load-aware: device 1 (load 0) takes all 20.
  LayerPlan layer = Layer({0, 0}, {{0, 1}, {0}});
  LoadMatrix load(3, 2);
  load.at(0, 1) = 30;
  load.at(2, 0) = 20;
  Dispatcher dispatcher(c);
  EXPECT_THAT(dispatcher.Compute(layer, load, DispatchRule::kEven).device_tokens,
              ElementsAre(40, 10, 0));
  EXPECT_THAT(dispatcher.Compute(layer, load, DispatchRule::kLoadAware).device_tokens,
              ElementsAre(30, 20, 0));
}

TEST(DispatchTest, LoadAwareRelevelsEarlierPoolsAgainstLaterOnes) {
  Cluster c = Cluster::Uniform(1, 3, int64_t{1} << 30, 1e12, 100e9, 100e9);
  // Expert 2 has one holder (device 2, 10 tokens). Pool A = expert 0 (20 tokens, holders 0 and 1)
  // is split first: 10/10. Pool B = expert 1 (12 tokens, holders 0 and 2) then sees devices 0 and
  // 2 at 10 each: 6/6, so one pass ends at 16, 10, 16. Re-levelling A against B (13/7), B against
  // A (8 on device 0, 4 on device 2), A again (6/14) reaches the optimum: 14 each.
  LayerPlan layer = Layer({0, 0, 2}, {{0, 1}, {0, 2}, {2}});
  LoadMatrix load(3, 3);
  load.at(1, 0) = 20;
  load.at(1, 1) = 12;
  load.at(1, 2) = 10;
  Dispatcher dispatcher(c);
  LayerDispatch d = dispatcher.Compute(layer, load, DispatchRule::kLoadAware);
  EXPECT_THAT(d.device_tokens, ElementsAre(14, 14, 14));
  EXPECT_THAT(d.by_expert[0], ElementsAre(Flow{1, 0, 6}, Flow{1, 1, 14}));
  EXPECT_THAT(d.by_expert[1], ElementsAre(Flow{1, 0, 8}, Flow{1, 2, 4}));
  DispatchSummary s;
  dispatcher.Summarize(layer, load, DispatchRule::kLoadAware, &s);
  EXPECT_EQ(s.device_tokens, d.device_tokens);
  // The even rule is the paper's, unchanged: holder 1 keeps its own 20 tokens of expert 0, and
  // expert 1 splits 6/6.
  EXPECT_THAT(dispatcher.Compute(layer, load, DispatchRule::kEven).device_tokens,
              ElementsAre(6, 20, 16));
}

// A random layer on a random cluster of `min_nodes` to `min_nodes + spread - 1` nodes of 1-4
// devices: each expert held by its owner and by a third of the other devices; counts 0-999 (a
// quarter of them 0 when `zeros`).
struct RandomCase {
  Cluster cluster;
  LayerPlan layer;
  LoadMatrix load;
};
RandomCase MakeRandomCase(Rng& rng, int min_nodes, int spread, double device_nic_bw, bool zeros) {
  const int nodes = min_nodes + static_cast<int>(rng.Below(spread));
  ClusterSpec spec;
  for (int n = 0; n < nodes; ++n) {
    spec.nodes.push_back({"n", 1 + static_cast<int>(rng.Below(4)), 1 << 30, 1e12});
  }
  spec.intra_node_bandwidth_bytes_per_second = 1e11;
  spec.inter_node_bandwidth_bytes_per_second = 1e10;
  spec.device_nic_bandwidth_bytes_per_second = device_nic_bw;
  Cluster c = *Cluster::Create(spec);
  const int devices = c.num_devices();
  const int experts = 1 + static_cast<int>(rng.Below(9));
  LayerPlan layer;
  for (ExpertId e = 0; e < experts; ++e) {
    const DeviceId o = static_cast<DeviceId>(rng.Below(devices));
    layer.owner.push_back(o);
    std::vector<DeviceId> r;
    for (DeviceId d = 0; d < devices; ++d) {
      if (d == o || rng.Below(3) == 0) r.push_back(d);
    }
    layer.replicas.push_back(r);
  }
  LoadMatrix load(devices, experts);
  for (DeviceId d = 0; d < devices; ++d) {
    for (ExpertId e = 0; e < experts; ++e) {
      load.at(d, e) = zeros && rng.Below(4) == 0 ? 0 : static_cast<int64_t>(rng.Below(1000));
    }
  }
  return RandomCase{std::move(c), std::move(layer), std::move(load)};
}

TEST(DispatchTest, LoadAwareSpillsToAnotherNodeWhereTheLinksHaveRoom) {
  Cluster c = TwoByTwo();
  // Expert 0 is held by 0 (node 0) and 2 (node 1); device 1 sends it 30 tokens. Expert 1 lives
  // on device 1 only; device 2 sends it 20 (node 1 -> node 0: the All-to-All's slowest link, 20
  // tokens each way at most). Node-local, device 0 computes all 30. The spill passes 15 of them
  // to device 2 (levelling 30 and 0), which the idle directions (node 0 out, node 1 in) carry
  // without exceeding 20.
  LayerPlan layer = Layer({0, 1}, {{0, 2}, {1}});
  LoadMatrix load(4, 2);
  load.at(1, 0) = 30;
  load.at(2, 1) = 20;
  Dispatcher local(c);
  local.set_spill(false);
  EXPECT_THAT(local.Compute(layer, load, DispatchRule::kLoadAware).device_tokens,
              ElementsAre(30, 20, 0, 0));
  Dispatcher dispatcher(c);
  LayerDispatch d = dispatcher.Compute(layer, load, DispatchRule::kLoadAware);
  EXPECT_THAT(d.device_tokens, ElementsAre(15, 20, 15, 0));
  EXPECT_THAT(d.by_expert[0], ElementsAre(Flow{1, 0, 15}, Flow{1, 2, 15}));
  DispatchSummary s;
  dispatcher.Summarize(layer, load, DispatchRule::kLoadAware, &s);
  EXPECT_EQ(s.device_tokens, d.device_tokens);
  EXPECT_THAT(s.out_inter, ElementsAre(0, 15, 20, 0));
  EXPECT_THAT(s.in_inter, ElementsAre(0, 20, 15, 0));
  // When expert 1 lives on node 1 instead and device 1 sends it the 20, node 0's outgoing NIC is
  // the slowest link itself: no room, nothing spills.
  LayerPlan busy = Layer({0, 3}, {{0, 2}, {3}});
  LoadMatrix out(4, 2);
  out.at(1, 0) = 30;
  out.at(1, 1) = 20;
  EXPECT_THAT(dispatcher.Compute(busy, out, DispatchRule::kLoadAware).device_tokens,
              ElementsAre(30, 0, 0, 20));
}

// Property: the spill never makes the All-to-All's slowest link slower (the cost model's links)
// nor the busiest device busier, on random plans and loads, with and without device NIC caps.
TEST(DispatchTest, SpillNeverSlowsTheAllToAll) {
  Rng rng(11);
  int improved = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const RandomCase rc = MakeRandomCase(rng, 2, 3, trial % 2 == 1 ? 4e9 : 0, /*zeros=*/false);
    const Cluster& c = rc.cluster;
    const LayerPlan& layer = rc.layer;
    const LoadMatrix& load = rc.load;
    const int devices = c.num_devices();
    auto slowest = [&](const DispatchSummary& s) {
      double worst = 0;
      std::vector<double> in(c.num_nodes(), 0), out(c.num_nodes(), 0);
      for (DeviceId d = 0; d < devices; ++d) {
        worst = std::max(worst, std::max(s.in_intra[d], s.out_intra[d]) / c.intra_bw());
        worst = std::max(worst, std::max(s.in_inter[d], s.out_inter[d]) / c.device_nic_bw());
        in[c.node_of(d)] += s.in_inter[d];
        out[c.node_of(d)] += s.out_inter[d];
      }
      for (NodeId n = 0; n < c.num_nodes(); ++n) {
        worst = std::max(worst, std::max(in[n], out[n]) / c.inter_bw());
      }
      return worst;
    };
    Dispatcher with(c), without(c);
    without.set_spill(false);
    DispatchSummary a, b;
    with.Summarize(layer, load, DispatchRule::kLoadAware, &a);
    without.Summarize(layer, load, DispatchRule::kLoadAware, &b);
    ASSERT_LE(slowest(a), slowest(b) * (1 + 1e-12)) << "trial " << trial;
    const int64_t max_a = *std::max_element(a.device_tokens.begin(), a.device_tokens.end());
    const int64_t max_b = *std::max_element(b.device_tokens.begin(), b.device_tokens.end());
    ASSERT_LE(max_a, max_b) << "trial " << trial;
    if (max_a < max_b) ++improved;
  }
  EXPECT_GT(improved, 0);
}

// Property: over random plans and loads, every token is dispatched exactly once, only to holders,
// local tokens stay local, and the fast summary equals the full dispatch.
TEST(DispatchTest, ReplicaEvenSplitsEverySourceOverAllHoldersWhateverTheNode) {
  // Expert 0 held on devices 0 (node 0) and 2 (node 1). Device 0 holds it and still sends half
  // its tokens to node 1; device 1 (node 0) splits too. The even rule would keep them on node 0.
  const Cluster c = TwoByTwo();
  const LayerPlan layer = Layer({0, 1}, {{0, 2}, {1}});
  LoadMatrix load(4, 2);
  load.at(0, 0) = 10;
  load.at(1, 0) = 7;
  load.at(3, 1) = 5;
  Dispatcher dispatcher(c);
  const LayerDispatch d = dispatcher.Compute(layer, load, DispatchRule::kReplicaEven);
  // Source 1, expert 0: 7 = 3 + 4, the extra token from holder (1 + 0) mod 2 = 1 on.
  EXPECT_THAT(d.by_expert[0],
              ElementsAre(Flow{0, 0, 5}, Flow{0, 2, 5}, Flow{1, 0, 3}, Flow{1, 2, 4}));
  EXPECT_THAT(d.by_expert[1], ElementsAre(Flow{3, 1, 5}));
  EXPECT_THAT(d.device_tokens, ElementsAre(8, 5, 9, 0));
  DispatchSummary s;
  dispatcher.Summarize(layer, load, DispatchRule::kReplicaEven, &s);
  EXPECT_THAT(s.device_tokens, ElementsAre(8, 5, 9, 0));
  EXPECT_THAT(s.out_inter, ElementsAre(5, 4, 0, 5));
  EXPECT_THAT(s.out_intra, ElementsAre(0, 3, 0, 0));
  EXPECT_THAT(s.in_inter, ElementsAre(0, 5, 9, 0));
  // Under the paper's even rule node 0's tokens stay on node 0.
  const LayerDispatch even = dispatcher.Compute(layer, load, DispatchRule::kEven);
  EXPECT_THAT(even.device_tokens, ElementsAre(17, 5, 0, 0));
}

TEST(DispatchTest, ConservesTokensOnRandomInputs) {
  Rng rng(7);
  int spilled_flows = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const RandomCase rc = MakeRandomCase(rng, 1, 4, 0, /*zeros=*/true);
    const Cluster& c = rc.cluster;
    const LayerPlan& layer = rc.layer;
    const LoadMatrix& load = rc.load;
    const int devices = c.num_devices();
    const int experts = layer.num_experts();
    for (DispatchRule rule :
         {DispatchRule::kEven, DispatchRule::kLoadAware, DispatchRule::kReplicaEven}) {
      Dispatcher dispatcher(c);
      LayerDispatch full = dispatcher.Compute(layer, load, rule);
      DispatchSummary summary;
      dispatcher.Summarize(layer, load, rule, &summary);
      ASSERT_EQ(summary.device_tokens, full.device_tokens);
      std::vector<int64_t> device_total(devices, 0);
      for (ExpertId e = 0; e < experts; ++e) {
        std::vector<int64_t> sent(devices, 0);
        for (const Flow& f : full.by_expert[e]) {
          ASSERT_GT(f.tokens, 0);
          ASSERT_TRUE(layer.Holds(e, f.dst)) << "token sent to a non-holder";
          if (rule == DispatchRule::kEven && layer.Holds(e, f.src)) {
            ASSERT_EQ(f.src, f.dst) << "local copy not used";
          }
          bool node_holds = false;
          for (DeviceId h : layer.replicas[e]) node_holds = node_holds || c.same_node(h, f.src);
          if (node_holds && rule == DispatchRule::kEven) {
            ASSERT_TRUE(c.same_node(f.src, f.dst)) << "left a node holding e";
          }
          if (node_holds && !c.same_node(f.src, f.dst)) ++spilled_flows;
          sent[f.src] += f.tokens;
          device_total[f.dst] += f.tokens;
        }
        for (DeviceId s = 0; s < devices; ++s) ASSERT_EQ(sent[s], load.at(s, e));
        if (rule == DispatchRule::kReplicaEven) {
          // Every source's pieces differ by at most one token over all holders.
          for (DeviceId s = 0; s < devices; ++s) {
            std::vector<int64_t> piece(devices, 0);
            for (const Flow& f : full.by_expert[e]) {
              if (f.src == s) piece[f.dst] += f.tokens;
            }
            int64_t lo = load.at(s, e), hi = 0;
            for (DeviceId h : layer.replicas[e]) {
              lo = std::min(lo, piece[h]);
              hi = std::max(hi, piece[h]);
            }
            if (load.at(s, e) > 0) {
              ASSERT_LE(hi - lo, 1) << "source " << s << " expert " << e;
            }
          }
        }
      }
      ASSERT_EQ(device_total, full.device_tokens);
      // The summary's traffic is the full dispatch's, device by device.
      std::vector<int64_t> out_intra(devices, 0), out_inter(devices, 0), in_intra(devices, 0),
          in_inter(devices, 0);
      for (ExpertId e = 0; e < experts; ++e) {
        for (const Flow& f : full.by_expert[e]) {
          if (f.src == f.dst) continue;
          (c.same_node(f.src, f.dst) ? out_intra : out_inter)[f.src] += f.tokens;
          (c.same_node(f.src, f.dst) ? in_intra : in_inter)[f.dst] += f.tokens;
        }
      }
      ASSERT_EQ(summary.out_intra, out_intra);
      ASSERT_EQ(summary.out_inter, out_inter);
      ASSERT_EQ(summary.in_intra, in_intra);
      ASSERT_EQ(summary.in_inter, in_inter);
      // Given aggregates change nothing.
      DispatchSummary again;
      const LoadAggregate agg = LoadAggregate::Of(load, c);
      dispatcher.Summarize(layer, load, rule, &again, &agg);
      ASSERT_EQ(again.device_tokens, summary.device_tokens);
      ASSERT_EQ(again.in_inter, summary.in_inter);
    }
  }
  // The load-aware spill (tokens of a node holding the expert sent to another node) was exercised.
  EXPECT_GT(spilled_flows, 0);
}

}  // namespace
}  // namespace hecate::placement
