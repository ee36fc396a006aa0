#include "worker/fssdp/moe_layer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "placement/baselines.h"
#include "placement/calibration.h"
#include "worker/fssdp/adam.h"
#include "worker/fssdp/expert_ffn.h"
#include "worker/fssdp/token_kernels.h"

namespace hecate::worker {

namespace pl = placement;

namespace {

double Since(absl::Time t0) { return absl::ToDoubleSeconds(absl::Now() - t0); }

int ElementBytes(torch::Dtype t) { return t == torch::kFloat64 ? 8 : 4; }

void ThrowIfError(const absl::Status& s, absl::Status* sink);

void ThrowIfError(const absl::Status& s, absl::Status* sink) {
  if (s.ok()) return;
  *sink = s;
  throw std::runtime_error(s.ToString());
}

// Tags of migrations and sparse collectives never collide with each other or across layers.
uint32_t TagBase(int layer, int kind) {
  return (static_cast<uint32_t>(layer) << 20) | (kind << 17);
}

}  // namespace

struct MoELayer::Routing {
  int64_t tokens = 0, k = 0;
  std::vector<int64_t> send_counts, recv_counts;  // elements (rows x d_model) per rank
  torch::Tensor position;                         // the sent row of each assignment (inverse)
  torch::Tensor weights;                          // the gate weights, flat (t * k + j)
  torch::Tensor back;                             // expert outputs as they came back, sent order
  torch::Tensor recv;                             // rows received for our experts
  std::vector<pl::ExpertId> experts;              // experts with rows here, in group order
  ExpertGroups groups;                            // their rows of `recv` and parameters
  ExpertFfnSaved saved;                           // what the FFN backward needs
};

namespace {

// One custom autograd function per layer call: dispatch -> experts -> combine, and the reverse.
class MoEFunction : public torch::autograd::Function<MoEFunction> {
 public:
  // `anchor`: an empty tensor that requires grad, so backward (and with it the experts' gradients
  // and the backward collectives every rank joins) runs even when `x` needs no gradient.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor topk_idx, torch::Tensor topk_w, torch::Tensor anchor,
                               int64_t layer_ptr) {
    auto* layer = reinterpret_cast<MoELayer*>(layer_ptr);
    auto routing = std::make_shared<MoELayer::Routing>();
    torch::Tensor out = layer->ForwardImpl(x, topk_idx, topk_w, routing.get());
    // The routing lives until backward; the pointer is kept as an integer in saved_data.
    auto* holder = new std::shared_ptr<MoELayer::Routing>(routing);
    ctx->saved_data["layer"] = layer_ptr;
    ctx->saved_data["routing"] = reinterpret_cast<int64_t>(holder);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* layer = reinterpret_cast<MoELayer*>(ctx->saved_data["layer"].toInt());
    auto* holder =
        reinterpret_cast<std::shared_ptr<MoELayer::Routing>*>(ctx->saved_data["routing"].toInt());
    std::shared_ptr<MoELayer::Routing> routing = *holder;
    delete holder;
    auto [grad_x, grad_w] = layer->BackwardImpl(grad_out[0], routing.get());
    return {grad_x, torch::Tensor(), grad_w.view({-1, routing->k}), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

MoELayer::MoELayer(int layer, const MoEConfig& config, Communicator* comm,
                   const pl::Cluster* cluster, const pl::CostModel* cost, uint64_t seed)
    : layer_(layer),
      config_(config),
      comm_(comm),
      cluster_(cluster),
      cost_(cost),
      seed_(seed),
      chunk_(2 * int64_t{config.d_model} * config.d_ffn),
      dispatcher_(*cluster) {}

void MoELayer::set_lane(AsyncLane* lane) {
  if (lane == lane_) return;
  // Collectives in flight on the old lane write into this layer's buffers; a failure among them
  // stays this layer's communication status.
  for (std::shared_ptr<PendingOp>* op : {&gather_, &regather_, &reduce_}) {
    if (*op == nullptr || lane_ == nullptr) continue;
    if (absl::Status s = lane_->Wait(**op); !s.ok() && comm_status_.ok()) comm_status_ = s;
    op->reset();
  }
  lane_ = lane;
}

MoELayer::~MoELayer() {
  // Collectives still in flight (after an error) write into this layer's buffers.
  set_lane(nullptr);
  if (memory_ != nullptr) {
    for (const auto& [e, t] : replicas_) {
      if (t.defined()) memory_->Add(-CopyBytes());
    }
  }
}

torch::Tensor MoELayer::InitExpert(pl::ExpertId e) const {
  const uint64_t s =
      seed_ * 1000003ULL + static_cast<uint64_t>(layer_) * 4099ULL + static_cast<uint64_t>(e) + 17;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(s);
  const int64_t d = config_.d_model, f = config_.d_ffn;
  auto opts = torch::TensorOptions().dtype(config_.dtype);  // CPU: same init on any device
  torch::Tensor w1 = torch::randn({d * f}, gen, opts) / std::sqrt(static_cast<double>(d));
  torch::Tensor w2 = torch::randn({f * d}, gen, opts) / std::sqrt(static_cast<double>(f));
  return torch::cat({w1, w2}).to(config_.device);
}

namespace {

// The ranks that keep expert e's parameters and Adam state: its owner, or, for persistent
// replicas, every holder.
std::vector<pl::DeviceId> StateHolders(const pl::LayerPlan& layer, pl::ReplicaSemantics semantics,
                                       pl::ExpertId e) {
  if (semantics == pl::ReplicaSemantics::kPersistent) return layer.replicas[e];
  return {layer.owner[e]};
}

bool Contains(const std::vector<pl::DeviceId>& v, pl::DeviceId d) {
  return std::find(v.begin(), v.end(), d) != v.end();
}

}  // namespace

void MoELayer::CountPersistentCopy(int64_t sign) {
  // A persistent copy keeps parameters, gradient and Adam's two moments, as the memory model
  // charges it.
  if (memory_ != nullptr) memory_->Add(sign * 4 * CopyBytes());
}

absl::Status MoELayer::ApplyPlan(const pl::LayerPlan& plan, pl::DispatchRule rule,
                                 pl::ReplicaSemantics semantics) {
  if (config_.device.is_cuda() && !comm_->device_memory()) {
    return absl::FailedPreconditionError(
        "a MoE layer on CUDA needs a device-memory communicator (NCCL), not a host one (Gloo)");
  }
  const int me = comm_->rank();
  rule_ = rule;
  auto persistent_copy = [&](const pl::LayerPlan& p, pl::ReplicaSemantics sem, pl::ExpertId e) {
    return sem == pl::ReplicaSemantics::kPersistent && p.owner[e] != me && p.Holds(e, me);
  };
  if (!has_plan_) {
    for (pl::ExpertId e = 0; e < plan.num_experts(); ++e) {
      if (!Contains(StateHolders(plan, semantics, e), me)) continue;
      torch::Tensor p = InitExpert(e);
      owned_[e] = Owned{p, torch::zeros_like(p), torch::zeros_like(p)};
      if (persistent_copy(plan, semantics, e)) CountPersistentCopy(+1);
    }
    plan_ = plan;
    semantics_ = semantics;
    has_plan_ = true;
    return absl::OkStatus();
  }
  // Move parameters and Adam state to every rank that keeps them under the new plan and did not
  // under the old one (a new owner, or a new persistent replica), each from one rank that kept
  // them (the old owner when it did); ranks that no longer keep them drop them.
  std::vector<P2POp> sends, recvs;
  std::map<pl::ExpertId, Owned> incoming;
  std::vector<pl::ExpertId> dropped;
  const int64_t bytes = chunk_ * ElementBytes(config_.dtype);
  for (pl::ExpertId e = 0; e < plan.num_experts(); ++e) {
    const std::vector<pl::DeviceId> before = StateHolders(plan_, semantics_, e);
    const std::vector<pl::DeviceId> after = StateHolders(plan, semantics, e);
    if (before == after) continue;
    const pl::DeviceId source = Contains(before, plan_.owner[e]) ? plan_.owner[e] : before.front();
    const uint32_t tag = TagBase(layer_, 0) + static_cast<uint32_t>(e) * 4;
    for (pl::DeviceId to : after) {
      if (Contains(before, to)) continue;
      if (source == me) {
        Owned& o = owned_[e];
        sends.push_back({to, tag, o.param.data_ptr(), bytes});
        sends.push_back({to, tag + 1, o.m.data_ptr(), bytes});
        sends.push_back({to, tag + 2, o.v.data_ptr(), bytes});
      }
      if (to == me) {
        auto opts = Options();
        Owned o{torch::empty({chunk_}, opts), torch::empty({chunk_}, opts),
                torch::empty({chunk_}, opts)};
        recvs.push_back({source, tag, o.param.data_ptr(), bytes});
        recvs.push_back({source, tag + 1, o.m.data_ptr(), bytes});
        recvs.push_back({source, tag + 2, o.v.data_ptr(), bytes});
        incoming[e] = o;
      }
    }
    if (Contains(before, me) && !Contains(after, me)) dropped.push_back(e);
  }
  if (absl::Status s = comm_->SendRecv(sends, recvs, CommKind::kMigration); !s.ok()) return s;
  for (pl::ExpertId e = 0; e < plan.num_experts(); ++e) {
    const bool was = persistent_copy(plan_, semantics_, e) && owned_.count(e);
    const bool is = persistent_copy(plan, semantics, e);
    if (was != is) CountPersistentCopy(is ? +1 : -1);
  }
  for (pl::ExpertId e : dropped) owned_.erase(e);
  for (auto& [e, o] : incoming) owned_[e] = o;
  plan_ = plan;
  semantics_ = semantics;
  return absl::OkStatus();
}

torch::Tensor MoELayer::HeldParam(pl::ExpertId e) const {
  auto it = owned_.find(e);
  if (it != owned_.end()) return it->second.param;
  auto r = replicas_.find(e);
  return r == replicas_.end() ? torch::Tensor() : r->second;
}

void MoELayer::AllocateCopies(const pl::LayerPlan& layer) {
  const int me = comm_->rank();
  for (pl::ExpertId e = 0; e < layer.num_experts(); ++e) {
    if (layer.owner[e] == me || !layer.Holds(e, me)) continue;
    torch::Tensor& t = replicas_[e];
    if (t.defined()) continue;
    t = torch::empty({chunk_}, Options());
    if (memory_ != nullptr) memory_->Add(CopyBytes());
  }
}

void MoELayer::FreeCopy(pl::ExpertId e) {
  auto it = replicas_.find(e);
  if (it == replicas_.end()) return;
  if (it->second.defined() && memory_ != nullptr) memory_->Add(-CopyBytes());
  replicas_.erase(it);
}

void MoELayer::FreeCopies() {
  if (memory_ != nullptr) {
    for (const auto& [e, t] : replicas_) {
      if (t.defined()) memory_->Add(-CopyBytes());
    }
  }
  replicas_.clear();
}

std::shared_ptr<PendingOp> MoELayer::Gather(const pl::LayerPlan& layer, int tag_kind,
                                            absl::Status* blocking_status) {
  AllocateCopies(layer);
  const SparseSchedule sched = BuildSparseSchedule(layer, comm_->rank(), cluster_);
  const ChunkAccess access{[this](pl::ExpertId e) { return HeldParam(e).data_ptr(); }, CopyBytes()};
  if (lane_ != nullptr)
    return StartSparseAllGather(*lane_, sched, access, TagBase(layer_, tag_kind));
  const absl::Time t0 = absl::Now();
  *blocking_status = SparseAllGather(*comm_, sched, access, TagBase(layer_, tag_kind));
  times_.spag += Since(t0);
  times_.spag_exposed += Since(t0);
  return nullptr;
}

absl::Status MoELayer::Await(std::shared_ptr<PendingOp>* op, double* exposed, double* total,
                             const char* event) {
  if (*op == nullptr) return absl::OkStatus();
  Note(event);
  const absl::Time t0 = absl::Now();
  absl::Status s = lane_->Wait(**op);
  *exposed += Since(t0);
  *total += (*op)->run_seconds();
  op->reset();
  return s;
}

absl::Status MoELayer::BeginIteration() {
  if (!has_plan_) return absl::FailedPreconditionError("no plan applied");
  const int me = comm_->rank();
  effective_ = plan_;
  calibration_added_ = 0;
  calibration_dropped_ = 0;
  FreeCopies();
  grads_.clear();
  auto opts = Options();
  for (pl::ExpertId e = 0; e < plan_.num_experts(); ++e) {
    if (plan_.Holds(e, me)) grads_[e] = torch::zeros({chunk_}, opts);
  }
  comm_status_ = absl::OkStatus();
  blocking_status_ = absl::OkStatus();
  gather_started_ = regather_started_ = reduce_started_ = false;
  return absl::OkStatus();
}

void MoELayer::StartGather() {
  if (gather_started_) return;
  gather_started_ = true;
  // Persistent replicas hold their parameters already; shadows are gathered after the gate.
  if (semantics_ != pl::ReplicaSemantics::kEphemeral) return;
  Note("spag_start");
  gather_ = Gather(effective_, 1, &blocking_status_);
}

void MoELayer::StartRegather() {
  // Without a lane the re-gather runs blocking where backward needs it.
  if (regather_started_ || !rematerialized() || lane_ == nullptr) return;
  regather_started_ = true;
  Note("regather_start");
  regather_ = Gather(effective_, 3, &blocking_status_);
}

torch::Tensor MoELayer::Forward(const torch::Tensor& x_in, const torch::Tensor& topk_idx,
                                const torch::Tensor& topk_w_in) {
  // The layer computes on config_.device; callers on another device get their device back
  // (differentiable copies, so gradients flow across).
  const torch::Tensor x = x_in.to(config_.device);
  const torch::Tensor topk_w = topk_w_in.to(config_.device);
  return MoEFunction::apply(x, topk_idx, topk_w, grad_anchor_, reinterpret_cast<int64_t>(this))
      .to(x_in.device());
}

torch::Tensor MoELayer::ForwardImpl(const torch::Tensor& x_in, const torch::Tensor& topk_idx,
                                    const torch::Tensor& topk_w, Routing* r) {
  const int me = comm_->rank();
  const int world = comm_->world_size();
  const int experts = config_.num_experts;
  const int64_t d = config_.d_model, f = config_.d_ffn;
  const int eb = ElementBytes(config_.dtype);
  torch::Tensor x = x_in.contiguous();
  r->tokens = x.size(0);
  r->k = topk_idx.size(1);
  const int64_t assignments = r->tokens * r->k;

  // Gate outcome -> counts -> the global matrix.
  absl::Time t0 = absl::Now();
  torch::Tensor idx = topk_idx.to(torch::kCPU).to(torch::kInt64).contiguous().view({-1});
  const int64_t* ip = idx.data_ptr<int64_t>();
  local_counts_.assign(experts, 0);
  std::vector<std::vector<int64_t>> by_expert(experts);
  for (int64_t a = 0; a < assignments; ++a) {
    ++local_counts_[ip[a]];
    by_expert[ip[a]].push_back(a);
  }
  std::vector<int64_t> all(static_cast<size_t>(world) * experts);
  ThrowIfError(comm_->AllGatherInt64(local_counts_.data(), experts, all.data()), &comm_status_);
  global_counts_ = pl::LoadMatrix(world, experts);
  for (int s = 0; s < world; ++s) {
    for (int e = 0; e < experts; ++e) global_counts_.at(s, e) = all[s * experts + e];
  }
  ThrowIfError(blocking_status_, &comm_status_);
  if (semantics_ == pl::ReplicaSemantics::kShadow) {
    // FasterMoE: the shadows are decided on this iteration's counts and broadcast now, after the
    // gate, on the critical path.
    if (cost_ != nullptr) {
      pl::LayerPlan owners_only = plan_;
      for (pl::ExpertId e = 0; e < experts; ++e) owners_only.replicas[e] = {plan_.owner[e]};
      effective_ = pl::ShadowHotExperts(*cost_, layer_, std::move(owners_only), global_counts_,
                                        max_shadows_, &dispatcher_);
    }
    times_.gate += Since(t0);
    for (pl::ExpertId e = 0; e < experts; ++e) {
      if (effective_.Holds(e, me) && !grads_.count(e))
        grads_[e] = torch::zeros({chunk_}, Options());
    }
    AllocateCopies(effective_);
    ChunkAccess access{[this](pl::ExpertId e) { return HeldParam(e).data_ptr(); }, chunk_ * eb};
    Note("spag_start");
    const absl::Time ts = absl::Now();
    ThrowIfError(SparseAllGather(*comm_, BuildSparseSchedule(effective_, me, cluster_), access,
                                 TagBase(layer_, 1)),
                 &comm_status_);
    times_.spag += Since(ts);
    times_.spag_exposed += Since(ts);
    t0 = absl::Now();
  }
  // Calibration on this iteration's actual counts, if the model says it pays: copies into free
  // slots and swaps of planned copies for copies of the busiest devices' experts.
  if (config_.calibration.enabled && calibrate_ && cost_ != nullptr) {
    pl::CalibrationResult cal =
        pl::CalibrateLayer(*cost_, layer_, effective_, global_counts_, rule_, config_.calibration);
    times_.gate += Since(t0);
    if (cal.accepted) {
      // The planned copies must have arrived before any is given up (the gather writes them).
      ThrowIfError(Await(&gather_, &times_.spag_exposed, &times_.spag, "spag_wait"), &comm_status_);
      calibration_added_ = cal.copies_added;
      calibration_dropped_ = cal.copies_dropped;
      // Copies given up free their memory before the new ones arrive; every rank drops them
      // from its spRS schedule alike (it follows effective_).
      for (pl::ExpertId e = 0; e < experts; ++e) {
        if (effective_.owner[e] != me && effective_.Holds(e, me) && !cal.layer.Holds(e, me)) {
          FreeCopy(e);
          grads_.erase(e);
        }
      }
      effective_ = cal.layer;
      auto opts = Options();
      for (pl::ExpertId e = 0; e < experts; ++e) {
        if (effective_.Holds(e, me) && !grads_.count(e)) grads_[e] = torch::zeros({chunk_}, opts);
      }
      // Only the new copies travel, after the gate and on the critical path: blocking, on the
      // training thread's communicator (the lane may hold later layers' gathers).
      const pl::LayerPlan extra = pl::LateCopies(plan_, effective_);
      AllocateCopies(extra);
      ChunkAccess access{[this](pl::ExpertId e) { return HeldParam(e).data_ptr(); }, chunk_ * eb};
      const absl::Time ts = absl::Now();
      ThrowIfError(SparseAllGather(*comm_, BuildSparseSchedule(extra, me, cluster_), access,
                                   TagBase(layer_, 2)),
                   &comm_status_);
      times_.spag += Since(ts);
      times_.spag_exposed += Since(ts);
    }
    t0 = absl::Now();
  }

  // The dispatch every rank computes identically; our row decides where each assignment goes.
  pl::LayerDispatch dispatch = dispatcher_.Compute(effective_, global_counts_, rule_);
  std::vector<std::vector<std::vector<int64_t>>> to(world,
                                                    std::vector<std::vector<int64_t>>(experts));
  std::vector<std::vector<int64_t>> from(world, std::vector<int64_t>(experts, 0));
  for (int e = 0; e < experts; ++e) {
    size_t pos = 0;
    for (const pl::Flow& flow : dispatch.by_expert[e]) {
      if (flow.src == me) {
        for (int64_t i = 0; i < flow.tokens; ++i) to[flow.dst][e].push_back(by_expert[e][pos++]);
      }
      if (flow.dst == me) from[flow.src][e] += flow.tokens;
    }
  }
  std::vector<int64_t> send_index;
  send_index.reserve(assignments);
  r->send_counts.assign(world, 0);
  r->recv_counts.assign(world, 0);
  for (int dst = 0; dst < world; ++dst) {
    for (int e = 0; e < experts; ++e) {
      send_index.insert(send_index.end(), to[dst][e].begin(), to[dst][e].end());
      r->send_counts[dst] += static_cast<int64_t>(to[dst][e].size()) * d;
    }
  }
  std::vector<std::vector<int64_t>> rows(experts);
  int64_t row = 0;
  for (int src = 0; src < world; ++src) {
    for (int e = 0; e < experts; ++e) {
      for (int64_t i = 0; i < from[src][e]; ++i) rows[e].push_back(row++);
      r->recv_counts[src] += from[src][e] * d;
    }
  }
  if (static_cast<int64_t>(send_index.size()) != assignments) {
    ThrowIfError(absl::InternalError(absl::StrCat("dispatch sent ", send_index.size(), " of ",
                                                  assignments, " assignments")),
                 &comm_status_);
  }
  // Sent row i carries token send_index[i] / k; assignment a comes back in row position[a].
  std::vector<int64_t> token_of(assignments), position(assignments);
  for (int64_t i = 0; i < assignments; ++i) {
    token_of[i] = send_index[i] / r->k;
    position[send_index[i]] = i;
  }
  r->position = torch::tensor(position, torch::kInt64).to(config_.device);
  r->weights = topk_w.to(config_.dtype).contiguous().view({-1});
  times_.gate += Since(t0);

  // Dispatch: the permutation by destination (kernels/ GatherRows), then the All-to-All.
  t0 = absl::Now();
  torch::Tensor send = GatherRows(x, torch::tensor(token_of, torch::kInt64).to(config_.device));
  r->recv = torch::empty({row, d}, x.options());
  ThrowIfError(
      comm_->AllToAllV(send.data_ptr(), r->send_counts, r->recv.data_ptr(), r->recv_counts, eb),
      &comm_status_);
  times_.dispatch += Since(t0);

  // Experts: the gathered copies are needed from here on.
  ThrowIfError(Await(&gather_, &times_.spag_exposed, &times_.spag, "spag_wait"), &comm_status_);
  Note("expert_forward");
  t0 = absl::Now();
  for (int e = 0; e < experts; ++e) {
    if (rows[e].empty()) continue;
    torch::Tensor w = HeldParam(e);
    if (!w.defined())
      ThrowIfError(absl::InternalError(absl::StrCat("expert ", e, " not held")), &comm_status_);
    r->experts.push_back(e);
    r->groups.rows.push_back(torch::tensor(rows[e], torch::kInt64).to(config_.device));
    r->groups.params.push_back(w);
  }
  torch::Tensor out_recv = ExpertFfnForward(r->recv, r->groups, d, f, &r->saved);
  r->groups.params.clear();  // re-fetched in backward (replicas may be freed and re-gathered)
  times_.expert += Since(t0);

  // Combine: outputs go back to the tokens' ranks, and y_t = sum_j w_tj * expert_j(x_t) straight
  // from the rows as they arrived (kernels/ WeightedCombine).
  t0 = absl::Now();
  r->back = torch::empty({assignments, d}, x.options());
  ThrowIfError(
      comm_->AllToAllV(out_recv.data_ptr(), r->recv_counts, r->back.data_ptr(), r->send_counts, eb),
      &comm_status_);
  torch::Tensor out = WeightedCombine(r->back, r->weights, r->position, r->k);
  times_.combine += Since(t0);

  if (rematerialized()) {
    Note("free_copies");
    FreeCopies();  // until the re-gather before backward
  }
  return out;
}

std::pair<torch::Tensor, torch::Tensor> MoELayer::BackwardImpl(const torch::Tensor& grad_out,
                                                               Routing* r) {
  const int64_t d = config_.d_model, f = config_.d_ffn;
  const int eb = ElementBytes(config_.dtype);
  torch::Tensor g = grad_out.contiguous();

  // The layer below re-gathers while this one computes (one layer early).
  if (next_in_backward_ != nullptr) next_in_backward_->StartRegather();
  if (rematerialized()) {
    if (lane_ == nullptr) {
      Note("regather_start");
      absl::Status s;
      Gather(effective_, 3, &s);  // blocking, here
      ThrowIfError(s, &comm_status_);
    } else {
      StartRegather();
      ThrowIfError(Await(&regather_, &times_.spag_exposed, &times_.spag, "regather_wait"),
                   &comm_status_);
    }
  }

  // Gradient of the combine, already in sent-row order (kernels/ WeightedCombineBackward), goes
  // to the experts (the dispatch direction); the gate weights' gradient comes with it.
  absl::Time t0 = absl::Now();
  auto [g_send, grad_w] = WeightedCombineBackward(r->back, g, r->weights, r->position, r->k);
  r->back = torch::Tensor();
  torch::Tensor g_recv = torch::empty_like(r->recv);
  ThrowIfError(
      comm_->AllToAllV(g_send.data_ptr(), r->send_counts, g_recv.data_ptr(), r->recv_counts, eb),
      &comm_status_);
  times_.combine += Since(t0);

  Note("expert_backward");
  t0 = absl::Now();
  for (pl::ExpertId e : r->experts) r->groups.params.push_back(HeldParam(e));
  std::vector<torch::Tensor> grads;
  for (pl::ExpertId e : r->experts) grads.push_back(grads_.at(e));
  torch::Tensor dx_recv = ExpertFfnBackward(r->recv, g_recv, r->groups, d, f, r->saved, &grads);
  times_.expert += Since(t0);
  if (gradient_hook_) {
    for (pl::ExpertId e : r->experts) gradient_hook_(e, owned_.count(e) > 0, grads_.at(e));
  }

  // Input gradients go back to the tokens' ranks.
  t0 = absl::Now();
  torch::Tensor dx_send = torch::empty_like(g_send);
  ThrowIfError(
      comm_->AllToAllV(dx_recv.data_ptr(), r->recv_counts, dx_send.data_ptr(), r->send_counts, eb),
      &comm_status_);
  // dx_t = sum_j (the rows of t's assignments): the combine with unit weights.
  torch::Tensor dx =
      WeightedCombine(dx_send, torch::ones({r->tokens * r->k}, g.options()), r->position, r->k);
  times_.dispatch += Since(t0);
  if (rematerialized()) FreeCopies();
  // The gradients of every held expert are complete: spRS overlaps the backward below.
  if (lane_ != nullptr) {
    reduce_started_ = true;
    Note("sprs_start");
    const ChunkAccess access{[this](pl::ExpertId e) { return grads_.at(e).data_ptr(); },
                             chunk_ * eb};
    if (semantics_ == pl::ReplicaSemantics::kPersistent) {
      reduce_ = StartReplicaAllReduce(*lane_, plan_, access, eb, TagBase(layer_, 5));
    } else {
      const SparseSchedule sched = BuildSparseSchedule(effective_, comm_->rank(), cluster_);
      reduce_ = StartSparseReduceScatter(*lane_, sched, access, eb, TagBase(layer_, 4));
    }
  }
  Note("backward_done");
  return {dx, grad_w};
}

absl::Status MoELayer::ReduceGradients() {
  if (!comm_status_.ok()) return comm_status_;
  absl::Status s;
  if (reduce_started_) {
    s = Await(&reduce_, &times_.sprs_exposed, &times_.sprs, "sprs_wait");
  } else {
    const int eb = ElementBytes(config_.dtype);
    ChunkAccess access{[this](pl::ExpertId e) { return grads_.at(e).data_ptr(); }, chunk_ * eb};
    Note("sprs_start");
    const absl::Time t0 = absl::Now();
    if (semantics_ == pl::ReplicaSemantics::kPersistent) {
      s = ReplicaAllReduce(*comm_, plan_, access, eb, TagBase(layer_, 5));
    } else {
      const SparseSchedule sched = BuildSparseSchedule(effective_, comm_->rank(), cluster_);
      s = SparseReduceScatter(*comm_, sched, access, eb, TagBase(layer_, 4));
    }
    times_.sprs += Since(t0);
    times_.sprs_exposed += Since(t0);
  }
  FreeCopies();  // the copies' parameters are not needed until the next iteration's gather
  return s;
}

void MoELayer::Step(double lr, double beta1, double beta2, double eps, int64_t step) {
  const absl::Time t0 = absl::Now();
  const AdamConfig adam{lr, beta1, beta2, eps};
  for (auto& [e, o] : owned_) AdamStep(o.param, grads_.at(e), o.m, o.v, adam, step);
  times_.optimizer += Since(t0);
}

std::vector<pl::ExpertId> MoELayer::OwnedExperts() const {
  std::vector<pl::ExpertId> out;
  for (const auto& [e, o] : owned_) out.push_back(e);
  return out;
}
torch::Tensor MoELayer::OwnedParam(pl::ExpertId e) const { return owned_.at(e).param; }
torch::Tensor MoELayer::OwnedAdamM(pl::ExpertId e) const { return owned_.at(e).m; }
torch::Tensor MoELayer::OwnedAdamV(pl::ExpertId e) const { return owned_.at(e).v; }
torch::Tensor MoELayer::OwnedGrad(pl::ExpertId e) const { return grads_.at(e); }

void MoELayer::SetOwned(pl::ExpertId e, const torch::Tensor& param, const torch::Tensor& m,
                        const torch::Tensor& v) {
  Owned& o = owned_.at(e);
  o.param.copy_(param);
  o.m.copy_(m);
  o.v.copy_(v);
}

}  // namespace hecate::worker
