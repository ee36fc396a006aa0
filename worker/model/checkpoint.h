// Checkpoints of a training run: every rank writes its shard (dense parameters and Adam state,
// its owned experts' parameters and Adam state) plus the plan they were saved under and the data
// position (the next iteration; batches are a pure function of the iteration) into
// DIR/step-N/rank-R.pt. Each file is written to a temporary name and renamed; after a barrier
// rank 0 atomically points DIR/latest at step N. A crash at any moment leaves `latest` naming a
// complete checkpoint. The sampler has no RNG state beyond the seed: (seed, iteration) is enough.
#ifndef HECATE_WORKER_MODEL_CHECKPOINT_H_
#define HECATE_WORKER_MODEL_CHECKPOINT_H_

#include <string>

#include "absl/status/statusor.h"
#include "placement/plan.h"
#include "worker/comm/communicator.h"
#include "worker/model/trainer.h"

namespace hecate::worker {

// Collective (a barrier). Keeps the newest `keep` checkpoints.
absl::Status SaveCheckpoint(const std::string& dir, uint64_t next_iteration, Trainer& trainer,
                            const placement::Plan& plan, Communicator& comm, int keep = 2);

struct CheckpointInfo {
  uint64_t next_iteration = 0;
  placement::Plan plan;
};

// Reads DIR/latest and the plan saved with it. NOT_FOUND when there is no checkpoint,
// FAILED_PRECONDITION when it was written by a different world size.
absl::StatusOr<CheckpointInfo> ReadCheckpointInfo(const std::string& dir, int world_size);
// Loads this rank's shard. Precondition: trainer.ApplyPlan(info.plan) was called.
absl::Status RestoreCheckpoint(const std::string& dir, const CheckpointInfo& info, int rank,
                               Trainer& trainer);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_MODEL_CHECKPOINT_H_
