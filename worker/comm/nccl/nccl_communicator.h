// Communicator over NCCL (GPU workers): the Communicator interface on top of NcclGroup.
//
// * AllToAllV: grouped ncclSend/ncclRecv, one ncclGroupStart/End (p2p_schedule.h).
// * SendRecv, hence SparseAllGather: one ncclGroupStart/End per call.
// * SparseReduceScatter: one group receiving into device staging, then AccumulateChunks
//   (kernels/cuda) adds each chunk into its owner's gradient in a fixed order.
// * AllReduceSum / AllReduceMinInt64 / AllGatherInt64 / Barrier: ncclAllReduce / ncclAllGather.
//
// Buffers may be device memory (used in place) or host memory (small control values such as the
// plan agreement's AllReduceMin): host buffers are staged through device memory, detected with
// cudaPointerGetAttributes. Work runs on the group's own stream; errors and timeouts come back as
// absl::Status (DEADLINE_EXCEEDED, UNAVAILABLE after an abort), never as a hang.
#ifndef HECATE_WORKER_COMM_NCCL_NCCL_COMMUNICATOR_H_
#define HECATE_WORKER_COMM_NCCL_NCCL_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

struct NcclOptions {
  int device = 0;  // CUDA device of this rank (usually LOCAL_RANK)
  absl::Duration timeout = absl::Seconds(60);
};

// Bootstraps over `bootstrap` (any communicator of the same ranks, e.g. Gloo): rank 0 makes the
// ncclUniqueId and every rank receives it through an AllGatherInt64.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Communicator& bootstrap,
                                                                     const NcclOptions& options);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_COMM_NCCL_NCCL_COMMUNICATOR_H_
