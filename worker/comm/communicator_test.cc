// The communicator contract on the in-process fake: uneven and zero all-to-all splits, all-reduce,
// sparse collectives over random plans with exact byte counts, and failure when a peer dies.
#include "worker/comm/communicator.h"

#include <algorithm>
#include <numeric>
#include <thread>

#include <gtest/gtest.h>

#include "placement/synthetic.h"
#include "worker/comm/fake_communicator.h"

namespace hecate::worker {
namespace {

// Runs fn(rank, comm) on one thread per rank.
void OnRanks(InProcessGroup& g, const std::function<void(int, Communicator&)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < g.world_size(); ++r) threads.emplace_back([&, r] { fn(r, *g.rank(r)); });
  for (auto& t : threads) t.join();
}

TEST(FakeCommunicatorTest, AllToAllVUnevenAndZeroSplits) {
  InProcessGroup g(3);
  OnRanks(g, [](int r, Communicator& c) {
    // Rank r sends (d + r) % 3 floats to rank d, each with value 100 r + d.
    std::vector<int64_t> send_counts(3), recv_counts(3);
    std::vector<float> send;
    for (int d = 0; d < 3; ++d) {
      send_counts[d] = (d + r) % 3;
      for (int i = 0; i < send_counts[d]; ++i) send.push_back(100.0f * r + d);
      recv_counts[d] = (r + d) % 3;
    }
    std::vector<float> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
    ASSERT_TRUE(c.AllToAllV(send.data(), send_counts, recv.data(), recv_counts, 4).ok());
    size_t i = 0;
    for (int s = 0; s < 3; ++s) {
      for (int k = 0; k < recv_counts[s]; ++k) EXPECT_EQ(recv[i++], 100.0f * s + r);
    }
    int64_t sent = 0, received = 0;
    for (int d = 0; d < 3; ++d) {
      if (d == r) continue;
      sent += send_counts[d] * 4;
      received += recv_counts[d] * 4;
    }
    EXPECT_EQ(c.counters().sent(CommKind::kAllToAll), sent);
    EXPECT_EQ(c.counters().received(CommKind::kAllToAll), received);
  });
}

TEST(FakeCommunicatorTest, AllReduceAndGather) {
  InProcessGroup g(4);
  OnRanks(g, [](int r, Communicator& c) {
    std::vector<double> x = {1.0 * r, 2.0};
    ASSERT_TRUE(c.AllReduceSum(x.data(), 2, 8).ok());
    EXPECT_EQ(x[0], 6.0);
    EXPECT_EQ(x[1], 8.0);
    int64_t v = 10 - r;
    ASSERT_TRUE(c.AllReduceMinInt64(&v, 1).ok());
    EXPECT_EQ(v, 7);
    int64_t mine = r * r;
    std::vector<int64_t> all(4);
    ASSERT_TRUE(c.AllGatherInt64(&mine, 1, all.data()).ok());
    EXPECT_EQ(all, (std::vector<int64_t>{0, 1, 4, 9}));
    ASSERT_TRUE(c.Barrier().ok());
  });
}

// Flat (no cluster) and on the relay tree of random clusters (1-3 nodes of 1-3 devices): every
// holder gets the owner's chunk, the owner the sum of every holder's gradient, the bytes are
// exactly the travelling chunks, and on the tree at most one chunk per (expert, node) crosses
// nodes.
TEST(SparseCollectivesTest, RandomPlansMoveExactlyTheTravellingChunks) {
  placement::Rng rng(5);
  for (int trial = 0; trial < 40; ++trial) {
    const bool tree = trial % 2 == 1;
    const int nodes = tree ? 1 + static_cast<int>(rng.Below(3)) : 1;
    const int per_node =
        tree ? 1 + static_cast<int>(rng.Below(3)) : 2 + static_cast<int>(rng.Below(3));
    const int world = std::max(2, nodes * per_node);
    const placement::Cluster cluster = placement::Cluster::Uniform(
        world / per_node, per_node, int64_t{1} << 30, 1e12, 100e9, 10e9);
    const int experts = 1 + static_cast<int>(rng.Below(6));
    const int chunk = 1 + static_cast<int>(rng.Below(5));
    placement::LayerPlan layer;
    int64_t travelling = 0;
    for (int e = 0; e < experts; ++e) {
      const int owner = static_cast<int>(rng.Below(world));
      layer.owner.push_back(owner);
      std::vector<int> holders;
      for (int d = 0; d < world; ++d) {
        if (d == owner || rng.Below(2) == 0) holders.push_back(d);
      }
      travelling += static_cast<int64_t>(holders.size() - 1);
      layer.replicas.push_back(holders);
    }
    InProcessGroup g(world);
    std::vector<int64_t> ag_sent(world), rs_sent(world), crossing(world);
    OnRanks(g, [&](int r, Communicator& c) {
      // Parameters: value 1000 e + i on the owner, -1 elsewhere. Gradients: r + 1 everywhere.
      std::vector<std::vector<double>> params(experts), grads(experts);
      for (int e = 0; e < experts; ++e) {
        params[e].assign(chunk, -1);
        if (layer.owner[e] == r) {
          for (int i = 0; i < chunk; ++i) params[e][i] = 1000.0 * e + i;
        }
        grads[e].assign(chunk, r + 1.0);
      }
      const SparseSchedule sched = BuildSparseSchedule(layer, r, tree ? &cluster : nullptr);
      for (const auto& phase : sched.sends) {
        for (const auto& t : phase) crossing[r] += !cluster.same_node(r, t.peer);
      }
      ChunkAccess p{[&](int e) { return static_cast<void*>(params[e].data()); }, chunk * 8};
      ASSERT_TRUE(SparseAllGather(c, sched, p, 0).ok());
      for (int e = 0; e < experts; ++e) {
        if (!layer.Holds(e, r)) continue;
        for (int i = 0; i < chunk; ++i) ASSERT_EQ(params[e][i], 1000.0 * e + i);
      }
      ChunkAccess gr{[&](int e) { return static_cast<void*>(grads[e].data()); }, chunk * 8};
      ASSERT_TRUE(SparseReduceScatter(c, sched, gr, 8, 1 << 20).ok());
      for (int e = 0; e < experts; ++e) {
        if (layer.owner[e] != r) continue;
        double want = 0;
        for (int h : layer.replicas[e]) want += h + 1.0;  // the sum over holders, not the mean
        for (int i = 0; i < chunk; ++i) ASSERT_EQ(grads[e][i], want);
      }
      ag_sent[r] = c.counters().sent(CommKind::kSparseAllGather);
      rs_sent[r] = c.counters().sent(CommKind::kSparseReduceScatter);
    });
    const int64_t expected = travelling * chunk * 8;
    if (tree) {
      int64_t most = 0;  // one crossing per (expert, node other than the owner's holding it)
      for (int e = 0; e < experts; ++e) {
        std::vector<char> seen(cluster.num_nodes(), 0);
        for (int h : layer.replicas[e]) {
          const int n = cluster.node_of(h);
          if (n != cluster.node_of(layer.owner[e]) && !seen[n]) ++most, seen[n] = 1;
        }
      }
      EXPECT_EQ(std::accumulate(crossing.begin(), crossing.end(), int64_t{0}), most);
    }
    EXPECT_EQ(std::accumulate(ag_sent.begin(), ag_sent.end(), int64_t{0}), expected);
    EXPECT_EQ(std::accumulate(rs_sent.begin(), rs_sent.end(), int64_t{0}), expected);
  }
}

TEST(FakeCommunicatorTest, DeadPeerFailsClearly) {
  InProcessGroup g(2, absl::Seconds(5));
  g.Kill(1);
  float x = 1;
  absl::Status s = g.rank(0)->AllReduceSum(&x, 1, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(s.message()).find("rank 1 died"), std::string::npos);
}

}  // namespace
}  // namespace hecate::worker
