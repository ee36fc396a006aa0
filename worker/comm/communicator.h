// The collectives a worker needs (DESIGN.md §6), behind one interface with three implementations:
// Gloo over TCP (CPU), NCCL (GPU, worker/comm/nccl) and an in-process fake for unit tests.
//
// Buffers are raw bytes plus an element size, so the same calls carry float32, float64 or int64.
// Every call is collective over the group unless noted; errors (a peer dying, a timeout) come back
// as absl::Status, never as an abort. Byte counters per collective kind count payload bytes that
// leave (sent) and arrive (received) at this rank; local copies are not counted.
//
// Thread-compatibility: one thread drives a communicator at a time; counters are atomic and may
// be read from any thread. Work that must run concurrently with a thread's blocking calls goes to
// a lane (CreateLane, worker/comm/async_lane.h): a second communicator of the same ranks with its
// own connections, sharing this one's byte counters.
#ifndef HECATE_WORKER_COMM_COMMUNICATOR_H_
#define HECATE_WORKER_COMM_COMMUNICATOR_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/plan.h"

namespace hecate::worker {

enum class CommKind {
  kAllToAll = 0,
  kSparseAllGather,
  kSparseReduceScatter,
  kAllReduce,
  kAllGather,
  kMigration,
  kControl,  // barriers, plan agreement
  kCount,
};
const char* CommKindName(CommKind k);

class CommCounters {
 public:
  void Add(CommKind k, int64_t sent, int64_t received) {
    sent_[static_cast<int>(k)] += sent;
    received_[static_cast<int>(k)] += received;
  }
  int64_t sent(CommKind k) const { return sent_[static_cast<int>(k)].load(); }
  int64_t received(CommKind k) const { return received_[static_cast<int>(k)].load(); }

 private:
  std::array<std::atomic<int64_t>, static_cast<int>(CommKind::kCount)> sent_{};
  std::array<std::atomic<int64_t>, static_cast<int>(CommKind::kCount)> received_{};
};

// One point-to-point transfer of a batch. `tag` must be unique among the batch's transfers
// between the same two ranks and equal on both sides.
struct P2POp {
  int peer = 0;
  uint32_t tag = 0;
  void* data = nullptr;
  int64_t bytes = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Rank r sends send_counts[d] elements to rank d (consecutive in `send`, by destination) and
  // receives recv_counts[s] elements from rank s (consecutive in `recv`, by source).
  virtual absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts,
                                 void* recv, const std::vector<int64_t>& recv_counts,
                                 int element_bytes, CommKind kind = CommKind::kAllToAll) = 0;
  // In-place sum over ranks, float32 or float64 (`element_bytes` 4 or 8).
  virtual absl::Status AllReduceSum(void* data, int64_t elements, int element_bytes,
                                    CommKind kind = CommKind::kAllReduce) = 0;
  // In-place elementwise minimum of int64 values over ranks.
  virtual absl::Status AllReduceMinInt64(int64_t* data, int64_t elements) = 0;
  // recv (world_size * elements) = every rank's `send` (elements), in rank order.
  virtual absl::Status AllGatherInt64(const int64_t* send, int64_t elements, int64_t* recv,
                                      CommKind kind = CommKind::kAllGather) = 0;
  virtual absl::Status Barrier() = 0;
  // Runs every send and receive of the batch concurrently and returns when all completed.
  virtual absl::Status SendRecv(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                                CommKind kind) = 0;

  // True when the buffers of every call are CUDA device memory (the NCCL communicator); the
  // sparse reduce-scatter then receives and sums on the device through AccumulateChunks.
  virtual bool device_memory() const { return false; }
  // Device-memory communicators only: runs `sends` and receives every `sums` entry into device
  // staging, then adds each into its `data` (float32) in the given order. Collective like SendRecv.
  virtual absl::Status SendRecvAccumulate(const std::vector<P2POp>& sends,
                                          const std::vector<P2POp>& sums, CommKind kind);

  // Collective: a new communicator of the same ranks with its own connections (and, on NCCL, its
  // own stream), counting its bytes into this one's counters. Its calls never wait behind this
  // one's, so another thread may drive it concurrently. UNIMPLEMENTED where unsupported.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> CreateLane();

  const CommCounters& counters() const { return *counters_; }

 protected:
  // Counts this communicator's bytes into `other`'s counters (a wrapper around `other`).
  void ShareCounters(const Communicator& other) { counters_ = other.counters_; }
  // Shared with the lanes created from this communicator.
  std::shared_ptr<CommCounters> counters_ = std::make_shared<CommCounters>();
};

// The sparse collectives of one layer from this rank's point of view, on the relay tree of
// placement/sparse_tree.h (two phases; the cost model charges the same transfers):
//   spAG: phase 0, owners send each copied expert's chunk to its holders on their own node and to
//         one relay on every other node holding it; phase 1, relays forward it to the other
//         holders on their node;
//   spRS: the same edges upwards, phase 1 first: relays sum their node's gradient chunks into
//         theirs, then owners sum their children's.
// Bytes moved = sum over experts of (holders - 1) x chunk bytes, nothing else; across nodes one
// chunk per (expert, node).
struct SparseSchedule {
  struct Transfer {
    placement::ExpertId expert;
    int peer;  // the other side: the parent (on a receiver) or a child (on a sender)
  };
  // Per phase: the chunks this rank sends down the tree (to a child) and receives (from its
  // parent).
  std::array<std::vector<Transfer>, 2> sends, recvs;
};

// Pure: the schedule for `rank` under `layer` (also what the NCCL path groups into one
// ncclGroupStart/End per phase). `cluster` null: every rank on one node (flat: owner -> holders).
SparseSchedule BuildSparseSchedule(const placement::LayerPlan& layer, int rank,
                                   const placement::Cluster* cluster = nullptr);

// Callbacks giving the chunk of an expert on this rank (parameters for spAG, gradients for spRS)
// and a staging buffer for an incoming gradient chunk.
struct ChunkAccess {
  std::function<void*(placement::ExpertId)> chunk;
  int64_t chunk_bytes = 0;
};

// SparseAllGather over `comm`: owners' chunks land in the holders' chunk buffers.
absl::Status SparseAllGather(Communicator& comm, const SparseSchedule& schedule,
                             const ChunkAccess& params, uint32_t tag_base);
// SparseReduceScatter over `comm`: holders' gradient chunks are summed into the owner's, as float
// (`element_bytes` 4) or double (8), through the relays (whose own gradient chunks end up holding
// their node's sum). Staging memory: one chunk per incoming transfer of a phase.
absl::Status SparseReduceScatter(Communicator& comm, const SparseSchedule& schedule,
                                 const ChunkAccess& grads, int element_bytes, uint32_t tag_base);

// The gradient AllReduce of persistent replicas (FlexMoE, SmartMoE, EPLB: every holder keeps the
// expert's parameters and optimizer state): for each expert held by two or more ranks, its
// holders sum their gradient chunks with a ring (a reduce-scatter then an all-gather over the
// holders in ascending order, the chunk split in one segment per holder), so every member moves
// 2(n-1)/n of a chunk each way, and every holder ends with bitwise the same sum. Bytes count as
// CommKind::kSparseReduceScatter. Runs the rings of every expert this rank holds together, one
// batch per ring step.
absl::Status ReplicaAllReduce(Communicator& comm, const placement::LayerPlan& layer,
                              const ChunkAccess& grads, int element_bytes, uint32_t tag_base);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_COMM_COMMUNICATOR_H_
