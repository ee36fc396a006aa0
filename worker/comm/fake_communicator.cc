#include "worker/comm/fake_communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace hecate::worker {

namespace {

constexpr uint64_t kCollective = uint64_t{1} << 63;
// Keys carry their communicator's channel (0: the group's; k: its k-th lane) in bits 48-62, so a
// lane's messages never match another channel's.
constexpr int kChannelShift = 48;

class FakeCommunicator : public Communicator {
 public:
  FakeCommunicator(InProcessGroup* group, int rank, uint64_t channel = 0,
                   std::shared_ptr<CommCounters> counters = nullptr)
      : group_(group), rank_(rank), channel_(channel) {
    if (counters != nullptr) counters_ = std::move(counters);
  }
  int rank() const override { return rank_; }
  int world_size() const override { return group_->world_size(); }

  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                         const std::vector<int64_t>& recv_counts, int element_bytes,
                         CommKind kind) override {
    const uint64_t key = NextKey();
    const char* s = static_cast<const char*>(send);
    char* r = static_cast<char*>(recv);
    int64_t sent = 0, received = 0;
    std::vector<int64_t> send_off(world_size(), 0), recv_off(world_size(), 0);
    for (int d = 1; d < world_size(); ++d) {
      send_off[d] = send_off[d - 1] + send_counts[d - 1] * element_bytes;
      recv_off[d] = recv_off[d - 1] + recv_counts[d - 1] * element_bytes;
    }
    for (int d = 0; d < world_size(); ++d) {
      const int64_t bytes = send_counts[d] * element_bytes;
      if (d == rank_) {
        if (bytes > 0) std::memcpy(r + recv_off[d], s + send_off[d], bytes);
        continue;
      }
      group_->Post(rank_, d, key, s + send_off[d], bytes);
      sent += bytes;
    }
    for (int src = 0; src < world_size(); ++src) {
      if (src == rank_) continue;
      const int64_t bytes = recv_counts[src] * element_bytes;
      if (absl::Status st = group_->Take(src, rank_, key, r + recv_off[src], bytes); !st.ok()) {
        return st;
      }
      received += bytes;
    }
    counters_->Add(kind, sent, received);
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(void* data, int64_t elements, int element_bytes,
                            CommKind kind) override {
    std::vector<char> all;
    if (absl::Status s = Gather(data, elements * element_bytes, &all, kind); !s.ok()) return s;
    // Sum in rank order on every rank: bitwise identical results everywhere.
    const int64_t stride = elements * element_bytes;
    if (element_bytes == 8) {
      double* out = static_cast<double*>(data);
      for (int64_t i = 0; i < elements; ++i) {
        double acc = 0;
        for (int r = 0; r < world_size(); ++r) {
          acc += reinterpret_cast<const double*>(all.data() + r * stride)[i];
        }
        out[i] = acc;
      }
    } else {
      float* out = static_cast<float*>(data);
      for (int64_t i = 0; i < elements; ++i) {
        float acc = 0;
        for (int r = 0; r < world_size(); ++r) {
          acc += reinterpret_cast<const float*>(all.data() + r * stride)[i];
        }
        out[i] = acc;
      }
    }
    return absl::OkStatus();
  }

  absl::Status AllReduceMinInt64(int64_t* data, int64_t elements) override {
    std::vector<char> all;
    if (absl::Status s = Gather(data, elements * 8, &all, CommKind::kControl); !s.ok()) return s;
    for (int64_t i = 0; i < elements; ++i) {
      for (int r = 0; r < world_size(); ++r) {
        data[i] =
            std::min(data[i], reinterpret_cast<const int64_t*>(all.data() + r * elements * 8)[i]);
      }
    }
    return absl::OkStatus();
  }

  absl::Status AllGatherInt64(const int64_t* send, int64_t elements, int64_t* recv,
                              CommKind kind) override {
    std::vector<char> all;
    if (absl::Status s = Gather(send, elements * 8, &all, kind); !s.ok()) return s;
    std::memcpy(recv, all.data(), all.size());
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    int64_t one = 1;
    std::vector<char> all;
    return Gather(&one, 8, &all, CommKind::kControl);
  }

  absl::Status SendRecv(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                        CommKind kind) override {
    int64_t sent = 0, received = 0;
    for (const P2POp& op : sends) {
      group_->Post(rank_, op.peer, Channel(op.tag), op.data, op.bytes);
      sent += op.bytes;
    }
    for (const P2POp& op : recvs) {
      if (absl::Status s = group_->Take(op.peer, rank_, Channel(op.tag), op.data, op.bytes);
          !s.ok()) {
        return s;
      }
      received += op.bytes;
    }
    counters_->Add(kind, sent, received);
    return absl::OkStatus();
  }

  // Every rank's k-th lane is channel k: ranks create lanes in the same order.
  absl::StatusOr<std::unique_ptr<Communicator>> CreateLane() override {
    const uint64_t channel = channel_ * 16 + ++lanes_;
    return std::unique_ptr<Communicator>(new FakeCommunicator(group_, rank_, channel, counters_));
  }

 private:
  uint64_t Channel(uint64_t key) const { return (channel_ << kChannelShift) | key; }
  uint64_t NextKey() { return kCollective | Channel(seq_++); }

  // Every rank's `bytes` bytes, concatenated in rank order.
  absl::Status Gather(const void* data, int64_t bytes, std::vector<char>* all, CommKind kind) {
    const uint64_t key = NextKey();
    all->assign(bytes * world_size(), 0);
    if (bytes > 0) std::memcpy(all->data() + rank_ * bytes, data, bytes);
    for (int d = 0; d < world_size(); ++d) {
      if (d != rank_) group_->Post(rank_, d, key, data, bytes);
    }
    for (int s = 0; s < world_size(); ++s) {
      if (s == rank_) continue;
      if (absl::Status st = group_->Take(s, rank_, key, all->data() + s * bytes, bytes); !st.ok()) {
        return st;
      }
    }
    counters_->Add(kind, bytes * (world_size() - 1), bytes * (world_size() - 1));
    return absl::OkStatus();
  }

  InProcessGroup* group_;
  int rank_;
  const uint64_t channel_;
  uint64_t lanes_ = 0;
  uint64_t seq_ = 0;
};

}  // namespace

InProcessGroup::InProcessGroup(int world_size, absl::Duration timeout) : timeout_(timeout) {
  dead_.assign(world_size, false);
  for (int r = 0; r < world_size; ++r)
    comms_.push_back(std::make_unique<FakeCommunicator>(this, r));
}

void InProcessGroup::Kill(int r) {
  absl::MutexLock lock(&mu_);
  dead_[r] = true;
}

void InProcessGroup::Post(int src, int dst, uint64_t key, const void* data, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  const char* p = static_cast<const char*>(data);
  mail_[{src, dst, key}].emplace_back(p, p + bytes);
}

absl::Status InProcessGroup::Take(int src, int dst, uint64_t key, void* data, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  const auto k = std::make_tuple(src, dst, key);
  auto ready = [&]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return mail_.count(k) > 0 || dead_[src]; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout_)) {
    return absl::DeadlineExceededError(
        absl::StrCat("rank ", dst, ": timed out waiting for rank ", src));
  }
  auto it = mail_.find(k);
  if (it == mail_.end()) {
    return absl::UnavailableError(absl::StrCat("rank ", dst, ": peer rank ", src, " died"));
  }
  std::vector<char>& message = it->second.front();
  if (static_cast<int64_t>(message.size()) != bytes) {
    return absl::InternalError(absl::StrCat("rank ", dst, ": expected ", bytes, " bytes from ", src,
                                            ", got ", message.size()));
  }
  if (bytes > 0) std::memcpy(data, message.data(), bytes);  // data may be null when empty
  it->second.pop_front();
  if (it->second.empty()) mail_.erase(it);
  return absl::OkStatus();
}

}  // namespace hecate::worker
