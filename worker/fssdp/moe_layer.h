// One FSSDP MoE layer on one rank (DESIGN.md §6-§7).
//
// Owns the layer's expert shard (parameters + Adam state of owned experts), the per-iteration
// replica buffers materialized by SparseAllGather, and the gradient buffers of every expert held
// this iteration. Forward/backward run as one custom autograd function: count exchange (every rank
// gets the global [device x expert] matrix), the placement dispatcher (identical on every rank),
// All-to-All of tokens, the expert FFNs (GELU, no bias), All-to-All back and the top-k combine;
// backward mirrors it and accumulates expert gradients into the held copies. After the whole
// backward, ReduceGradients() runs SparseReduceScatter (replica gradients summed into owners) and
// Step() runs Adam on owned experts only. A plan whose owners differ migrates parameters AND
// Adam state of the re-owned experts.
//
// Expert chunk layout: [W1 (d_model x d_ffn) | W2 (d_ffn x d_model)], row-major, one tensor.
// Experts are initialized from (seed, layer, expert) alone, so any sharding starts identical.
//
// Not thread-safe; one training thread drives it. Uses the communicator collectively: every rank
// must call the same methods in the same order.
#ifndef HECATE_WORKER_FSSDP_MOE_LAYER_H_
#define HECATE_WORKER_FSSDP_MOE_LAYER_H_

#include <torch/torch.h>

#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "placement/calibration.h"
#include "placement/cost_model.h"
#include "placement/dispatch.h"
#include "placement/plan.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

struct MoEConfig {
  int d_model = 64;
  int d_ffn = 128;
  int num_experts = 8;
  int top_k = 2;
  torch::Dtype dtype = torch::kFloat32;
  // Free replica parameters after forward; re-gather them before backward.
  bool rematerialize = false;
  // After the gate, calibrate the plan on the actual counts under this rule
  // (placement::CalibrateLayer: copies into free slots beyond the plan's, then swaps of the plan's
  // copies) when the cost model says it pays. Needs `cost`. Off by default.
  placement::CalibrationRule calibration{/*enabled=*/false};
  // Where expert parameters, optimizer state and the layer's token buffers live. Chosen at build
  // time: CUDA when LibTorch has CUDA (HECATE_TORCH_CUDA, set by builds against PyTorch's
  // LibTorch), else CPU (Debian's LibTorch). A CUDA layer needs a device-memory communicator
  // (NCCL); ApplyPlan refuses anything else.
#ifdef HECATE_TORCH_CUDA
  torch::Device device = torch::kCUDA;
#else
  torch::Device device = torch::kCPU;
#endif
};

// Wall time of the layer's phases in the last iteration, seconds.
struct MoEPhaseTimes {
  double gate = 0;      // count exchange + dispatch planning
  double dispatch = 0;  // All-to-All of tokens (forward + the backward dispatch)
  double expert = 0;    // expert FFN forward + backward
  double combine = 0;   // All-to-All back (forward + backward)
  double spag = 0;
  double sprs = 0;
  double optimizer = 0;
  void Reset() { *this = MoEPhaseTimes(); }
};

class MoELayer {
 public:
  // `cluster` describes the ranks (for the dispatcher's node structure); `cost` (optional) enables
  // calibration. Both must outlive the layer.
  MoELayer(int layer, const MoEConfig& config, Communicator* comm,
           const placement::Cluster* cluster, const placement::CostModel* cost, uint64_t seed);

  int layer() const { return layer_; }
  const MoEConfig& config() const { return config_; }

  // Adopts `plan` for the next iterations. If owners change, migrates parameters and Adam state
  // (collective). The first call just takes ownership per the plan.
  absl::Status ApplyPlan(const placement::LayerPlan& plan, placement::DispatchRule rule);
  const placement::LayerPlan& plan() const { return plan_; }
  // Whether the plan in force is calibrated (when MoEConfig::calibration is on; default true).
  void set_calibrate(bool on) { calibrate_ = on; }

  // Iteration start: zero gradients, SparseAllGather replicas (collective).
  absl::Status BeginIteration();
  // Routes `x` [T, d_model] with top-k indices [T, k] (int64) and weights [T, k] through the
  // experts; returns [T, d_model]. Differentiable in x and weights.
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& topk_idx,
                        const torch::Tensor& topk_w);
  // After backward: SparseReduceScatter of replica gradients into owners (collective).
  absl::Status ReduceGradients();
  // Adam on owned experts. `step` counts from 1.
  void Step(double lr, double beta1, double beta2, double eps, int64_t step);

  // This rank's tokens per expert in the last forward (its row of the load matrix).
  const std::vector<int64_t>& last_local_counts() const { return local_counts_; }
  // The global matrix of the last forward.
  const placement::LoadMatrix& last_global_counts() const { return global_counts_; }
  const MoEPhaseTimes& times() const { return times_; }
  MoEPhaseTimes& mutable_times() { return times_; }
  // Status of the last collective inside autograd (forward/backward cannot return a Status).
  const absl::Status& comm_status() const { return comm_status_; }
  // Copies calibration gathered in the last forward, and planned copies it gave up for them (0
  // if none / rejected).
  int last_calibration_copies() const { return calibration_added_; }
  int last_calibration_dropped() const { return calibration_dropped_; }

  // Owned experts (for checkpoints and tests): parameters and Adam moments, by expert id.
  std::vector<placement::ExpertId> OwnedExperts() const;
  torch::Tensor OwnedParam(placement::ExpertId e) const;
  torch::Tensor OwnedAdamM(placement::ExpertId e) const;
  torch::Tensor OwnedAdamV(placement::ExpertId e) const;
  // The summed gradient of an owned expert after ReduceGradients().
  torch::Tensor OwnedGrad(placement::ExpertId e) const;
  // Replaces owned state (checkpoint restore). Preconditions: e is owned; shapes match.
  void SetOwned(placement::ExpertId e, const torch::Tensor& param, const torch::Tensor& m,
                const torch::Tensor& v);
  int64_t chunk_elements() const { return chunk_; }

  // --- used by the autograd function ---
  struct Routing;
  torch::Tensor ForwardImpl(const torch::Tensor& x, const torch::Tensor& topk_idx,
                            Routing* routing);
  std::pair<torch::Tensor, torch::Tensor> BackwardImpl(const torch::Tensor& grad_y,
                                                       const torch::Tensor& topk_w,
                                                       Routing* routing);

 private:
  struct Owned {
    torch::Tensor param, m, v;
  };
  torch::Tensor InitExpert(placement::ExpertId e) const;
  torch::TensorOptions Options() const {
    return torch::TensorOptions().dtype(config_.dtype).device(config_.device);
  }
  torch::Tensor HeldParam(placement::ExpertId e) const;
  absl::Status Gather();  // spAG of the current effective plan

  const int layer_;
  const MoEConfig config_;
  Communicator* const comm_;
  const placement::Cluster* const cluster_;
  const placement::CostModel* const cost_;
  const uint64_t seed_;
  const int64_t chunk_;
  placement::Dispatcher dispatcher_;

  placement::LayerPlan plan_;       // agreed plan
  placement::LayerPlan effective_;  // plan + calibration copies for this iteration
  placement::DispatchRule rule_ = placement::DispatchRule::kLoadAware;
  bool has_plan_ = false;
  std::map<placement::ExpertId, Owned> owned_;
  std::map<placement::ExpertId, torch::Tensor> replicas_;  // non-owned held params
  std::map<placement::ExpertId, torch::Tensor> grads_;     // every held expert
  std::vector<int64_t> local_counts_;
  placement::LoadMatrix global_counts_;
  MoEPhaseTimes times_;
  absl::Status comm_status_;
  bool calibrate_ = true;
  int calibration_added_ = 0;
  int calibration_dropped_ = 0;
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_FSSDP_MOE_LAYER_H_
