// NcclGroup on one rank (one GPU cannot host two NCCL ranks): communicator creation, a grouped
// AllToAllV whose self part becomes a local copy, AllReduce, AllGather, an empty group, argument
// errors. A plain program (no gtest) so kernels/tools/gpu_check.sh can build it against PyTorch's
// NCCL without Bazel; prints "SKIPPED: ..." and exits 0 without a GPU.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "kernels/cuda/gpu_test_skip.h"
#include "worker/comm/nccl/nccl_group.h"
#include "worker/comm/nccl/p2p_schedule.h"

namespace {

namespace nc = hecate::worker::nccl;

int failures = 0;

void Expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

template <typename T>
T* Device(const std::vector<T>& host) {
  T* p = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&p), host.size() * sizeof(T));
  cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}

template <typename T>
std::vector<T> Host(const T* p, size_t n) {
  std::vector<T> out(n);
  cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return out;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    return hecate::kernels::SkipTest("nccl_group_test", "no CUDA device (NCCL needs a GPU)");
  }
  int version = 0;
  ncclGetVersion(&version);
  std::printf("NCCL %d\n", version);
  ncclUniqueId id;
  Expect(ncclGetUniqueId(&id) == ncclSuccess, "ncclGetUniqueId");

  std::unique_ptr<nc::NcclGroup> bad;
  Expect(nc::NcclGroup::Create(1, 1, id, 0, 10, &bad).code == nc::Code::kInvalidArgument,
         "rank outside the group is INVALID_ARGUMENT");
  Expect(nc::NcclGroup::Create(0, 1, id, devices, 10, &bad).code == nc::Code::kInvalidArgument,
         "device outside the machine is INVALID_ARGUMENT");

  // A peer that never comes: rank 0 of 2 alone must time out (and abort), not hang.
  {
    ncclUniqueId lonely;
    ncclGetUniqueId(&lonely);
    std::unique_ptr<nc::NcclGroup> half;
    const auto t0 = std::chrono::steady_clock::now();
    const nc::Status st = nc::NcclGroup::Create(0, 2, lonely, 0, 2.0, &half);
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("     missing peer: code %d after %.2f s: %s\n", static_cast<int>(st.code), waited,
                st.message.c_str());
    Expect(st.code == nc::Code::kDeadlineExceeded && half == nullptr && waited < 10,
           "a missing peer is DEADLINE_EXCEEDED within the timeout, not a hang");
  }

  std::unique_ptr<nc::NcclGroup> g;
  nc::Status s = nc::NcclGroup::Create(0, 1, id, 0, 30, &g);
  Expect(s.ok(), ("create 1-rank group: " + s.message).c_str());
  if (!s.ok()) return 1;

  // AllToAllV on one rank: everything is a self copy.
  std::vector<float> send = {1, 2, 3, 4, 5};
  float* dsend = Device(send);
  float* drecv = Device(std::vector<float>(5, 0));
  nc::GroupSchedule sched;
  Expect(nc::BuildAllToAllV(0, 1, dsend, {5}, drecv, {5}, 4, &sched).empty(), "schedule AllToAllV");
  Expect(sched.ops.empty() && sched.copies.size() == 1, "self part is a local copy");
  s = g->Run(sched);
  Expect(s.ok() && Host(drecv, 5) == send, "AllToAllV delivers the self part");

  // Empty group: nothing to issue, still completes.
  Expect(g->Run(nc::GroupSchedule()).ok(), "empty group completes");

  // AllReduce (sum over one rank is the identity) and min on int64.
  float* dsum = Device(std::vector<float>{1.5f, -2.f});
  s = g->AllReduce(dsum, 2, ncclFloat32, ncclSum);
  Expect(s.ok() && Host(dsum, 2) == std::vector<float>({1.5f, -2.f}), "AllReduce sum");
  int64_t* dmin = Device(std::vector<int64_t>{7, -3});
  s = g->AllReduce(dmin, 2, ncclInt64, ncclMin);
  Expect(s.ok() && Host(dmin, 2) == std::vector<int64_t>({7, -3}), "AllReduce min int64");

  int64_t* dg_send = Device(std::vector<int64_t>{11, 12, 13});
  int64_t* dg_recv = Device(std::vector<int64_t>(3, 0));
  s = g->AllGather(dg_send, dg_recv, 3, ncclInt64);
  Expect(s.ok() && Host(dg_recv, 3) == std::vector<int64_t>({11, 12, 13}), "AllGather");

  // Timing of a 64 MiB self AllToAllV on the group's stream (local copy bandwidth).
  const int64_t n = 16 << 20;
  float* big_a = nullptr;
  float* big_b = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&big_a), n * 4);
  cudaMalloc(reinterpret_cast<void**>(&big_b), n * 4);
  nc::BuildAllToAllV(0, 1, big_a, {n}, big_b, {n}, 4, &sched);
  Expect(g->Run(sched).ok(), "64 MiB AllToAllV self copy");
  cudaFree(big_a);
  cudaFree(big_b);
  cudaFree(dsend);
  cudaFree(drecv);
  cudaFree(dsum);
  cudaFree(dmin);
  cudaFree(dg_send);
  cudaFree(dg_recv);
  g.reset();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
