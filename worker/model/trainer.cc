#include "worker/model/trainer.h"

#include <fstream>
#include <iterator>
#include <mutex>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/fssdp/adam.h"
#include "worker/fssdp/apply_plan.h"
#include "worker/fssdp/gate.h"

namespace hecate::worker {

namespace pl = placement;

namespace {
double Since(absl::Time t0) { return absl::ToDoubleSeconds(absl::Now() - t0); }

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

absl::StatusOr<TextData> TextData::Load(const std::string& path, int seq_len) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("training text ", path,
                                            " not found (scripts/setup.sh installs Debian's "
                                            "fortunes; or pass --data=FILE)"));
  }
  TextData d;
  d.bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  d.seq_len_ = seq_len;
  if (static_cast<int64_t>(d.bytes_.size()) < seq_len + 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        "training text ", path, " has ", d.bytes_.size(), " bytes; need at least ", seq_len + 2));
  }
  return d;
}

std::pair<torch::Tensor, torch::Tensor> TextData::Batch(uint64_t iteration, int rank, int world,
                                                        int batch, uint64_t seed) const {
  torch::Tensor input = torch::empty({batch, seq_len_}, torch::kInt64);
  torch::Tensor target = torch::empty({batch, seq_len_}, torch::kInt64);
  auto* ip = input.data_ptr<int64_t>();
  auto* tp = target.data_ptr<int64_t>();
  const uint64_t span = bytes_.size() - seq_len_ - 1;
  for (int b = 0; b < batch; ++b) {
    const uint64_t g =
        iteration * static_cast<uint64_t>(batch) * world + static_cast<uint64_t>(rank) * batch + b;
    const uint64_t start = Mix(seed * 7919 + g) % span;
    for (int s = 0; s < seq_len_; ++s) {
      ip[b * seq_len_ + s] = bytes_[start + s];
      tp[b * seq_len_ + s] = bytes_[start + s + 1];
    }
  }
  return {input, target};
}

// The dense network.
struct Trainer::Net : torch::nn::Module {
  explicit Net(const TrainerConfig& c) {
    tok = register_module("tok", torch::nn::Embedding(256, c.d_model));
    pos = register_module("pos", torch::nn::Embedding(c.seq_len, c.d_model));
    for (int l = 0; l < c.layers; ++l) {
      ln1.push_back(register_module(
          absl::StrCat("ln1_", l), torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model}))));
      qkv.push_back(
          register_module(absl::StrCat("qkv_", l),
                          torch::nn::Linear(torch::nn::LinearOptions(c.d_model, 3 * c.d_model))));
      proj.push_back(
          register_module(absl::StrCat("proj_", l),
                          torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.d_model))));
      ln2.push_back(register_module(
          absl::StrCat("ln2_", l), torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model}))));
      gate.push_back(register_module(
          absl::StrCat("gate_", l),
          torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.experts).bias(false))));
    }
    lnf = register_module("lnf", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
    head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, 256)));
  }
  torch::nn::Embedding tok{nullptr}, pos{nullptr};
  std::vector<torch::nn::LayerNorm> ln1, ln2;
  std::vector<torch::nn::Linear> qkv, proj, gate;
  torch::nn::LayerNorm lnf{nullptr};
  torch::nn::Linear head{nullptr};
};

Trainer::Trainer(const TrainerConfig& config, Communicator* comm, const pl::Cluster* cluster,
                 const pl::CostModel* cost, TextData data, AsyncLane* lane)
    : config_(config),
      device_(config.device == DeviceKind::kCuda
                  ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(config.device_index))
                  : torch::Device(torch::kCPU)),
      comm_(comm),
      cluster_(cluster),
      data_(std::move(data)),
      lane_(lane) {
  // Identical dense initialization on every rank and device: one seed, one construction order on
  // the CPU generator, then the move. The generator is process-wide: ranks that share a process
  // (tests, in-process groups) construct one at a time.
  {
    static std::mutex* const init_mu = new std::mutex;
    std::lock_guard<std::mutex> lock(*init_mu);
    torch::manual_seed(config.seed);
    net_ = std::make_unique<Net>(config);
  }
  net_->to(device_, config.float64 ? torch::kFloat64 : torch::kFloat32);
  for (const torch::Tensor& p : net_->parameters()) {
    m_.push_back(torch::zeros_like(p));
    v_.push_back(torch::zeros_like(p));
  }
  MoEConfig mc;
  mc.d_model = config.d_model;
  mc.d_ffn = config.d_ffn;
  mc.num_experts = config.experts;
  mc.top_k = config.top_k;
  mc.dtype = config.float64 ? torch::kFloat64 : torch::kFloat32;
  mc.calibration = config.calibration;
  mc.device = device_;
  for (int l = 0; l < config.layers; ++l) {
    moe_.push_back(std::make_unique<MoELayer>(l, mc, comm, cluster, cost, config.seed));
    moe_.back()->set_lane(lane);
    moe_.back()->set_copy_memory(&copy_memory_);
    if (l > 0) moe_[l]->set_next_in_backward(moe_[l - 1].get());
  }
}

void Trainer::set_observer(ScheduleObserver* observer) {
  observer_ = observer;
  for (auto& moe : moe_) moe->set_observer(observer);
}

Trainer::~Trainer() = default;

pl::ModelSpec PlacementModelFor(const TrainerConfig& c) {
  return pl::UniformModel("gpt-moe", c.layers, c.experts, c.top_k, c.d_model, c.d_ffn,
                          c.float64 ? 8 : 4, int64_t{c.batch} * c.seq_len, 0);
}

pl::ModelSpec Trainer::PlacementModel() const { return PlacementModelFor(config_); }

std::vector<torch::Tensor> Trainer::DenseParameters() { return net_->parameters(); }

absl::Status Trainer::ApplyPlan(const pl::Plan& plan) {
  std::vector<MoELayer*> layers;
  for (auto& moe : moe_) layers.push_back(moe.get());
  return ApplyPlanToLayers(plan, *cluster_, PlacementModel(), layers);
}

absl::StatusOr<StepResult> Trainer::Step(uint64_t iteration) {
  const absl::Time t_step = absl::Now();
  const int world = comm_->world_size();
  StepResult result;
  copy_memory_.ResetPeak();
  for (auto& moe : moe_) {
    moe->mutable_times().Reset();
    if (absl::Status s = moe->BeginIteration(); !s.ok()) return s;
  }
  // spAG of layer l starts at the start of layer (l - prefetch)'s attention (layers up to
  // `prefetch` at once); without a lane every spAG runs now, blocking.
  const int layers = config_.layers;
  const int prefetch = lane_ != nullptr ? std::max(0, config_.prefetch_layers) : layers;
  int next_gather = 0;
  auto gather_through = [&](int last) {
    for (; next_gather <= std::min(last, layers - 1); ++next_gather)
      moe_[next_gather]->StartGather();
  };
  auto note = [&](const char* event, int layer) {
    if (observer_ != nullptr) observer_->Record(event, layer);
  };
  auto [host_input, host_target] =
      data_.Batch(iteration, comm_->rank(), world, config_.batch, config_.seed);
  const torch::Tensor input = host_input.to(device_), target = host_target.to(device_);
  const int64_t B = config_.batch, S = config_.seq_len, D = config_.d_model, H = config_.heads;
  const int64_t global_tokens = B * S * world;
  result.tokens = global_tokens;
  double attention_s = 0;
  torch::Tensor loss;
  try {
    torch::Tensor pos = torch::arange(S, torch::TensorOptions(torch::kInt64).device(device_));
    torch::Tensor h = net_->tok->forward(input) + net_->pos->forward(pos).unsqueeze(0);
    torch::Tensor mask =
        torch::full({S, S}, -std::numeric_limits<double>::infinity(), h.options()).triu(1);
    torch::Tensor aux = torch::zeros({}, h.options());
    for (int l = 0; l < config_.layers; ++l) {
      gather_through(l + prefetch);
      note("attention_start", l);
      const absl::Time ta = absl::Now();
      torch::Tensor qkv = net_->qkv[l]->forward(net_->ln1[l]->forward(h));
      auto parts = qkv.chunk(3, -1);
      auto heads = [&](const torch::Tensor& t) { return t.view({B, S, H, D / H}).transpose(1, 2); };
      torch::Tensor q = heads(parts[0]), k = heads(parts[1]), v = heads(parts[2]);
      torch::Tensor att =
          torch::softmax(q.matmul(k.transpose(-2, -1)) / std::sqrt(double(D / H)) + mask, -1);
      torch::Tensor a = att.matmul(v).transpose(1, 2).contiguous().view({B, S, D});
      h = h + net_->proj[l]->forward(a);
      attention_s += Since(ta);
      note("attention_end", l);

      torch::Tensor z = net_->ln2[l]->forward(h).view({B * S, D});
      torch::Tensor logits = net_->gate[l]->forward(z);
      if (config_.gate_bias != 0) {
        torch::Tensor bias = torch::zeros({config_.experts}, logits.options());
        for (int j = 0; j < config_.skew_experts; ++j) {
          bias[j % config_.experts] = config_.gate_bias;
        }
        logits = logits + bias;
      }
      const TopKRouting route = TopKGate(logits, config_.top_k);
      const torch::Tensor& probs = route.probs;
      torch::Tensor m = moe_[l]->Forward(z, route.experts, route.weights);
      if (!moe_[l]->comm_status().ok()) return moe_[l]->comm_status();
      if (config_.aux_loss > 0) {
        // Switch/GShard balance loss on GLOBAL fractions: E * sum_e f_e * P_e.
        const pl::LoadMatrix& g = moe_[l]->last_global_counts();
        std::vector<int64_t> totals = g.ExpertTotals();
        torch::Tensor f =
            torch::tensor(std::vector<double>(totals.begin(), totals.end()), probs.options()) /
            static_cast<double>(global_tokens * config_.top_k);
        torch::Tensor p = probs.sum(0) / static_cast<double>(global_tokens);
        aux = aux + config_.aux_loss * config_.experts * (f * p).sum();
      }
      h = h + m.view({B, S, D});
    }
    torch::Tensor out = net_->head->forward(net_->lnf->forward(h));
    torch::Tensor nll = torch::nn::functional::cross_entropy(
        out.view({B * S, 256}), target.view({B * S}),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    loss = nll / static_cast<double>(global_tokens) + aux;
    net_->zero_grad();
    // The top layer's re-gather (if the plan re-materializes it) starts now; each layer's
    // backward starts the one below it.
    moe_.back()->StartRegather();
    loss.backward();
    note("backward_end", -1);
  } catch (const std::exception& e) {
    for (auto& moe : moe_) {
      if (!moe->comm_status().ok()) return moe->comm_status();
    }
    return absl::InternalError(absl::StrCat("iteration ", iteration, ": ", e.what()));
  }

  // Dense gradients: one flat all-reduce (sum: the loss is already divided by global tokens).
  absl::Time t0 = absl::Now();
  std::vector<torch::Tensor> params = net_->parameters();
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : params) {
    grads.push_back(p.grad().defined() ? p.grad().reshape({-1})
                                       : torch::zeros({p.numel()}, p.options()));
  }
  torch::Tensor flat = torch::cat(grads).contiguous();
  double loss_value[1] = {loss.item<double>()};
  if (world > 1) {
    if (absl::Status s =
            comm_->AllReduceSum(flat.data_ptr(), flat.numel(), config_.float64 ? 8 : 4);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = comm_->AllReduceSum(loss_value, 1, 8, CommKind::kControl); !s.ok()) {
      return s;
    }
  }
  result.times.dense_allreduce = Since(t0);
  last_dense_gradient_ = flat;
  for (auto& moe : moe_) {
    if (absl::Status s = moe->ReduceGradients(); !s.ok()) return s;
  }

  // Adam: dense parameters (replicated) and owned experts.
  ++step_;
  t0 = absl::Now();
  {
    torch::NoGradGuard no_grad;
    const AdamConfig adam{config_.lr, config_.beta1, config_.beta2, config_.eps};
    int64_t offset = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor g = flat.narrow(0, offset, params[i].numel()).view(params[i].sizes());
      offset += params[i].numel();
      AdamStep(params[i], g, m_[i], v_[i], adam, step_);
    }
  }
  const double dense_opt = Since(t0);
  for (auto& moe : moe_) moe->Step(config_.lr, config_.beta1, config_.beta2, config_.eps, step_);

  result.loss = loss_value[0];
  result.times.attention = attention_s;
  result.times.optimizer = dense_opt;
  for (auto& moe : moe_) {
    const MoEPhaseTimes& t = moe->times();
    result.times.gate += t.gate;
    result.times.dispatch += t.dispatch;
    result.times.expert += t.expert;
    result.times.combine += t.combine;
    result.times.spag += t.spag;
    result.times.sprs += t.sprs;
    result.times.spag_exposed += t.spag_exposed;
    result.times.sprs_exposed += t.sprs_exposed;
    result.times.optimizer += t.optimizer;
    result.local_counts.push_back(moe->last_local_counts());
    result.global_counts.push_back(moe->last_global_counts());
    result.calibration_copies += moe->last_calibration_copies();
    result.calibration_dropped += moe->last_calibration_dropped();
  }
  result.peak_copy_bytes = copy_memory_.peak;
  result.times.step = Since(t_step);
  return result;
}

}  // namespace hecate::worker
