// The communicator contract on the in-process fake: uneven and zero all-to-all splits, all-reduce,
// sparse collectives over random plans with exact byte counts, and failure when a peer dies.
#include "worker/comm/communicator.h"
#include "worker/comm/async_lane.h"

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

// Lanes: two operations outstanding at once complete whichever is waited first; a lane's traffic
// never matches the parent's (same tags on both), and its bytes count in the parent's counters.
TEST(AsyncLaneTest, OutstandingOpsCompleteInAnyWaitOrder) {
  InProcessGroup g(2, absl::Seconds(10));
  for (bool first_a : {true, false}) {
    OnRanks(g, [&](int r, Communicator& c) {
      absl::StatusOr<std::unique_ptr<Communicator>> lane_comm = c.CreateLane();
      ASSERT_TRUE(lane_comm.ok()) << lane_comm.status();
      AsyncLane lane(*std::move(lane_comm), absl::Seconds(10));
      const int peer = 1 - r;
      std::vector<float> a_out(64, 1.0f + r), a_in(64), b_out(32, 10.0f + r), b_in(32);
      auto a = lane.Submit([&](Communicator& l) {
        return l.SendRecv({{peer, 7, a_out.data(), 256}}, {{peer, 7, a_in.data(), 256}},
                          CommKind::kSparseAllGather);
      });
      auto b = lane.Submit([&](Communicator& l) {
        return l.SendRecv({{peer, 8, b_out.data(), 128}}, {{peer, 8, b_in.data(), 128}},
                          CommKind::kSparseReduceScatter);
      });
      // Meanwhile the parent runs its own exchange with the same tag.
      float mine = 100.0f + r, theirs = 0;
      ASSERT_TRUE(
          c.SendRecv({{peer, 7, &mine, 4}}, {{peer, 7, &theirs, 4}}, CommKind::kControl).ok());
      EXPECT_EQ(theirs, 100.0f + peer);
      if (first_a) {
        ASSERT_TRUE(lane.Wait(*a).ok());
        ASSERT_TRUE(lane.Wait(*b).ok());
      } else {
        ASSERT_TRUE(lane.Wait(*b).ok());
        ASSERT_TRUE(lane.Wait(*a).ok());
      }
      EXPECT_TRUE(a->Done() && b->Done());
      EXPECT_EQ(a_in[63], 1.0f + peer);
      EXPECT_EQ(b_in[0], 10.0f + peer);
      EXPECT_GE(c.counters().sent(CommKind::kSparseAllGather), 256);
      EXPECT_GE(c.counters().received(CommKind::kSparseReduceScatter), 128);
    });
  }
}

// A peer that dies makes the lane's op fail and Wait return that error well within its
// deadline; a peer that is alive but silent makes Wait return DEADLINE_EXCEEDED at the deadline.
TEST(AsyncLaneTest, DeadOrSilentPeerGivesAnErrorNotAHang) {
  InProcessGroup g(2, absl::Seconds(30));
  absl::StatusOr<std::unique_ptr<Communicator>> lane_comm = g.rank(0)->CreateLane();
  ASSERT_TRUE(lane_comm.ok());
  {
    AsyncLane lane(*std::move(lane_comm), absl::Seconds(30));
    float x = 0;
    auto op = lane.Submit([&](Communicator& l) {
      return l.SendRecv({}, {{1, 3, &x, 4}}, CommKind::kSparseAllGather);
    });
    const absl::Time t0 = absl::Now();
    EXPECT_EQ(op->Wait(t0 + absl::Milliseconds(100)).code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_FALSE(op->Done());
    g.Kill(1);
    const absl::Status s = op->Wait(absl::Now() + absl::Seconds(20));
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
    EXPECT_EQ(op->Wait(absl::Now()).code(), absl::StatusCode::kUnavailable) << "same status again";
  }
}

// The sparse collectives on a lane equal their blocking forms.
TEST(AsyncLaneTest, SparseCollectivesOnALaneMatchTheBlockingOnes) {
  InProcessGroup g(3, absl::Seconds(10));
  placement::LayerPlan layer;
  layer.owner = {0, 1, 2, 0};
  layer.replicas = {{0, 1, 2}, {1, 2}, {0, 2}, {0}};
  OnRanks(g, [&](int r, Communicator& c) {
    AsyncLane lane(*c.CreateLane(), absl::Seconds(10));
    const SparseSchedule sched = BuildSparseSchedule(layer, r);
    std::vector<std::vector<float>> params(4, std::vector<float>(16, 0)), grads = params;
    for (int e = 0; e < 4; ++e) {
      if (layer.owner[e] == r) std::fill(params[e].begin(), params[e].end(), 1.0f + e);
      if (layer.Holds(e, r)) std::fill(grads[e].begin(), grads[e].end(), 1.0f);
    }
    ChunkAccess p{[&](placement::ExpertId e) { return static_cast<void*>(params[e].data()); }, 64};
    ChunkAccess gr{[&](placement::ExpertId e) { return static_cast<void*>(grads[e].data()); }, 64};
    auto ag = StartSparseAllGather(lane, sched, p, 1000);
    ASSERT_TRUE(lane.Wait(*ag).ok());
    auto rs = StartSparseReduceScatter(lane, sched, gr, 4, 2000);
    ASSERT_TRUE(lane.Wait(*rs).ok());
    for (int e = 0; e < 4; ++e) {
      if (layer.Holds(e, r)) {
        EXPECT_EQ(params[e][5], 1.0f + e) << "expert " << e;
      }
      if (layer.owner[e] == r) {
        EXPECT_EQ(grads[e][7], static_cast<float>(layer.replicas[e].size())) << "expert " << e;
      }
    }
  });
}

// Persistent replicas' gradient AllReduce: every holder of an expert ends with the sum of the
// holders' gradients, bitwise the same on all of them, and each moves 2(n-1)/n of a chunk each
// way (ring), over random holder sets of 4 ranks.
TEST(ReplicaAllReduceTest, EveryHolderGetsTheSameSumAtRingCost) {
  InProcessGroup g(4, absl::Seconds(10));
  placement::Rng rng(5);
  placement::LayerPlan layer;
  const int experts = 6;
  for (int e = 0; e < experts; ++e) {
    layer.owner.push_back(static_cast<int>(rng.Below(4)));
    std::vector<int> holders;
    for (int d = 0; d < 4; ++d) {
      if (d == layer.owner[e] || rng.Below(2)) holders.push_back(d);
    }
    layer.replicas.push_back(holders);
  }
  constexpr int64_t kElements = 12;  // divisible by every group size
  std::vector<std::vector<std::vector<double>>> grads(4);
  OnRanks(g, [&](int r, Communicator& c) {
    grads[r].assign(experts, std::vector<double>(kElements, 0.0));
    for (int e = 0; e < experts; ++e) {
      for (int64_t i = 0; i < kElements; ++i) grads[r][e][i] = 0.1 * (r + 1) + e + 0.01 * i;
    }
    ChunkAccess access{
        [&, r](placement::ExpertId e) { return static_cast<void*>(grads[r][e].data()); },
        kElements * 8};
    const absl::Status st = ReplicaAllReduce(c, layer, access, 8, 9000);
    ASSERT_TRUE(st.ok()) << st;
    int64_t expected_bytes = 0;
    for (int e = 0; e < experts; ++e) {
      const int n = static_cast<int>(layer.replicas[e].size());
      if (n >= 2 && layer.Holds(e, r)) expected_bytes += 2 * (n - 1) * kElements * 8 / n;
    }
    EXPECT_EQ(c.counters().sent(CommKind::kSparseReduceScatter), expected_bytes);
    EXPECT_EQ(c.counters().received(CommKind::kSparseReduceScatter), expected_bytes);
  });
  for (int e = 0; e < experts; ++e) {
    for (int64_t i = 0; i < kElements; ++i) {
      double sum = 0;
      for (int h : layer.replicas[e]) sum += 0.1 * (h + 1) + e + 0.01 * i;
      for (int h : layer.replicas[e]) {
        EXPECT_NEAR(grads[h][e][i], sum, 1e-12) << "expert " << e << " holder " << h;
        EXPECT_EQ(grads[h][e][i], grads[layer.replicas[e][0]][e][i]) << "not bitwise equal";
      }
    }
  }
}

}  // namespace
}  // namespace hecate::worker
