#include "placement/sparse_tree.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>

namespace hecate::placement {
namespace {

std::vector<std::tuple<DeviceId, DeviceId, int>> Edges(const Cluster* c, const LayerPlan& l,
                                                       ExpertId e) {
  std::vector<SparseEdge> edges;
  AppendSparseEdges(c, l, e, &edges);
  std::vector<std::tuple<DeviceId, DeviceId, int>> out;
  for (const SparseEdge& x : edges) {
    EXPECT_EQ(x.expert, e);
    out.push_back({x.from, x.to, x.phase});
  }
  return out;
}

// 3 nodes x 4 devices. Expert 0 is owned by 5 (node 1) and held on every node.
TEST(SparseTreeTest, OneRelayPerOtherNodeAndDirectInsideTheOwnersNode) {
  const Cluster c = Cluster::Uniform(3, 4, int64_t{1} << 30, 1e12, 100e9, 10e9);
  LayerPlan l;
  l.owner = {5, 0};
  l.replicas = {{1, 3, 5, 6, 7, 9, 10, 11}, {0}};
  using T = std::tuple<DeviceId, DeviceId, int>;
  EXPECT_EQ(Edges(&c, l, 0), (std::vector<T>{
                                 {5, 1, 0},   // relay of node 0: its lowest holder
                                 {5, 6, 0},   // the owner's own node: direct
                                 {5, 7, 0},   //
                                 {5, 9, 0},   // relay of node 2
                                 {1, 3, 1},   // relays forward inside their node
                                 {9, 10, 1},  //
                                 {9, 11, 1},
                             }));
  EXPECT_TRUE(Edges(&c, l, 1).empty());  // one holder: nothing moves
  // Without a cluster (or on one node) the tree is flat: the owner sends to every holder.
  EXPECT_EQ(Edges(nullptr, l, 0),
            (std::vector<T>{
                {5, 1, 0}, {5, 3, 0}, {5, 6, 0}, {5, 7, 0}, {5, 9, 0}, {5, 10, 0}, {5, 11, 0}}));
}

// Every holder but the owner receives exactly once, from the owner or from a relay on its own node
// that receives from the owner in phase 0: over random layouts.
TEST(SparseTreeTest, EveryHolderReceivesOnceOverRandomLayouts) {
  const Cluster c = Cluster::Uniform(4, 3, int64_t{1} << 30, 1e12, 100e9, 10e9);
  uint64_t state = 12345;
  auto next = [&state]() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>(state >> 33);
  };
  for (int trial = 0; trial < 200; ++trial) {
    LayerPlan l;
    l.owner = {next() % 12};
    std::vector<DeviceId> holders;
    for (DeviceId d = 0; d < 12; ++d) {
      if (d == l.owner[0] || next() % 3 == 0) holders.push_back(d);
    }
    l.replicas = {holders};
    std::vector<SparseEdge> edges;
    AppendSparseEdges(&c, l, 0, &edges);
    std::vector<int> received(12, 0);
    std::vector<DeviceId> phase0_receivers;
    for (const SparseEdge& x : edges) {
      ++received[x.to];
      if (x.phase == 0) {
        EXPECT_EQ(x.from, l.owner[0]);
        phase0_receivers.push_back(x.to);
      } else {
        EXPECT_TRUE(c.same_node(x.from, x.to));
        EXPECT_FALSE(c.same_node(x.to, l.owner[0]));
        EXPECT_NE(std::find(phase0_receivers.begin(), phase0_receivers.end(), x.from),
                  phase0_receivers.end())
            << "a relay receives in phase 0";
      }
    }
    EXPECT_EQ(edges.size(), holders.size() - 1);
    for (DeviceId h : holders) EXPECT_EQ(received[h], h == l.owner[0] ? 0 : 1) << "device " << h;
    // At most one cross-node edge per node.
    std::vector<int> inbound(4, 0);
    for (const SparseEdge& x : edges) inbound[c.node_of(x.to)] += !c.same_node(x.from, x.to);
    for (int n : inbound) EXPECT_LE(n, 1);
  }
}

}  // namespace
}  // namespace hecate::placement
