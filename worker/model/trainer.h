// The GPT-MoE trainer used by `hecate run` and `hecate-worker`: token + position embedding, N
// pre-LN blocks of causal self-attention and an FSSDP MoE FFN (top-k softmax gate, optional
// auxiliary balance loss), final LayerNorm and LM head; byte-level language modelling over a text
// file. Dense parameters are data-parallel (gradients AllReduced); experts are FSSDP-sharded.
//
// Gradient semantics (DESIGN.md §7): each rank's loss is its token NLL sum divided by the GLOBAL
// token count, so dense gradients are summed (not averaged) across ranks and expert gradients are
// summed over replicas: both equal the single-process gradient on the global batch. A world of one
// rank with batch B x W is therefore the exact reference for W ranks of batch B.
//
// This header includes <torch/torch.h>: include it only from worker/model and worker main files.
#ifndef HECATE_WORKER_MODEL_TRAINER_H_
#define HECATE_WORKER_MODEL_TRAINER_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cost_model.h"
#include "placement/plan.h"
#include "worker/comm/communicator.h"
#include "worker/fssdp/moe_layer.h"
#include "worker/model/trainer_config.h"

namespace hecate::worker {

// The placement model of this network (expert sizes, FLOPs per token, token bytes).
placement::ModelSpec PlacementModelFor(const TrainerConfig& config);

// Byte-level text: sample g of the run reads a window at a position derived from (seed, g), so a
// rank's batch depends only on (iteration, rank, world, batch).
class TextData {
 public:
  // NOT_FOUND if the file is missing, FAILED_PRECONDITION if it is shorter than seq_len + 2.
  static absl::StatusOr<TextData> Load(const std::string& path, int seq_len);
  // Input and target token ids [batch, seq_len] for this rank.
  std::pair<torch::Tensor, torch::Tensor> Batch(uint64_t iteration, int rank, int world, int batch,
                                                uint64_t seed) const;
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }

 private:
  std::vector<uint8_t> bytes_;
  int seq_len_ = 0;
};

// Seconds per phase of one step on this rank. spag/sprs: what the sparse collectives took;
// spag_exposed/sprs_exposed: what the training thread waited for them.
struct PhaseTimes {
  double attention = 0, gate = 0, dispatch = 0, expert = 0, combine = 0, spag = 0, sprs = 0,
         spag_exposed = 0, sprs_exposed = 0, optimizer = 0, dense_allreduce = 0, step = 0;
};

struct StepResult {
  double loss = 0;     // global mean token NLL (+ aux loss)
  int64_t tokens = 0;  // global tokens this iteration
  PhaseTimes times;
  // This rank's tokens per expert, per layer; and the global matrices (identical on all ranks).
  std::vector<std::vector<int64_t>> local_counts;
  placement::ModelLoad global_counts;
  int calibration_copies = 0;   // copies calibration gathered, all layers
  int calibration_dropped = 0;  // planned copies it gave up for them
  int64_t peak_copy_bytes = 0;  // most bytes of materialized copies held at once this step
};

class Trainer {
 public:
  // `cluster` describes the ranks; `cost` (may be null) enables calibration; `lane` (may be null)
  // runs the sparse collectives asynchronously, overlapped with compute (docs/cost-model.md,
  // "Schedule"); without one they run blocking: every spAG at the start of the step, every spRS
  // after the whole backward. All outlive this.
  Trainer(const TrainerConfig& config, Communicator* comm, const placement::Cluster* cluster,
          const placement::CostModel* cost, TextData data, AsyncLane* lane = nullptr);
  ~Trainer();

  // The placement model of this network (expert sizes, FLOPs, token bytes) for planners.
  placement::ModelSpec PlacementModel() const;

  // Adopts a plan (migrating re-owned experts' parameters and Adam state). Collective.
  absl::Status ApplyPlan(const placement::Plan& plan);
  // One training iteration. Collective; a communication failure returns its status.
  absl::StatusOr<StepResult> Step(uint64_t iteration);

  std::vector<std::unique_ptr<MoELayer>>& moe_layers() { return moe_; }
  // Receives the schedule's events (tests); may be null.
  void set_observer(ScheduleObserver* observer);
  // Dense parameters in a fixed order (for checkpoints and tests).
  std::vector<torch::Tensor> DenseParameters();
  // The last step's dense gradient, summed over the ranks, flat in DenseParameters() order.
  const torch::Tensor& last_dense_gradient() const { return last_dense_gradient_; }
  std::vector<torch::Tensor>& dense_adam_m() { return m_; }
  std::vector<torch::Tensor>& dense_adam_v() { return v_; }
  int64_t adam_step() const { return step_; }
  void set_adam_step(int64_t s) { step_ = s; }
  const TrainerConfig& config() const { return config_; }

 private:
  struct Net;
  TrainerConfig config_;
  torch::Device device_;
  Communicator* comm_;
  const placement::Cluster* cluster_;
  TextData data_;
  std::unique_ptr<Net> net_;
  AsyncLane* lane_;
  ScheduleObserver* observer_ = nullptr;
  CopyMemory copy_memory_;
  std::vector<std::unique_ptr<MoELayer>> moe_;
  std::vector<torch::Tensor> m_, v_;
  torch::Tensor last_dense_gradient_;
  int64_t step_ = 0;
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_MODEL_TRAINER_H_
