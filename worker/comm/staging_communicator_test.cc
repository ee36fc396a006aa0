// The staging communicator over the in-process fake, with a fake device: "device" buffers are host
// memory the fake registers, and a checking layer fails any call that hands the host communicator
// one of them. Covers every call, the sparse collectives and the replicas' all-reduce (results
// equal to the host communicator's, bitwise), pass-through of host buffers, and lanes.
#include "worker/comm/staging_communicator.h"

#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <thread>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "placement/synthetic.h"
#include "worker/comm/fake_communicator.h"

namespace hecate::worker {
namespace {

// The "device" allocations of all ranks (shared, since ranks run on threads of one process).
class Arena {
 public:
  float* Allocate(int64_t elements) {
    auto buffer = std::make_unique<float[]>(elements);
    float* p = buffer.get();
    absl::MutexLock lock(&mu_);
    buffers_[p] = {std::move(buffer), elements * 4};
    return p;
  }
  bool Contains(const void* p) const {
    absl::MutexLock lock(&mu_);
    auto it = buffers_.upper_bound(static_cast<const char*>(p));
    if (it == buffers_.begin()) return false;
    --it;
    const char* base = reinterpret_cast<const char*>(it->first);
    return static_cast<const char*>(p) < base + it->second.bytes;
  }

 private:
  struct Buffer {
    std::unique_ptr<float[]> data;
    int64_t bytes;
  };
  mutable absl::Mutex mu_;
  std::map<const void*, Buffer, std::less<>> buffers_ ABSL_GUARDED_BY(mu_);
};

class FakeDeviceMemory : public DeviceMemory {
 public:
  explicit FakeDeviceMemory(Arena* arena, int64_t* staged) : arena_(arena), staged_(staged) {}
  bool IsDevice(const void* p) const override { return arena_->Contains(p); }
  absl::Status ToHost(void* host, const void* device, int64_t bytes) override {
    if (!IsDevice(device) || IsDevice(host)) return absl::InternalError("ToHost: wrong sides");
    std::memcpy(host, device, bytes);
    *staged_ += bytes;
    return absl::OkStatus();
  }
  absl::Status ToDevice(void* device, const void* host, int64_t bytes) override {
    if (!IsDevice(device) || IsDevice(host)) return absl::InternalError("ToDevice: wrong sides");
    std::memcpy(device, host, bytes);
    *staged_ += bytes;
    return absl::OkStatus();
  }
  absl::Status AddToDevice(float* device, const float* host, int64_t elements) override {
    if (!IsDevice(device) || IsDevice(host)) return absl::InternalError("Add: wrong sides");
    for (int64_t i = 0; i < elements; ++i) device[i] += host[i];
    *staged_ += elements * 4;
    return absl::OkStatus();
  }
  void* AllocateHost(int64_t bytes) override { return ::operator new(bytes); }
  void FreeHost(void* p) override { ::operator delete(p); }
  std::unique_ptr<DeviceMemory> ForLane() const override {
    return std::make_unique<FakeDeviceMemory>(arena_, staged_);
  }

 private:
  Arena* arena_;
  int64_t* staged_;  // bytes copied either way (one counter per rank, one thread per rank)
};

// Forwards to `inner`, failing any call given a "device" buffer: the host side must never see one.
class HostOnly : public Communicator {
 public:
  HostOnly(Communicator* inner, const Arena* arena) : inner_(inner), arena_(arena) {
    ShareCounters(*inner);
  }
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& sc, void* recv,
                         const std::vector<int64_t>& rc, int eb, CommKind kind) override {
    if (absl::Status s = Host({send, recv}); !s.ok()) return s;
    return inner_->AllToAllV(send, sc, recv, rc, eb, kind);
  }
  absl::Status AllReduceSum(void* data, int64_t n, int eb, CommKind kind) override {
    if (absl::Status s = Host({data}); !s.ok()) return s;
    return inner_->AllReduceSum(data, n, eb, kind);
  }
  absl::Status AllReduceMinInt64(int64_t* data, int64_t n) override {
    if (absl::Status s = Host({data}); !s.ok()) return s;
    return inner_->AllReduceMinInt64(data, n);
  }
  absl::Status AllGatherInt64(const int64_t* send, int64_t n, int64_t* recv,
                              CommKind kind) override {
    if (absl::Status s = Host({send, recv}); !s.ok()) return s;
    return inner_->AllGatherInt64(send, n, recv, kind);
  }
  absl::Status Barrier() override { return inner_->Barrier(); }
  absl::StatusOr<std::unique_ptr<Communicator>> CreateLane() override {
    absl::StatusOr<std::unique_ptr<Communicator>> lane = inner_->CreateLane();
    if (!lane.ok()) return lane.status();
    auto checked = std::make_unique<HostOnly>(lane->get(), arena_);
    checked->owned_ = *std::move(lane);
    return checked;
  }
  absl::Status SendRecv(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                        CommKind kind) override {
    for (const auto* batch : {&sends, &recvs}) {
      for (const P2POp& op : *batch) {
        if (op.bytes == 0) continue;  // never dereferenced
        if (absl::Status s = Host({op.data}); !s.ok()) return s;
      }
    }
    return inner_->SendRecv(sends, recvs, kind);
  }

 private:
  absl::Status Host(std::initializer_list<const void*> buffers) const {
    for (const void* p : buffers) {
      if (arena_->Contains(p)) return absl::InternalError("a device buffer reached the host side");
    }
    return absl::OkStatus();
  }
  Communicator* inner_;
  const Arena* arena_;
  std::unique_ptr<Communicator> owned_;  // a lane's host communicator
};

void OnRanks(int world, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back([&, r] { fn(r); });
  for (auto& t : threads) t.join();
}

struct Staging {
  explicit Staging(int world) : group(world), staged(world, 0) {
    for (int r = 0; r < world; ++r) {
      hosts.push_back(std::make_unique<HostOnly>(group.rank(r), &arena));
      comms.push_back(CreateStagingCommunicator(
          hosts.back().get(), std::make_unique<FakeDeviceMemory>(&arena, &staged[r])));
    }
  }
  Arena arena;
  InProcessGroup group;
  std::vector<int64_t> staged;
  std::vector<std::unique_ptr<Communicator>> hosts;
  std::vector<std::unique_ptr<Communicator>> comms;
};

TEST(StagingCommunicatorTest, DenseCallsOnDeviceBuffersMatchAndStage) {
  constexpr int kWorld = 3;
  Staging st(kWorld);
  OnRanks(kWorld, [&](int r) {
    Communicator& c = *st.comms[r];
    EXPECT_TRUE(c.device_memory());
    // All-to-all: rank r sends (d + 1) elements to rank d, valued 100 r + d.
    std::vector<int64_t> sc(kWorld), rc(kWorld);
    for (int d = 0; d < kWorld; ++d) sc[d] = d + 1, rc[d] = r + 1;
    float* send = st.arena.Allocate(std::accumulate(sc.begin(), sc.end(), int64_t{0}));
    float* recv = st.arena.Allocate(int64_t{kWorld} * (r + 1));
    for (int d = 0, i = 0; d < kWorld; ++d) {
      for (int j = 0; j <= d; ++j) send[i++] = 100.0f * r + d;
    }
    ASSERT_TRUE(c.AllToAllV(send, sc, recv, rc, 4, CommKind::kAllToAll).ok());
    for (int s = 0, i = 0; s < kWorld; ++s) {
      for (int j = 0; j <= r; ++j) EXPECT_EQ(recv[i++], 100.0f * s + r);
    }
    // All-reduce on a device buffer; control values on host buffers pass through.
    float* x = st.arena.Allocate(4);
    for (int i = 0; i < 4; ++i) x[i] = r + i;
    ASSERT_TRUE(c.AllReduceSum(x, 4, 4, CommKind::kAllReduce).ok());
    for (int i = 0; i < 4; ++i) EXPECT_EQ(x[i], 3.0f + kWorld * i);
    const int64_t before = st.staged[r];
    int64_t m[2] = {r, -r};
    ASSERT_TRUE(c.AllReduceMinInt64(m, 2).ok());
    EXPECT_EQ(m[0], 0);
    EXPECT_EQ(m[1], -(kWorld - 1));
    std::vector<int64_t> all(kWorld);
    const int64_t mine = 7 * r;
    ASSERT_TRUE(c.AllGatherInt64(&mine, 1, all.data(), CommKind::kControl).ok());
    for (int s = 0; s < kWorld; ++s) EXPECT_EQ(all[s], 7 * s);
    EXPECT_EQ(st.staged[r], before);  // host buffers were not staged
    ASSERT_TRUE(c.Barrier().ok());
  });
  // Staged: the all-to-all's send and receive (6 + 3 (r + 1) floats) and the all-reduce (4 floats
  // in and out), per rank.
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(st.staged[r], (6 + 3 * (r + 1) + 8) * 4);
  // Payload bytes are the host communicator's: the staging copies are not counted.
  EXPECT_EQ(st.comms[0]->counters().sent(CommKind::kAllToAll), (2 + 3) * 4);
}

// SparseAllGather, SparseReduceScatter (SendRecvAccumulate) and ReplicaAllReduce on device chunks
// give bitwise the results the host communicator gives on host chunks.
TEST(StagingCommunicatorTest, SparseCollectivesEqualTheHostCommunicators) {
  placement::Rng rng(11);
  for (int trial = 0; trial < 12; ++trial) {
    const int world = 2 + static_cast<int>(rng.Below(3));
    const int experts = 1 + static_cast<int>(rng.Below(6));
    const int chunk = 1 + static_cast<int>(rng.Below(7));
    placement::LayerPlan layer;
    for (int e = 0; e < experts; ++e) {
      const int owner = static_cast<int>(rng.Below(world));
      layer.owner.push_back(owner);
      std::vector<int> holders;
      for (int d = 0; d < world; ++d) {
        if (d == owner || rng.Below(2) == 0) holders.push_back(d);
      }
      layer.replicas.push_back(holders);
    }
    // Values with rounding in their sums, so an order change would show.
    auto value = [](int r, int e, int i) { return 0.1f * (r + 1) + 1.7f * e + 0.013f * i; };
    // Rank r's three buffers (parameters, gradients, replica gradients, experts * chunk floats
    // each) filled, then gathered, reduce-scattered and all-reduced over `c`.
    auto run = [&](Communicator& c, int r, float* params, float* grads, float* rep) {
      for (int e = 0; e < experts; ++e) {
        for (int i = 0; i < chunk; ++i) {
          params[e * chunk + i] = layer.owner[e] == r ? value(r, e, i) : -1;
          grads[e * chunk + i] = rep[e * chunk + i] = value(r, e, i);
        }
      }
      auto access = [&](float* base) {
        return ChunkAccess{[base, chunk](int e) { return static_cast<void*>(base + e * chunk); },
                           chunk * 4};
      };
      const SparseSchedule sched = BuildSparseSchedule(layer, r);
      if (absl::Status s = SparseAllGather(c, sched, access(params), 0); !s.ok()) return s;
      if (absl::Status s = SparseReduceScatter(c, sched, access(grads), 4, 1 << 20); !s.ok()) {
        return s;
      }
      return ReplicaAllReduce(c, layer, access(rep), 4, 1 << 22);
    };
    const size_t n = static_cast<size_t>(experts) * chunk;
    std::vector<std::vector<float>> want(3 * world, std::vector<float>(n));
    InProcessGroup host(world);
    OnRanks(world, [&](int r) {
      const absl::Status s =
          run(*host.rank(r), r, want[3 * r].data(), want[3 * r + 1].data(), want[3 * r + 2].data());
      ASSERT_TRUE(s.ok()) << s;
    });
    Staging st(world);
    OnRanks(world, [&](int r) {
      float* got[3] = {st.arena.Allocate(n), st.arena.Allocate(n), st.arena.Allocate(n)};
      const absl::Status s = run(*st.comms[r], r, got[0], got[1], got[2]);
      ASSERT_TRUE(s.ok()) << s;
      for (int k = 0; k < 3; ++k) {
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(got[k][i], want[3 * r + k][i]) << "trial " << trial << " rank " << r;
        }
      }
    });
  }
}

TEST(StagingCommunicatorTest, LanesStageToo) {
  Staging st(2);
  std::vector<std::unique_ptr<Communicator>> lanes(2);
  OnRanks(2, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> lane = st.comms[r]->CreateLane();
    ASSERT_TRUE(lane.ok()) << lane.status();
    EXPECT_TRUE((*lane)->device_memory());
    float* x = st.arena.Allocate(3);
    for (int i = 0; i < 3; ++i) x[i] = r * 10 + i;
    ASSERT_TRUE((*lane)->AllReduceSum(x, 3, 4, CommKind::kSparseAllGather).ok());
    for (int i = 0; i < 3; ++i) EXPECT_EQ(x[i], 10 + 2 * i);
    lanes[r] = *std::move(lane);
  });
  // The lane's bytes count in the parent's counters, as a host lane's do.
  EXPECT_GT(st.comms[0]->counters().sent(CommKind::kSparseAllGather), 0);
}

TEST(StagingCommunicatorTest, AccumulatingNonFloatChunksIsAnError) {
  Staging st(1);
  float* x = st.arena.Allocate(1);
  absl::Status s = st.comms[0]->SendRecvAccumulate({}, {{0, 1, x, 3}}, CommKind::kControl);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace hecate::worker
