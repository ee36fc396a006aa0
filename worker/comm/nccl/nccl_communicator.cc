#include "worker/comm/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/kernels_cuda.h"
#include "worker/comm/nccl/nccl_group.h"
#include "worker/comm/nccl/p2p_schedule.h"

namespace hecate::worker {

namespace {

namespace nc = ::hecate::worker::nccl;

absl::Status ToAbsl(const nc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.code), s.message);
}

bool IsDevicePointer(const void* p) {
  if (p == nullptr) return true;  // zero-size buffers
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error of an unregistered host pointer
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

// Device memory that lives for one call.
class DeviceScratch {
 public:
  ~DeviceScratch() {
    for (void* p : blocks_) cudaFree(p);
  }
  void* Get(int64_t bytes) {
    void* p = nullptr;
    if (bytes > 0 && cudaMalloc(&p, bytes) != cudaSuccess) return nullptr;
    blocks_.push_back(p);
    return p;
  }

 private:
  std::vector<void*> blocks_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<nc::NcclGroup> group, NcclOptions options,
                   std::shared_ptr<CommCounters> counters = nullptr)
      : group_(std::move(group)), options_(options) {
    if (counters != nullptr) counters_ = std::move(counters);
  }
  ~NcclCommunicator() override {
    if (zero_offset_ != nullptr) cudaFree(zero_offset_);
  }

  int rank() const override { return group_->rank(); }
  int world_size() const override { return group_->world_size(); }
  bool device_memory() const override { return true; }

  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                         const std::vector<int64_t>& recv_counts, int element_bytes,
                         CommKind kind) override {
    int64_t send_total = 0, recv_total = 0;
    for (int64_t c : send_counts) send_total += c;
    for (int64_t c : recv_counts) recv_total += c;
    DeviceScratch scratch;
    const void* dsend = nullptr;
    void* drecv = nullptr;
    if (absl::Status st = StageIn(send, send_total * element_bytes, recv,
                                  recv_total * element_bytes, &scratch, &dsend, &drecv);
        !st.ok()) {
      return st;
    }
    nc::GroupSchedule schedule;
    std::string err = nc::BuildAllToAllV(rank(), world_size(), dsend, send_counts, drecv,
                                         recv_counts, element_bytes, &schedule);
    if (!err.empty()) return absl::InvalidArgumentError(err);
    if (absl::Status s = ToAbsl(group_->Run(schedule)); !s.ok()) return s;
    if (absl::Status s = StageOut(recv, drecv, recv_total * element_bytes); !s.ok()) return s;
    counters_->Add(kind, schedule.bytes_sent, schedule.bytes_received);
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(void* data, int64_t elements, int element_bytes,
                            CommKind kind) override {
    if (element_bytes != 4 && element_bytes != 8) {
      return absl::InvalidArgumentError("AllReduceSum takes float32 or float64");
    }
    return Reduce(data, elements, element_bytes == 4 ? ncclFloat32 : ncclFloat64, element_bytes,
                  ncclSum, kind);
  }

  absl::Status AllReduceMinInt64(int64_t* data, int64_t elements) override {
    return Reduce(data, elements, ncclInt64, 8, ncclMin, CommKind::kControl);
  }

  absl::Status AllGatherInt64(const int64_t* send, int64_t elements, int64_t* recv,
                              CommKind kind) override {
    const int64_t bytes = elements * 8;
    DeviceScratch scratch;
    const void* dsend = nullptr;
    void* drecv = nullptr;
    if (absl::Status st =
            StageIn(send, bytes, recv, bytes * world_size(), &scratch, &dsend, &drecv);
        !st.ok()) {
      return st;
    }
    if (absl::Status s = ToAbsl(group_->AllGather(dsend, drecv, elements, ncclInt64)); !s.ok()) {
      return s;
    }
    if (absl::Status s = StageOut(recv, drecv, bytes * world_size()); !s.ok()) return s;
    counters_->Add(kind, bytes * (world_size() - 1), bytes * (world_size() - 1));
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    int64_t one = 1;
    return Reduce(&one, 1, ncclInt64, 8, ncclMin, CommKind::kControl);
  }

  absl::Status SendRecv(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                        CommKind kind) override {
    DeviceScratch scratch;
    std::vector<nc::Transfer> s, r;
    std::vector<std::pair<void*, const P2POp*>> copy_back;  // staged receives
    for (const P2POp& op : sends) {
      void* data = op.data;
      if (!IsDevicePointer(op.data)) {
        data = scratch.Get(op.bytes);
        if (op.bytes > 0 && data == nullptr) return absl::ResourceExhaustedError("staging");
        if (absl::Status st = Copy(data, op.data, op.bytes, cudaMemcpyHostToDevice); !st.ok()) {
          return st;
        }
      }
      s.push_back({op.peer, op.tag, data, op.bytes});
    }
    for (const P2POp& op : recvs) {
      void* data = op.data;
      if (!IsDevicePointer(op.data)) {
        data = scratch.Get(op.bytes);
        if (op.bytes > 0 && data == nullptr) return absl::ResourceExhaustedError("staging");
        copy_back.emplace_back(data, &op);
      }
      r.push_back({op.peer, op.tag, data, op.bytes});
    }
    nc::GroupSchedule schedule;
    std::string err = nc::BuildBatch(rank(), world_size(), s, r, &schedule);
    if (!err.empty()) return absl::InvalidArgumentError(err);
    if (absl::Status st = ToAbsl(group_->Run(schedule)); !st.ok()) return st;
    for (const auto& [staged, op] : copy_back) {
      if (absl::Status st = Copy(op->data, staged, op->bytes, cudaMemcpyDeviceToHost); !st.ok()) {
        return st;
      }
    }
    counters_->Add(kind, schedule.bytes_sent, schedule.bytes_received);
    return absl::OkStatus();
  }

  absl::Status SendRecvAccumulate(const std::vector<P2POp>& sends, const std::vector<P2POp>& sums,
                                  CommKind kind) override {
    DeviceScratch scratch;
    int64_t total = 0;
    for (const P2POp& op : sums) total += op.bytes;
    char* staging = static_cast<char*>(scratch.Get(total));
    if (total > 0 && staging == nullptr) {
      return absl::ResourceExhaustedError("no device memory to stage the reduce-scatter");
    }
    std::vector<P2POp> recvs;
    int64_t off = 0;
    for (const P2POp& op : sums) {
      if (!IsDevicePointer(op.data)) {
        return absl::InvalidArgumentError("SendRecvAccumulate sums into device memory only");
      }
      recvs.push_back({op.peer, op.tag, staging + off, op.bytes});
      off += op.bytes;
    }
    if (absl::Status s = SendRecv(sends, recvs, kind); !s.ok()) return s;
    if (zero_offset_ == nullptr) {
      if (cudaMalloc(&zero_offset_, sizeof(int64_t)) != cudaSuccess ||
          cudaMemset(zero_offset_, 0, sizeof(int64_t)) != cudaSuccess) {
        return absl::ResourceExhaustedError("no device memory for the accumulate offsets");
      }
    }
    off = 0;
    for (const P2POp& op : sums) {
      const cudaError_t e = kernels::cuda::AccumulateChunks(
          reinterpret_cast<const float*>(staging + off), zero_offset_, 1, op.bytes / 4,
          static_cast<float*>(op.data), group_->stream());
      if (e != cudaSuccess) return absl::InternalError(cudaGetErrorString(e));
      off += op.bytes;
    }
    const cudaError_t e = cudaStreamSynchronize(group_->stream());
    if (e != cudaSuccess) return absl::InternalError(cudaGetErrorString(e));
    return absl::OkStatus();
  }

 private:
  // Device views of one call's buffers: the buffers themselves when both are device memory, else
  // device staging (one buffer when send and receive are the same, as in an in-place reduction)
  // with `send` copied in. StageOut copies a staged receive buffer back out.
  absl::Status StageIn(const void* send, int64_t send_bytes, void* recv, int64_t recv_bytes,
                       DeviceScratch* scratch, const void** dsend, void** drecv) {
    if (IsDevicePointer(send) && IsDevicePointer(recv)) {
      *dsend = send;
      *drecv = recv;
      return absl::OkStatus();
    }
    void* staged_send = scratch->Get(send_bytes);
    void* staged_recv = send == recv ? staged_send : scratch->Get(recv_bytes);
    if ((send_bytes > 0 && staged_send == nullptr) || (recv_bytes > 0 && staged_recv == nullptr)) {
      return absl::ResourceExhaustedError("no device memory to stage host buffers");
    }
    *dsend = staged_send;
    *drecv = staged_recv;
    return Copy(staged_send, send, send_bytes, cudaMemcpyHostToDevice);
  }
  absl::Status StageOut(void* recv, const void* drecv, int64_t recv_bytes) {
    return drecv == recv ? absl::OkStatus() : Copy(recv, drecv, recv_bytes, cudaMemcpyDeviceToHost);
  }

  absl::Status Copy(void* dst, const void* src, int64_t bytes, cudaMemcpyKind dir) {
    if (bytes == 0) return absl::OkStatus();
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, dir, group_->stream());
    if (e == cudaSuccess) e = cudaStreamSynchronize(group_->stream());
    if (e != cudaSuccess)
      return absl::InternalError(absl::StrCat("cudaMemcpy: ", cudaGetErrorString(e)));
    return absl::OkStatus();
  }

  absl::Status Reduce(void* data, int64_t elements, ncclDataType_t type, int element_bytes,
                      ncclRedOp_t op, CommKind kind) {
    const int64_t bytes = elements * element_bytes;
    DeviceScratch scratch;
    const void* unused = nullptr;
    void* d = nullptr;
    if (absl::Status st = StageIn(data, bytes, data, bytes, &scratch, &unused, &d); !st.ok()) {
      return st;
    }
    if (absl::Status s = ToAbsl(group_->AllReduce(d, elements, type, op)); !s.ok()) return s;
    if (absl::Status s = StageOut(data, d, bytes); !s.ok()) return s;
    // Ring all-reduce moves 2 (n - 1) / n of the buffer each way.
    const int64_t moved = world_size() > 1 ? 2 * bytes * (world_size() - 1) / world_size() : 0;
    counters_->Add(kind, moved, moved);
    return absl::OkStatus();
  }

  std::unique_ptr<nc::NcclGroup> group_;
  const NcclOptions options_;
  int64_t* zero_offset_ = nullptr;

 public:
  // A second NCCL communicator of the same ranks (its own ncclComm and stream), bootstrapped over
  // this one.
  absl::StatusOr<std::unique_ptr<Communicator>> CreateLane() override;
};

}  // namespace

namespace {

absl::StatusOr<std::unique_ptr<Communicator>> Create(Communicator& bootstrap,
                                                     const NcclOptions& options,
                                                     std::shared_ptr<CommCounters> counters) {
  static_assert(sizeof(ncclUniqueId) % 8 == 0, "ncclUniqueId is whole int64 words");
  constexpr int kWords = sizeof(ncclUniqueId) / 8;
  std::vector<int64_t> mine(kWords, 0);
  if (bootstrap.rank() == 0) {
    ncclUniqueId id;
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
    }
    std::memcpy(mine.data(), &id, sizeof(id));
  }
  std::vector<int64_t> all(static_cast<size_t>(kWords) * bootstrap.world_size());
  if (absl::Status s =
          bootstrap.AllGatherInt64(mine.data(), kWords, all.data(), CommKind::kControl);
      !s.ok()) {
    return s;
  }
  ncclUniqueId id;
  std::memcpy(&id, all.data(), sizeof(id));  // rank 0's words come first
  std::unique_ptr<nc::NcclGroup> group;
  if (absl::Status s =
          ToAbsl(nc::NcclGroup::Create(bootstrap.rank(), bootstrap.world_size(), id, options.device,
                                       absl::ToDoubleSeconds(options.timeout), &group));
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(std::move(group), options, std::move(counters)));
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::CreateLane() {
  return Create(*this, options_, counters_);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Communicator& bootstrap,
                                                                     const NcclOptions& options) {
  return Create(bootstrap, options, nullptr);
}

}  // namespace hecate::worker
