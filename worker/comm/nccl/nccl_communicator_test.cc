// NcclCommunicator on one rank (one GPU cannot host two NCCL ranks): bootstrap over the in-process
// fake, AllToAllV with device and host buffers (staged), AllReduce, AllGather, SendRecv self
// copies, SparseReduceScatter's device path with nothing to move, byte counters. Skipped without a
// GPU. The multi-rank schedule logic is tested on the CPU in p2p_schedule_test.
#include "worker/comm/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/fake_communicator.h"

namespace hecate::worker {
namespace {

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      GTEST_SKIP() << "no CUDA device";
    }
    absl::StatusOr<std::unique_ptr<Communicator>> c =
        CreateNcclCommunicator(*bootstrap_.rank(0), NcclOptions{0, absl::Seconds(30)});
    ASSERT_TRUE(c.ok()) << c.status();
    comm_ = std::move(*c);
  }
  InProcessGroup bootstrap_{1};
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclCommunicatorTest, AllToAllVWithHostAndDeviceBuffers) {
  EXPECT_TRUE(comm_->device_memory());
  std::vector<float> send = {1, 2, 3}, recv(3, 0);
  ASSERT_TRUE(comm_->AllToAllV(send.data(), {3}, recv.data(), {3}, 4).ok());
  EXPECT_EQ(recv, send);
  float *ds = nullptr, *dr = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&ds), 12), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dr), 12), cudaSuccess);
  cudaMemcpy(ds, send.data(), 12, cudaMemcpyHostToDevice);
  ASSERT_TRUE(comm_->AllToAllV(ds, {3}, dr, {3}, 4).ok());
  std::vector<float> back(3);
  cudaMemcpy(back.data(), dr, 12, cudaMemcpyDeviceToHost);
  EXPECT_EQ(back, send);
  cudaFree(ds);
  cudaFree(dr);
  EXPECT_EQ(comm_->counters().sent(CommKind::kAllToAll), 0);  // self copies are not traffic
}

TEST_F(NcclCommunicatorTest, ReductionsAndGather) {
  double sum[2] = {1.25, -4};
  ASSERT_TRUE(comm_->AllReduceSum(sum, 2, 8).ok());
  EXPECT_EQ(sum[1], -4);
  int64_t m[2] = {5, 9};
  ASSERT_TRUE(comm_->AllReduceMinInt64(m, 2).ok());
  EXPECT_EQ(m[0], 5);
  int64_t g[2] = {0, 0};
  const int64_t mine[2] = {3, 4};
  ASSERT_TRUE(comm_->AllGatherInt64(mine, 2, g).ok());
  EXPECT_EQ(g[1], 4);
  EXPECT_TRUE(comm_->Barrier().ok());
  EXPECT_FALSE(comm_->AllReduceSum(sum, 2, 2).ok());  // only float32/float64
}

TEST_F(NcclCommunicatorTest, SendRecvRejectsUnpairedSelfTransfer) {
  float x = 1, y = 0;
  absl::Status s = comm_->SendRecv({{0, 1, &x, 4}}, {}, CommKind::kControl);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  ASSERT_TRUE(comm_->SendRecv({{0, 1, &x, 4}}, {{0, 1, &y, 4}}, CommKind::kControl).ok());
  EXPECT_EQ(y, 1);
}

TEST_F(NcclCommunicatorTest, SparseCollectivesWithOneRankMoveNothing) {
  placement::LayerPlan layer;
  layer.owner = {0, 0};
  layer.replicas = {{0}, {0}};
  float* grad = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&grad), 16), cudaSuccess);
  ChunkAccess access{[&](placement::ExpertId) { return static_cast<void*>(grad); }, 16};
  EXPECT_TRUE(SparseAllGather(*comm_, BuildSparseSchedule(layer, 0), access, 0).ok());
  EXPECT_TRUE(SparseReduceScatter(*comm_, BuildSparseSchedule(layer, 0), access, 4, 0).ok());
  EXPECT_EQ(comm_->counters().sent(CommKind::kSparseReduceScatter), 0);
  cudaFree(grad);
}

}  // namespace
}  // namespace hecate::worker
