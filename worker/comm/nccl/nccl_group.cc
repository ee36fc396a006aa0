#include "worker/comm/nccl/nccl_group.h"

#include <chrono>
#include <thread>

namespace hecate::worker::nccl {

namespace {

using Clock = std::chrono::steady_clock;

double Elapsed(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Polling interval while NCCL or the stream is busy: short enough not to add latency to
// millisecond collectives, long enough not to burn a core.
void Backoff(int spins) {
  if (spins < 1000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

Status NcclGroup::Create(int rank, int world, const ncclUniqueId& id, int device, double timeout_s,
                         std::unique_ptr<NcclGroup>* out) {
  if (world <= 0 || rank < 0 || rank >= world) {
    return {Code::kInvalidArgument,
            "rank " + std::to_string(rank) + " outside a group of " + std::to_string(world)};
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    return {Code::kUnavailable, "no CUDA device"};
  }
  if (device < 0 || device >= devices) {
    return {Code::kInvalidArgument, "CUDA device " + std::to_string(device) + " outside [0, " +
                                        std::to_string(devices) + ")"};
  }
  std::unique_ptr<NcclGroup> g(new NcclGroup(rank, world, device, timeout_s));
  cudaError_t ce = cudaSetDevice(device);
  if (ce == cudaSuccess) ce = cudaStreamCreateWithFlags(&g->stream_, cudaStreamNonBlocking);
  if (ce != cudaSuccess) return {Code::kInternal, std::string("CUDA: ") + cudaGetErrorString(ce)};
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&g->comm_, world, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    Status s = {Code::kUnavailable,
                std::string("ncclCommInitRankConfig: ") + ncclGetErrorString(r)};
    if (g->comm_ == nullptr) return s;
    g->Fail(s.code, s.message);
    return s;
  }
  Status s = g->Wait("ncclCommInitRankConfig");
  if (!s.ok()) return s;
  *out = std::move(g);
  return {};
}

NcclGroup::~NcclGroup() {
  if (comm_ != nullptr && !aborted_) {
    // Finalize is asynchronous on a non-blocking communicator: bound the wait, then release (or
    // abort, when a peer never finishes).
    ncclResult_t state = ncclCommFinalize(comm_);
    const Clock::time_point start = Clock::now();
    for (int spins = 0; state == ncclInProgress && Elapsed(start) < timeout_s_; ++spins) {
      Backoff(spins);
      ncclCommGetAsyncError(comm_, &state);
    }
    if (state == ncclSuccess) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
  }
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

Status NcclGroup::Fail(Code code, const std::string& message) {
  if (comm_ != nullptr && !aborted_) {
    ncclCommAbort(comm_);
    aborted_ = true;
  }
  return {code, message};
}

Status NcclGroup::CheckNccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess || r == ncclInProgress) return {};
  const char* last = comm_ != nullptr ? ncclGetLastError(comm_) : "";
  return Fail(r == ncclInvalidArgument || r == ncclInvalidUsage ? Code::kInvalidArgument
                                                                : Code::kUnavailable,
              std::string(what) + ": " + ncclGetErrorString(r) +
                  (last && *last ? std::string(" (") + last + ")" : ""));
}

Status NcclGroup::Wait(const char* what) {
  const Clock::time_point start = Clock::now();
  for (int spins = 0;; ++spins) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess) return CheckNccl(r, what);
    if (state != ncclSuccess && state != ncclInProgress) return CheckNccl(state, what);
    if (state == ncclSuccess) {
      const cudaError_t q = stream_ == nullptr ? cudaSuccess : cudaStreamQuery(stream_);
      if (q == cudaSuccess) return {};
      if (q != cudaErrorNotReady) {
        return Fail(Code::kInternal, std::string(what) + ": CUDA: " + cudaGetErrorString(q));
      }
    }
    if (Elapsed(start) > timeout_s_) {
      return Fail(Code::kDeadlineExceeded,
                  std::string(what) + " did not finish within " + std::to_string(timeout_s_) +
                      " s (a peer is gone or stuck); communicator aborted");
    }
    Backoff(spins);
  }
}

Status NcclGroup::Run(const GroupSchedule& schedule) {
  if (aborted_) return {Code::kUnavailable, "NCCL communicator was aborted after an error"};
  cudaSetDevice(device_);
  for (const LocalCopy& c : schedule.copies) {
    const cudaError_t e = cudaMemcpyAsync(c.dst, c.src, c.bytes, cudaMemcpyDeviceToDevice, stream_);
    if (e != cudaSuccess)
      return Fail(Code::kInternal, std::string("local copy: ") + cudaGetErrorString(e));
  }
  if (!schedule.ops.empty()) {
    Status s = CheckNccl(ncclGroupStart(), "ncclGroupStart");
    if (!s.ok()) return s;
    for (const GroupSchedule::Op& op : schedule.ops) {
      const Transfer& t = op.transfer;
      ncclResult_t r = op.send ? ncclSend(t.data, t.bytes, ncclInt8, t.peer, comm_, stream_)
                               : ncclRecv(t.data, t.bytes, ncclInt8, t.peer, comm_, stream_);
      if (r != ncclSuccess && r != ncclInProgress) {
        ncclGroupEnd();
        return CheckNccl(r, op.send ? "ncclSend" : "ncclRecv");
      }
    }
    s = CheckNccl(ncclGroupEnd(), "ncclGroupEnd");
    if (!s.ok()) return s;
  }
  return Wait("grouped send/recv");
}

Status NcclGroup::AllReduce(void* data, size_t count, ncclDataType_t type, ncclRedOp_t op) {
  if (aborted_) return {Code::kUnavailable, "NCCL communicator was aborted after an error"};
  cudaSetDevice(device_);
  Status s = CheckNccl(ncclAllReduce(data, data, count, type, op, comm_, stream_), "ncclAllReduce");
  return s.ok() ? Wait("ncclAllReduce") : s;
}

Status NcclGroup::AllGather(const void* send, void* recv, size_t count_per_rank,
                            ncclDataType_t type) {
  if (aborted_) return {Code::kUnavailable, "NCCL communicator was aborted after an error"};
  cudaSetDevice(device_);
  Status s =
      CheckNccl(ncclAllGather(send, recv, count_per_rank, type, comm_, stream_), "ncclAllGather");
  return s.ok() ? Wait("ncclAllGather") : s;
}

}  // namespace hecate::worker::nccl
