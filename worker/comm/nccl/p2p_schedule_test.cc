// The grouped send/recv schedules the NCCL communicator issues, checked on the CPU: ordering by
// (peer, tag) so both sides pair transfers identically, self transfers as local copies, zero-size
// transfers dropped, every malformed batch rejected with a message, AllToAllV offsets.
#include "worker/comm/nccl/p2p_schedule.h"

#include <algorithm>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace hecate::worker::nccl {
namespace {

char buf[1 << 12];
void* At(int64_t off) { return buf + off; }

TEST(P2PSchedule, OrdersByPeerThenTag) {
  GroupSchedule g;
  ASSERT_EQ(BuildBatch(1, 3, {{2, 9, At(0), 4}, {0, 5, At(4), 8}, {2, 3, At(12), 4}},
                       {{0, 7, At(100), 16}, {2, 1, At(116), 4}}, &g),
            "");
  ASSERT_EQ(g.ops.size(), 5u);
  std::vector<std::pair<int, uint32_t>> got;
  for (const auto& op : g.ops) got.emplace_back(op.transfer.peer, op.transfer.tag);
  EXPECT_EQ(got, (std::vector<std::pair<int, uint32_t>>{{0, 5}, {0, 7}, {2, 1}, {2, 3}, {2, 9}}));
  EXPECT_TRUE(g.ops[0].send);
  EXPECT_FALSE(g.ops[1].send);
  EXPECT_EQ(g.bytes_sent, 16);
  EXPECT_EQ(g.bytes_received, 20);
  EXPECT_TRUE(g.copies.empty());
}

TEST(P2PSchedule, SelfTransfersBecomeLocalCopiesAndZeroBytesVanish) {
  GroupSchedule g;
  ASSERT_EQ(BuildBatch(0, 2, {{0, 1, At(0), 32}, {1, 2, At(32), 0}},
                       {{0, 1, At(64), 32}, {1, 2, At(96), 0}}, &g),
            "");
  EXPECT_TRUE(g.ops.empty());
  ASSERT_EQ(g.copies.size(), 1u);
  EXPECT_EQ(g.copies[0].src, At(0));
  EXPECT_EQ(g.copies[0].dst, At(64));
  EXPECT_EQ(g.copies[0].bytes, 32);
  EXPECT_EQ(g.bytes_sent + g.bytes_received, 0);
}

TEST(P2PSchedule, RejectsMalformedBatches) {
  GroupSchedule g;
  EXPECT_NE(BuildBatch(0, 2, {{2, 0, At(0), 4}}, {}, &g).find("peer 2 outside"), std::string::npos);
  EXPECT_NE(BuildBatch(0, 2, {}, {{-1, 0, At(0), 4}}, &g).find("outside"), std::string::npos);
  EXPECT_NE(BuildBatch(0, 2, {{1, 0, At(0), -4}}, {}, &g).find("negative"), std::string::npos);
  EXPECT_NE(BuildBatch(0, 2, {{1, 3, At(0), 4}, {1, 3, At(4), 4}}, {}, &g).find("repeats tag 3"),
            std::string::npos);
  EXPECT_NE(BuildBatch(0, 2, {{0, 1, At(0), 4}}, {}, &g).find("no self receive"),
            std::string::npos);
  EXPECT_NE(BuildBatch(0, 2, {}, {{0, 1, At(0), 4}}, &g).find("no self send"), std::string::npos);
  EXPECT_NE(BuildBatch(0, 2, {{0, 1, At(0), 4}}, {{0, 1, At(8), 8}}, &g).find("8"),
            std::string::npos);
  EXPECT_NE(BuildBatch(2, 2, {}, {}, &g), "");
  // A rejected batch leaves nothing to issue.
  EXPECT_TRUE(g.ops.empty());
  EXPECT_TRUE(g.copies.empty());
}

// Random batches over 4 ranks: rank a's k-th send to b must meet b's k-th receive from a with the
// same tag and size — the pairing NCCL performs by issue order.
TEST(P2PSchedule, BothSidesPairTransfersInTheSameOrder) {
  const int world = 4;
  std::mt19937 rng(42);
  for (int round = 0; round < 50; ++round) {
    // (src, dst) -> tag -> bytes
    std::map<std::pair<int, int>, std::map<uint32_t, int64_t>> traffic;
    for (int i = 0; i < 40; ++i) {
      const int src = rng() % world, dst = rng() % world;
      traffic[{src, dst}][rng() % 1000] = 1 + rng() % 64;
    }
    std::vector<GroupSchedule> g(world);
    for (int r = 0; r < world; ++r) {
      std::vector<Transfer> sends, recvs;
      for (const auto& [pair, tags] : traffic) {
        for (const auto& [tag, bytes] : tags) {
          if (pair.first == r) sends.push_back({pair.second, tag, nullptr, bytes});
          if (pair.second == r) recvs.push_back({pair.first, tag, nullptr, bytes});
        }
      }
      std::shuffle(sends.begin(), sends.end(), rng);  // callers' order must not matter
      std::shuffle(recvs.begin(), recvs.end(), rng);
      ASSERT_EQ(BuildBatch(r, world, sends, recvs, &g[r]), "");
    }
    for (int a = 0; a < world; ++a) {
      for (int b = 0; b < world; ++b) {
        if (a == b) continue;
        std::vector<std::pair<uint32_t, int64_t>> sent, received;
        for (const auto& op : g[a].ops) {
          if (op.send && op.transfer.peer == b)
            sent.emplace_back(op.transfer.tag, op.transfer.bytes);
        }
        for (const auto& op : g[b].ops) {
          if (!op.send && op.transfer.peer == a) {
            received.emplace_back(op.transfer.tag, op.transfer.bytes);
          }
        }
        EXPECT_EQ(sent, received) << "round " << round << " " << a << "->" << b;
      }
    }
  }
}

TEST(P2PSchedule, AllToAllVOffsetsFollowTheCounts) {
  GroupSchedule g;
  // rank 1 of 3, float32: sends 2,3,0 elements and receives 1,3,4.
  ASSERT_EQ(BuildAllToAllV(1, 3, At(0), {2, 3, 0}, At(1000), {1, 3, 4}, 4, &g), "");
  ASSERT_EQ(g.copies.size(), 1u);
  EXPECT_EQ(g.copies[0].src, At(8));
  EXPECT_EQ(g.copies[0].dst, At(1004));
  EXPECT_EQ(g.copies[0].bytes, 12);
  ASSERT_EQ(g.ops.size(), 3u);  // send 2 to 0, receive 1 from 0, receive 4 from 2 (send 0 dropped)
  EXPECT_TRUE(g.ops[0].send);
  EXPECT_EQ(g.ops[0].transfer.data, At(0));
  EXPECT_EQ(g.ops[0].transfer.bytes, 8);
  EXPECT_FALSE(g.ops[1].send);
  EXPECT_EQ(g.ops[1].transfer.data, At(1000));
  EXPECT_EQ(g.ops[2].transfer.peer, 2);
  EXPECT_EQ(g.ops[2].transfer.data, At(1016));
  EXPECT_EQ(g.ops[2].transfer.bytes, 16);
  EXPECT_EQ(g.bytes_sent, 8);
  EXPECT_EQ(g.bytes_received, 20);
}

TEST(P2PSchedule, AllToAllVRejectsBadCounts) {
  GroupSchedule g;
  EXPECT_NE(BuildAllToAllV(0, 2, At(0), {1}, At(0), {1, 1}, 4, &g), "");
  EXPECT_NE(BuildAllToAllV(0, 2, At(0), {1, -1}, At(0), {1, 1}, 4, &g), "");
  EXPECT_NE(BuildAllToAllV(0, 2, At(0), {2, 1}, At(0), {1, 1}, 4, &g).find("itself"),
            std::string::npos);
  EXPECT_NE(BuildAllToAllV(0, 2, At(0), {1, 1}, At(0), {1, 1}, 0, &g), "");
}

}  // namespace
}  // namespace hecate::worker::nccl
