#include "worker/comm/staging_communicator.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace hecate::worker {
namespace {

constexpr int64_t kAlign = 256;

int64_t Aligned(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

int64_t Sum(const std::vector<int64_t>& counts) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  return total;
}

class StagingCommunicator : public Communicator {
 public:
  // `owned`: the host communicator when this one owns it (a lane's), else null.
  StagingCommunicator(Communicator* host, std::unique_ptr<Communicator> owned,
                      std::unique_ptr<DeviceMemory> memory)
      : owned_(std::move(owned)), host_(host), memory_(std::move(memory)) {
    ShareCounters(*host_);
  }
  ~StagingCommunicator() override {
    if (staging_ != nullptr) memory_->FreeHost(staging_);
  }

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  bool device_memory() const override { return true; }

  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                         const std::vector<int64_t>& recv_counts, int element_bytes,
                         CommKind kind) override {
    const int64_t send_bytes = Sum(send_counts) * element_bytes;
    const int64_t recv_bytes = Sum(recv_counts) * element_bytes;
    Staged s = Map({{send, send_bytes}, {recv, recv_bytes}});
    if (absl::Status st = In(s, 0); !st.ok()) return st;
    if (absl::Status st =
            host_->AllToAllV(s.host[0], send_counts, s.host[1], recv_counts, element_bytes, kind);
        !st.ok()) {
      return st;
    }
    return Out(s, 1);
  }

  absl::Status AllReduceSum(void* data, int64_t elements, int element_bytes,
                            CommKind kind) override {
    Staged s = Map({{data, elements * element_bytes}});
    if (absl::Status st = In(s, 0); !st.ok()) return st;
    if (absl::Status st = host_->AllReduceSum(s.host[0], elements, element_bytes, kind); !st.ok()) {
      return st;
    }
    return Out(s, 0);
  }

  absl::Status AllReduceMinInt64(int64_t* data, int64_t elements) override {
    Staged s = Map({{data, elements * 8}});
    if (absl::Status st = In(s, 0); !st.ok()) return st;
    if (absl::Status st = host_->AllReduceMinInt64(static_cast<int64_t*>(s.host[0]), elements);
        !st.ok()) {
      return st;
    }
    return Out(s, 0);
  }

  absl::Status AllGatherInt64(const int64_t* send, int64_t elements, int64_t* recv,
                              CommKind kind) override {
    Staged s = Map({{send, elements * 8}, {recv, elements * 8 * world_size()}});
    if (absl::Status st = In(s, 0); !st.ok()) return st;
    if (absl::Status st = host_->AllGatherInt64(static_cast<const int64_t*>(s.host[0]), elements,
                                                static_cast<int64_t*>(s.host[1]), kind);
        !st.ok()) {
      return st;
    }
    return Out(s, 1);
  }

  absl::Status Barrier() override { return host_->Barrier(); }

  absl::Status SendRecv(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                        CommKind kind) override {
    std::vector<P2POp> host_sends, host_recvs;
    Staged s = MapOps(sends, recvs, &host_sends, &host_recvs);
    for (size_t i = 0; i < sends.size(); ++i) {
      if (absl::Status st = In(s, i); !st.ok()) return st;
    }
    if (absl::Status st = host_->SendRecv(host_sends, host_recvs, kind); !st.ok()) return st;
    for (size_t i = 0; i < recvs.size(); ++i) {
      if (absl::Status st = Out(s, sends.size() + i); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  absl::Status SendRecvAccumulate(const std::vector<P2POp>& sends, const std::vector<P2POp>& sums,
                                  CommKind kind) override {
    for (const P2POp& op : sums) {
      if (op.bytes % 4 != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("accumulated chunk of ", op.bytes, " bytes is not float32"));
      }
    }
    std::vector<P2POp> host_sends, host_sums;
    // Every received chunk lands in staging, device destination or not: it is added, not stored.
    Staged s = MapOps(sends, sums, &host_sends, &host_sums, /*stage_all_recvs=*/true);
    for (size_t i = 0; i < sends.size(); ++i) {
      if (absl::Status st = In(s, i); !st.ok()) return st;
    }
    if (absl::Status st = host_->SendRecv(host_sends, host_sums, kind); !st.ok()) return st;
    for (size_t i = 0; i < sums.size(); ++i) {
      float* dst = static_cast<float*>(sums[i].data);
      const float* src = static_cast<const float*>(host_sums[i].data);
      const int64_t n = sums[i].bytes / 4;
      if (n == 0) continue;
      if (memory_->IsDevice(dst)) {
        if (absl::Status st = memory_->AddToDevice(dst, src, n); !st.ok()) return st;
      } else {
        for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> CreateLane() override {
    absl::StatusOr<std::unique_ptr<Communicator>> lane = host_->CreateLane();
    if (!lane.ok()) return lane.status();
    std::unique_ptr<DeviceMemory> lane_memory = memory_->ForLane();
    if (lane_memory == nullptr) {
      return absl::InternalError("cannot set up device memory for the communicator's lane");
    }
    Communicator* lane_host = lane->get();
    return std::make_unique<StagingCommunicator>(lane_host, *std::move(lane),
                                                 std::move(lane_memory));
  }

 private:
  struct Buffer {
    const void* data;
    int64_t bytes;
  };
  // Host stand-ins of a call's buffers: a slice of staging for each staged (device) one, the
  // buffer itself otherwise.
  struct Staged {
    std::vector<Buffer> buffers;
    std::vector<void*> host;
    std::vector<bool> staged;
  };

  Staged Map(std::vector<Buffer> buffers, size_t stage_all_from = SIZE_MAX) {
    Staged s;
    s.buffers = std::move(buffers);
    int64_t total = 0;
    for (size_t i = 0; i < s.buffers.size(); ++i) {
      const Buffer& b = s.buffers[i];
      const bool staged = b.bytes > 0 && (i >= stage_all_from || memory_->IsDevice(b.data));
      s.staged.push_back(staged);
      if (staged) total += Aligned(b.bytes);
    }
    Reserve(total);
    int64_t offset = 0;
    for (size_t i = 0; i < s.buffers.size(); ++i) {
      if (s.staged[i]) {
        s.host.push_back(staging_ + offset);
        offset += Aligned(s.buffers[i].bytes);
      } else {
        s.host.push_back(const_cast<void*>(s.buffers[i].data));
      }
    }
    return s;
  }

  // Sends first, then receives; the host batches keep peers and tags.
  Staged MapOps(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                std::vector<P2POp>* host_sends, std::vector<P2POp>* host_recvs,
                bool stage_all_recvs = false) {
    std::vector<Buffer> buffers;
    for (const P2POp& op : sends) buffers.push_back({op.data, op.bytes});
    for (const P2POp& op : recvs) buffers.push_back({op.data, op.bytes});
    Staged s = Map(std::move(buffers), stage_all_recvs ? sends.size() : SIZE_MAX);
    for (size_t i = 0; i < sends.size(); ++i) {
      host_sends->push_back({sends[i].peer, sends[i].tag, s.host[i], sends[i].bytes});
    }
    for (size_t i = 0; i < recvs.size(); ++i) {
      host_recvs->push_back(
          {recvs[i].peer, recvs[i].tag, s.host[sends.size() + i], recvs[i].bytes});
    }
    return s;
  }

  absl::Status In(const Staged& s, size_t i) {
    if (!s.staged[i]) return absl::OkStatus();
    return memory_->ToHost(s.host[i], s.buffers[i].data, s.buffers[i].bytes);
  }
  absl::Status Out(const Staged& s, size_t i) {
    if (!s.staged[i]) return absl::OkStatus();
    return memory_->ToDevice(const_cast<void*>(s.buffers[i].data), s.host[i], s.buffers[i].bytes);
  }

  void Reserve(int64_t bytes) {
    if (bytes <= capacity_) return;
    if (staging_ != nullptr) memory_->FreeHost(staging_);
    // Grow geometrically: the MoE layers' calls vary in size from one iteration to the next.
    capacity_ = std::max(bytes, capacity_ * 2);
    staging_ = static_cast<char*>(memory_->AllocateHost(capacity_));
  }

  std::unique_ptr<Communicator> owned_;
  Communicator* host_;
  std::unique_ptr<DeviceMemory> memory_;
  char* staging_ = nullptr;
  int64_t capacity_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> CreateStagingCommunicator(Communicator* host,
                                                        std::unique_ptr<DeviceMemory> memory) {
  return std::make_unique<StagingCommunicator>(host, nullptr, std::move(memory));
}

}  // namespace hecate::worker
