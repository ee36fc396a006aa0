// Gloo over TCP on loopback with real processes (fork): collectives and sparse collectives agree
// with the fake's contract, and a peer that dies mid-collective makes the others fail with a clear
// error within the timeout instead of hanging.
#include "worker/comm/gloo/gloo_communicator.h"
#include "common/subprocess.h"
#include "worker/comm/async_lane.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace hecate::worker {
namespace {

using ::hecate::proc::FreePort;

// Forks `world` processes running fn(rank) -> exit code; returns the exit codes.
std::vector<int> RunRanks(int world, const std::function<int(int)>& fn) {
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::fflush(stdout);
      _exit(fn(r));
    }
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  return codes;
}

#define CHECK_OR(cond, code)                                                      \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "rank check failed: %s (line %d)\n", #cond, __LINE__); \
      return code;                                                                \
    }                                                                             \
  } while (0)

TEST(GlooCommunicatorTest, CollectivesAcrossProcesses) {
  const int port = FreePort();
  const int world = 3;
  std::vector<int> codes = RunRanks(world, [&](int r) {
    GlooOptions o;
    o.rank = r;
    o.world_size = world;
    o.master_port = port;
    o.prefix = "collectives";
    o.timeout = absl::Seconds(30);
    auto c = CreateGlooCommunicator(o);
    CHECK_OR(c.ok(), 10);
    Communicator& comm = **c;
    // Uneven all-to-all with a zero split: rank r sends r elements to every other rank.
    std::vector<int64_t> sc(world), rc(world);
    std::vector<float> send;
    for (int d = 0; d < world; ++d) {
      sc[d] = r;
      rc[d] = d;
      for (int i = 0; i < r; ++i) send.push_back(10.0f * r + d);
    }
    std::vector<float> recv(0 + 1 + 2);
    CHECK_OR(comm.AllToAllV(send.data(), sc, recv.data(), rc, 4).ok(), 11);
    size_t i = 0;
    for (int s = 0; s < world; ++s) {
      for (int k = 0; k < s; ++k) CHECK_OR(recv[i++] == 10.0f * s + r, 12);
    }
    CHECK_OR(comm.counters().sent(CommKind::kAllToAll) == int64_t{r} * 4 * (world - 1), 13);
    double x[2] = {1.0 * r, 0.5};
    CHECK_OR(comm.AllReduceSum(x, 2, 8).ok(), 14);
    CHECK_OR(x[0] == 3.0 && x[1] == 1.5, 15);
    int64_t v = 5 + r;
    CHECK_OR(comm.AllReduceMinInt64(&v, 1).ok() && v == 5, 16);
    // Sparse collectives: expert 0 owned by rank 0, held by all; expert 1 owned by 2, held by 1.
    placement::LayerPlan layer;
    layer.owner = {0, 2};
    layer.replicas = {{0, 1, 2}, {1, 2}};
    std::vector<std::vector<float>> params = {{r == 0 ? 7.0f : 0.0f, 8.0f},
                                              {r == 2 ? 9.0f : 0.0f, 1.0f}};
    SparseSchedule sched = BuildSparseSchedule(layer, r);
    ChunkAccess p{[&](int e) { return static_cast<void*>(params[e].data()); }, 8};
    CHECK_OR(SparseAllGather(comm, sched, p, 100).ok(), 17);
    if (layer.Holds(0, r)) CHECK_OR(params[0][0] == 7.0f, 18);
    if (layer.Holds(1, r)) CHECK_OR(params[1][0] == 9.0f, 19);
    std::vector<std::vector<float>> grads = {{1.0f, 1.0f}, {2.0f, 2.0f}};
    ChunkAccess g{[&](int e) { return static_cast<void*>(grads[e].data()); }, 8};
    CHECK_OR(SparseReduceScatter(comm, sched, g, 4, 200).ok(), 20);
    if (r == 0) CHECK_OR(grads[0][0] == 3.0f, 21);  // three holders
    if (r == 2) CHECK_OR(grads[1][1] == 4.0f, 22);  // two holders
    const int64_t ag = comm.counters().sent(CommKind::kSparseAllGather);
    CHECK_OR(ag == (r == 0 ? 16 : r == 2 ? 8 : 0), 23);
    // The same plan on the relay tree, rank 0 alone on node a, ranks 1 and 2 on node b: rank 0
    // sends expert 0 across once, to relay 1, which forwards it to 2 in the second phase; on the
    // way back 1 sums node b's gradients before sending them on.
    placement::ClusterSpec spec;
    spec.nodes = {{"a", 1, int64_t{1} << 30, 1e12}, {"b", 2, int64_t{1} << 30, 1e12}};
    spec.intra_node_bandwidth_bytes_per_second = 100e9;
    spec.inter_node_bandwidth_bytes_per_second = 10e9;
    absl::StatusOr<placement::Cluster> cluster = placement::Cluster::Create(spec);
    CHECK_OR(cluster.ok(), 30);
    params = {{r == 0 ? 5.0f : 0.0f, 6.0f}, {r == 2 ? 4.0f : 0.0f, 1.0f}};
    sched = BuildSparseSchedule(layer, r, &*cluster);
    CHECK_OR(SparseAllGather(comm, sched, p, 300).ok(), 31);
    if (layer.Holds(0, r)) CHECK_OR(params[0][0] == 5.0f, 32);
    if (layer.Holds(1, r)) CHECK_OR(params[1][0] == 4.0f, 33);
    CHECK_OR(comm.counters().sent(CommKind::kSparseAllGather) - ag == 8, 34);  // one chunk each
    grads = {{1.0f, 1.0f}, {2.0f, 2.0f}};
    CHECK_OR(SparseReduceScatter(comm, sched, g, 4, 400).ok(), 35);
    if (r == 0) CHECK_OR(grads[0][0] == 3.0f, 36);  // three holders, via the relay
    if (r == 1) CHECK_OR(grads[0][0] == 2.0f, 37);  // the relay's partial sum: node b
    if (r == 2) CHECK_OR(grads[1][1] == 4.0f, 38);
    CHECK_OR(comm.Barrier().ok(), 24);
    return 0;
  });
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

TEST(GlooCommunicatorTest, PeerDeathIsAnErrorNotAHang) {
  const int port = FreePort();
  std::vector<int> codes = RunRanks(3, [&](int r) {
    GlooOptions o;
    o.rank = r;
    o.world_size = 3;
    o.master_port = port;
    o.prefix = "death";
    o.timeout = absl::Seconds(10);
    auto c = CreateGlooCommunicator(o);
    CHECK_OR(c.ok(), 10);
    CHECK_OR((*c)->Barrier().ok(), 11);
    if (r == 2) _exit(0);  // dies before the next collective
    std::vector<float> big(1 << 16, 1.0f);
    absl::Status s = (*c)->AllReduceSum(big.data(), big.size(), 4);
    CHECK_OR(!s.ok(), 12);
    CHECK_OR(s.code() == absl::StatusCode::kUnavailable ||
                 s.code() == absl::StatusCode::kDeadlineExceeded,
             13);
    std::fprintf(stderr, "rank %d failed as expected: %s\n", r, s.ToString().c_str());
    return 0;
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

// A lane across processes: its transfers run while the parent's collectives run on the training
// thread, the two never mix up (same tags), and when a peer dies the lane's op fails and Wait
// returns within its deadline instead of hanging.
TEST(GlooCommunicatorTest, LaneRunsConcurrentlyAndFailsWhenAPeerDies) {
  const int port = FreePort();
  std::vector<int> codes = RunRanks(2, [&](int r) {
    GlooOptions o;
    o.rank = r;
    o.world_size = 2;
    o.master_port = port;
    o.prefix = "lane";
    o.timeout = absl::Seconds(20);
    auto c = CreateGlooCommunicator(o);
    CHECK_OR(c.ok(), 10);
    absl::StatusOr<std::unique_ptr<Communicator>> lane_comm = (*c)->CreateLane();
    CHECK_OR(lane_comm.ok(), 11);
    AsyncLane lane(*std::move(lane_comm), absl::Seconds(20));
    const int peer = 1 - r;
    std::vector<float> out(1 << 18, 1.0f + r), in(1 << 18, 0.0f);
    const int64_t bytes = static_cast<int64_t>(out.size()) * 4;
    auto op = lane.Submit([&](Communicator& l) {
      return l.SendRecv({{peer, 5, out.data(), bytes}}, {{peer, 5, in.data(), bytes}},
                        CommKind::kSparseAllGather);
    });
    float x[4] = {1.0f * r, 1, 1, 1};
    for (int i = 0; i < 20; ++i) CHECK_OR((*c)->AllReduceSum(x, 4, 4).ok(), 12);
    int64_t tag_clash = r, other = -1;
    CHECK_OR(
        (*c)->SendRecv({{peer, 5, &tag_clash, 8}}, {{peer, 5, &other, 8}}, CommKind::kControl).ok(),
        13);
    CHECK_OR(other == peer, 14);
    CHECK_OR(lane.Wait(*op).ok(), 15);
    CHECK_OR(in[12345] == 1.0f + peer, 16);
    CHECK_OR((*c)->counters().sent(CommKind::kSparseAllGather) == bytes, 17);
    CHECK_OR((*c)->Barrier().ok(), 18);
    if (r == 1) _exit(0);  // dies with the next lane transfer outstanding
    auto dead = lane.Submit([&](Communicator& l) {
      return l.SendRecv({}, {{peer, 6, in.data(), bytes}}, CommKind::kSparseAllGather);
    });
    const absl::Time t0 = absl::Now();
    const absl::Status s = dead->Wait(t0 + absl::Seconds(15));
    CHECK_OR(!s.ok(), 19);
    CHECK_OR(absl::Now() - t0 < absl::Seconds(15), 20);
    std::fprintf(stderr, "lane op failed as expected after %.3f s: %s\n",
                 absl::ToDoubleSeconds(absl::Now() - t0), s.ToString().c_str());
    return 0;
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

TEST(GlooCommunicatorTest, BadGroupIsInvalidArgument) {
  GlooOptions o;
  o.rank = 3;
  o.world_size = 2;
  EXPECT_EQ(CreateGlooCommunicator(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace hecate::worker
