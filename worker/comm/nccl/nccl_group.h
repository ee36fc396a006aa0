// A NCCL communicator with its own CUDA stream and non-blocking error handling, free of Abseil so
// that kernels/tools/gpu_check.sh can build and test it against PyTorch's NCCL without Bazel.
// worker/comm/nccl/nccl_communicator.h adapts it to the Communicator interface.
//
// No call can hang: the communicator is created non-blocking (ncclConfig_t::blocking = 0) and
// every operation is polled — ncclCommGetAsyncError for NCCL errors and in-progress states,
// cudaStreamQuery for completion — until it finishes or `timeout` passes, when the communicator
// is aborted (ncclCommAbort) and every later call fails with kUnavailable.
//
// All buffers are device memory on `device`. Work is enqueued on stream() (not the default
// stream), so a caller can overlap a SparseAllGather with attention on another stream; the calls
// here wait for completion before returning.
#ifndef HECATE_WORKER_COMM_NCCL_NCCL_GROUP_H_
#define HECATE_WORKER_COMM_NCCL_NCCL_GROUP_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "worker/comm/nccl/p2p_schedule.h"

namespace hecate::worker::nccl {

// Canonical codes, numbered as absl::StatusCode / grpc::StatusCode.
enum class Code {
  kOk = 0,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kInternal = 13,
  kUnavailable = 14,
};

struct Status {
  Code code = Code::kOk;
  std::string message;
  bool ok() const { return code == Code::kOk; }
};

class NcclGroup {
 public:
  // Joins the group `id` as `rank` of `world` on CUDA device `device` (rank 0 makes the id with
  // ncclGetUniqueId and shares it out of band). Waits at most `timeout_s` for every rank to join.
  static Status Create(int rank, int world, const ncclUniqueId& id, int device, double timeout_s,
                       std::unique_ptr<NcclGroup>* out);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  // A batch from p2p_schedule.h: its local copies (cudaMemcpyAsync on stream()) and one
  // ncclGroupStart/End of grouped ncclSend/ncclRecv, then waits.
  Status Run(const GroupSchedule& schedule);
  Status AllReduce(void* data, size_t count, ncclDataType_t type, ncclRedOp_t op);
  Status AllGather(const void* send, void* recv, size_t count_per_rank, ncclDataType_t type);

 private:
  NcclGroup(int rank, int world, int device, double timeout_s)
      : rank_(rank), world_(world), device_(device), timeout_s_(timeout_s) {}
  // Polls until the communicator is not in progress and the stream is idle, or times out.
  Status Wait(const char* what);
  Status Fail(Code code, const std::string& message);
  Status CheckNccl(ncclResult_t r, const char* what);

  int rank_;
  int world_;
  int device_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool aborted_ = false;
};

}  // namespace hecate::worker::nccl

#endif  // HECATE_WORKER_COMM_NCCL_NCCL_GROUP_H_
