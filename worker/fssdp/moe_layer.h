// One FSSDP MoE layer on one rank (DESIGN.md §6-§7).
//
// Owns the layer's expert shard (parameters + Adam state of owned experts), the per-iteration
// replica buffers materialized by SparseAllGather, and the gradient buffers of every expert held
// this iteration. Forward/backward run as one custom autograd function: count exchange (every rank
// gets the global [device x expert] matrix), the placement dispatcher (identical on every rank),
// All-to-All of tokens, the expert FFNs (GELU, no bias), All-to-All back and the top-k combine;
// backward mirrors it and accumulates expert gradients into the held copies. Step() runs Adam on
// owned experts only. A plan whose owners differ migrates parameters AND Adam state of the
// re-owned experts.
//
// The iteration, as the Trainer drives it (and the cost model charges it, docs/cost-model.md):
//   BeginIteration()   zero gradients
//   StartGather()      SparseAllGather of the agreed plan's copies: on the lane (asynchronous,
//                      started ahead of the layer's attention), or now when there is no lane
//   Forward()          waits for the gather where the experts are first needed (before the expert
//                      FFN, or before calibration changes the copies)
//   after forward      a layer the plan re-materializes (LayerPlan::remat) frees its copies
//   StartRegather()    re-gathers them before backward (started one layer early)
//   backward           waits for the re-gather, computes, then starts SparseReduceScatter on the
//                      lane (copies of a re-materialized layer are freed)
//   ReduceGradients()  waits for it (runs it now when there is no lane)
//   Step()             Adam on owned experts
//
// Expert chunk layout: [W1 (d_model x d_ffn) | W2 (d_ffn x d_model)], row-major, one tensor.
// Experts are initialized from (seed, layer, expert) alone, so any sharding starts identical.
//
// Not thread-safe; one training thread drives it (the lane runs the collectives it submits on the
// buffers it resolved at submission). Uses the communicator collectively: every rank must call the
// same methods in the same order.
#ifndef HECATE_WORKER_FSSDP_MOE_LAYER_H_
#define HECATE_WORKER_FSSDP_MOE_LAYER_H_

#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "placement/calibration.h"
#include "placement/cost_model.h"
#include "placement/dispatch.h"
#include "placement/plan.h"
#include "worker/comm/async_lane.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

struct MoEConfig {
  int d_model = 64;
  int d_ffn = 128;
  int num_experts = 8;
  int top_k = 2;
  torch::Dtype dtype = torch::kFloat32;
  // After the gate, calibrate the plan on the actual counts under this rule
  // (placement::CalibrateLayer: copies into free slots beyond the plan's, then swaps of the plan's
  // copies) when the cost model says it pays. Needs `cost`. Off by default.
  placement::CalibrationRule calibration{/*enabled=*/false};
  // Where expert parameters, optimizer state and the layer's token buffers live (the trainer sets
  // it from --device). A CUDA layer needs a device-memory communicator (NCCL, or Gloo through the
  // staging communicator); ApplyPlan refuses anything else.
  torch::Device device = torch::kCPU;
};

// Wall time of the layer's phases in the last iteration, seconds. `spag` and `sprs` are the time
// the transfers took (on the lane, or blocking); `*_exposed` the time the training thread waited
// for them (equal to the transfer time when they ran blocking).
struct MoEPhaseTimes {
  double gate = 0;      // count exchange + dispatch planning
  double dispatch = 0;  // All-to-All of tokens (forward + the backward dispatch)
  double expert = 0;    // expert FFN forward + backward
  double combine = 0;   // All-to-All back (forward + backward)
  double spag = 0;      // spAG, re-gathers and calibration's late gathers
  double sprs = 0;
  double spag_exposed = 0;
  double sprs_exposed = 0;
  double optimizer = 0;
  void Reset() { *this = MoEPhaseTimes(); }
};

// Bytes of materialized copies (non-owned expert parameters) a rank holds, now and at its peak
// since the last Reset. Shared by a trainer's layers; one thread.
struct CopyMemory {
  int64_t now = 0;
  int64_t peak = 0;
  void Add(int64_t bytes) {
    now += bytes;
    peak = std::max(peak, now);
  }
  void ResetPeak() { peak = now; }
};

// Receives the layer's schedule events in the order the training thread issues them (tests).
class ScheduleObserver {
 public:
  virtual ~ScheduleObserver() = default;
  // `event`: "spag_start", "spag_wait", "expert_forward", "free_copies", "regather_start",
  // "regather_wait", "expert_backward", "sprs_start", "backward_done", "sprs_wait" (and the
  // trainer's own: "attention_start", "attention_end", "backward_end").
  virtual void Record(const char* event, int layer) = 0;
};

class MoELayer {
 public:
  // `cluster` describes the ranks (for the dispatcher's node structure); `cost` (optional) enables
  // calibration. Both must outlive the layer.
  MoELayer(int layer, const MoEConfig& config, Communicator* comm,
           const placement::Cluster* cluster, const placement::CostModel* cost, uint64_t seed);
  ~MoELayer();

  // The schedule's collaborators (all optional, all must outlive the layer): the lane that runs
  // spAG, re-gathers and spRS asynchronously (null: they run blocking where they are needed); the
  // copy-memory meter; an observer of the schedule.
  // Changing the lane first waits for the work still on the old one.
  void set_lane(AsyncLane* lane);
  void set_copy_memory(CopyMemory* meter) { memory_ = meter; }
  void set_observer(ScheduleObserver* observer) { observer_ = observer; }
  // Fault injection for tests: called with each held expert's local gradient (and whether this
  // rank owns it) once the backward has computed it, before the sparse reduce sums it.
  using GradientHook = std::function<void(placement::ExpertId, bool owned, torch::Tensor&)>;
  void set_gradient_hook(GradientHook hook) { gradient_hook_ = std::move(hook); }
  // The layer whose backward follows this one's: its re-gather starts when this one's backward
  // does.
  void set_next_in_backward(MoELayer* next) { next_in_backward_ = next; }
  // Calibration set after construction (the PyTorch front end knows the model, hence the cost
  // model, only at its first forward): `cost` must outlive the layer; see MoEConfig::calibration.
  void set_calibration(const placement::CostModel* cost, const placement::CalibrationRule& rule) {
    cost_ = cost;
    config_.calibration = rule;
  }

  int layer() const { return layer_; }
  const MoEConfig& config() const { return config_; }

  // Adopts `plan` for the next iterations, run with `semantics` (collective): ephemeral (FSSDP)
  // copies gathered each iteration and summed back to the owner; persistent replicas (FlexMoE,
  // SmartMoE, EPLB) keeping parameters and Adam state on every holder, their gradients
  // AllReduced among the holders and every holder stepping Adam; FasterMoE's shadows decided and
  // broadcast after the gate. Parameters and Adam state move to every rank that keeps them under
  // the new plan and did not before. The first call just takes them per the plan.
  absl::Status ApplyPlan(
      const placement::LayerPlan& plan, placement::DispatchRule rule,
      placement::ReplicaSemantics semantics = placement::ReplicaSemantics::kEphemeral);
  placement::ReplicaSemantics semantics() const { return semantics_; }
  // Shadow plans: at most this many experts shadowed per layer (the memory's budget).
  void set_max_shadows(int n) { max_shadows_ = n; }
  const placement::LayerPlan& plan() const { return plan_; }
  // Whether the plan in force is calibrated (when MoEConfig::calibration is on; default true).
  void set_calibrate(bool on) { calibrate_ = on; }

  // Iteration start: zero gradients (the gather is StartGather's).
  absl::Status BeginIteration();
  // SparseAllGather of the agreed plan's copies (collective): submitted to the lane, or run now.
  void StartGather();
  bool gather_started() const { return gather_started_; }
  // A re-materialized layer: re-gathers the copies freed after forward (collective); no-op for a
  // resident layer or when already started.
  void StartRegather();
  bool rematerialized() const {
    return semantics_ == placement::ReplicaSemantics::kEphemeral &&
           plan_.remat == placement::RematMode::kRegather;
  }
  // Routes `x` [T, d_model] with top-k indices [T, k] (int64) and weights [T, k] through the
  // experts; returns [T, d_model]. Differentiable in x and weights.
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& topk_idx,
                        const torch::Tensor& topk_w);
  // After backward: waits for the SparseReduceScatter backward started (or runs it now when
  // there is no lane, or backward did not reach this layer).
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

  // Experts whose parameters and Adam state this rank keeps (its owned ones; for persistent
  // replicas, every one it holds), for checkpoints and tests, by expert id.
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
  // y [tokens, d_model]: dispatch, experts, combine weighted by `topk_w` [tokens, k].
  torch::Tensor ForwardImpl(const torch::Tensor& x, const torch::Tensor& topk_idx,
                            const torch::Tensor& topk_w, Routing* routing);
  // The gradients of x and of topk_w (flat, t * k + j).
  std::pair<torch::Tensor, torch::Tensor> BackwardImpl(const torch::Tensor& grad_y,
                                                       Routing* routing);

 private:
  struct Owned {
    torch::Tensor param, m, v;
  };
  torch::Tensor InitExpert(placement::ExpertId e) const;
  int64_t CopyBytes() const { return chunk_ * (config_.dtype == torch::kFloat64 ? 8 : 4); }
  torch::TensorOptions Options() const {
    return torch::TensorOptions().dtype(config_.dtype).device(config_.device);
  }
  torch::Tensor HeldParam(placement::ExpertId e) const;
  // Allocates a buffer for every non-owned copy `layer` holds here that has none.
  void AllocateCopies(const placement::LayerPlan& layer);
  // Frees every non-owned copy's buffer.
  void FreeCopies();
  void FreeCopy(placement::ExpertId e);
  // Counts one persistent copy's state (sign +1 / -1) in the copy-memory meter.
  void CountPersistentCopy(int64_t sign);
  // Waits for `op` (if any) and adds the wait to `exposed` and its run time to `total`; clears it.
  absl::Status Await(std::shared_ptr<PendingOp>* op, double* exposed, double* total,
                     const char* event);
  // Starts (lane) or runs (no lane) a sparse all-gather of `layer`'s copies with `tag_kind`.
  std::shared_ptr<PendingOp> Gather(const placement::LayerPlan& layer, int tag_kind,
                                    absl::Status* blocking_status);
  void Note(const char* event) {
    if (observer_ != nullptr) observer_->Record(event, layer_);
  }

  const int layer_;
  MoEConfig config_;
  Communicator* const comm_;
  const placement::Cluster* const cluster_;
  const placement::CostModel* cost_;
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

  placement::ReplicaSemantics semantics_ = placement::ReplicaSemantics::kEphemeral;
  int max_shadows_ = 0;
  AsyncLane* lane_ = nullptr;
  CopyMemory* memory_ = nullptr;
  ScheduleObserver* observer_ = nullptr;
  GradientHook gradient_hook_;
  // An input of the autograd function that always requires grad (see MoEFunction::forward).
  torch::Tensor grad_anchor_ = torch::zeros({0}).requires_grad_(true);
  MoELayer* next_in_backward_ = nullptr;
  bool gather_started_ = false;
  bool regather_started_ = false;
  bool reduce_started_ = false;
  std::shared_ptr<PendingOp> gather_, regather_, reduce_;
  absl::Status blocking_status_;  // of a collective run blocking at its start point
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_FSSDP_MOE_LAYER_H_
