// Construction of the grouped send/receive schedules the NCCL communicator issues, kept free of
// CUDA, NCCL and Abseil so it is built and tested on every machine (and by
// kernels/tools/gpu_check.sh without Bazel).
//
// NCCL matches the sends and receives between two ranks in the order they are issued inside a
// group; it has no tags. Both sides therefore issue each peer's transfers sorted by tag, which
// pairs them exactly when the tags agree (the Communicator contract). Self transfers never reach
// NCCL: they become local copies. Zero-byte transfers are dropped on both sides.
#ifndef HECATE_WORKER_COMM_NCCL_P2P_SCHEDULE_H_
#define HECATE_WORKER_COMM_NCCL_P2P_SCHEDULE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace hecate::worker::nccl {

struct Transfer {
  int peer = 0;
  uint32_t tag = 0;
  void* data = nullptr;
  int64_t bytes = 0;
};

struct LocalCopy {
  const void* src = nullptr;
  void* dst = nullptr;
  int64_t bytes = 0;
};

// One ncclGroupStart/End worth of work, in issue order.
struct GroupSchedule {
  struct Op {
    bool send = false;
    Transfer transfer;
  };
  std::vector<Op> ops;
  std::vector<LocalCopy> copies;
  int64_t bytes_sent = 0;  // over NCCL, excluding local copies
  int64_t bytes_received = 0;
};

// Orders a batch of sends and receives for `rank` in a group of `world`. Returns an empty string,
// or a message naming the first problem: a peer out of range, negative bytes, a (direction, peer,
// tag) used twice, a self send without its self receive (or with a different size).
std::string BuildBatch(int rank, int world, const std::vector<Transfer>& sends,
                       const std::vector<Transfer>& recvs, GroupSchedule* out);

// AllToAllV as a batch: rank sends send_counts[d] elements (consecutive in `send`, by destination)
// and receives recv_counts[s] (consecutive in `recv`, by source). Counts must have `world` entries,
// be non-negative, and send_counts[rank] must equal recv_counts[rank].
std::string BuildAllToAllV(int rank, int world, const void* send,
                           const std::vector<int64_t>& send_counts, void* recv,
                           const std::vector<int64_t>& recv_counts, int element_bytes,
                           GroupSchedule* out);

}  // namespace hecate::worker::nccl

#endif  // HECATE_WORKER_COMM_NCCL_P2P_SCHEDULE_H_
