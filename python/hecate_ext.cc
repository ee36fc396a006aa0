// hecate._C: the worker's FSSDP MoE layer (worker/fssdp/moe_layer.h) for PyTorch, wrapped for
// python/hecate/torch.py, and the per-process context every layer of the model shares: the
// communicator (Gloo across the ranks torchrun started, or an in-process group of one rank), the
// cluster, and the local planner that gives every rank the same plan each iteration.
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <algorithm>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/grpc_credentials.h"
#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/plan.h"
#include "placement/planning_loop.h"
#include "placement/policy.h"
#include "wire/convert.h"
#include "worker/agent/agent.h"
#include "worker/comm/async_lane.h"
#include "worker/comm/fake_communicator.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/fssdp/adam.h"
#include "worker/fssdp/apply_plan.h"
#include "worker/fssdp/gate.h"
#include "worker/fssdp/moe_layer.h"
#include "worker/plan_source.h"
#include "worker/planner_assumptions.h"
#include "worker/process_setup.h"

namespace hecate::python {
namespace {

namespace pl = placement;

void Check(const absl::Status& s) {
  if (!s.ok()) throw std::runtime_error(std::string(s.ToString()));
}

class Layer;

// The MoE layers' phases as hecate.phase_times() names them (hecate run's columns).
constexpr std::pair<const char*, double worker::MoEPhaseTimes::*> kPhases[] = {
    {"gate", &worker::MoEPhaseTimes::gate},
    {"dispatch", &worker::MoEPhaseTimes::dispatch},
    {"expert", &worker::MoEPhaseTimes::expert},
    {"combine", &worker::MoEPhaseTimes::combine},
    {"spag", &worker::MoEPhaseTimes::spag},
    {"spag_exposed", &worker::MoEPhaseTimes::spag_exposed},
    {"sprs", &worker::MoEPhaseTimes::sprs},
    {"sprs_exposed", &worker::MoEPhaseTimes::sprs_exposed},
    {"optimizer", &worker::MoEPhaseTimes::optimizer}};

// Everything the layers of one process share. Created by init() (or, without it, a one-rank
// context at the first layer); the plan is made when the first layer runs forward, from the
// layers created by then (every rank creates the same ones, in the same order). With a
// controller, plans come from it as hecate-worker takes them (PlanAgreement each iteration, the
// local planner while any rank is cut off from it), and every iteration's loads are reported.
struct Context {
  std::unique_ptr<worker::InProcessGroup> single;
  std::unique_ptr<worker::Communicator> gloo;
  worker::Communicator* comm = nullptr;
  // spAG, re-gathers and spRS on their own connections and thread, overlapped with the model's
  // compute (null: blocking, where they are needed).
  std::unique_ptr<worker::AsyncLane> lane;
  bool calibration = true;  // calibrate plans on each iteration's counts (docs/placement.md)
  worker::PlannerAssumptions assumptions;
  int reshard_period = pl::PlanningConfig().reshard_period;  // the local planner's; 0: never
  std::unique_ptr<pl::Cluster> cluster;
  std::unique_ptr<pl::CostModel> cost;  // made at the first forward, with the model
  std::string policy = "hecate";
  std::vector<Layer*> layers;
  pl::ModelSpec model;
  std::unique_ptr<worker::LocalPlanner> planner;
  std::shared_ptr<const pl::Plan> plan;
  std::shared_ptr<const pl::Plan> applied;  // the plan the layers have adopted
  uint64_t iteration = 0;
  int64_t adam_step = 0;
  bool started = false;
  bool reduced = false;  // this iteration's expert gradients are summed
  // The controller link (empty controller: local planning only).
  std::string controller, job, node;
  int local_rank = 0;
  uint64_t incarnation = 0;
  std::unique_ptr<worker::ControllerAgent> agent;
  pl::PlanId controller_applied;
  pl::ModelLoad last_global;
  worker::MoEPhaseTimes last_times;  // the last step's, summed over the layers
  // The model's own forward time between consecutive MoE layers (what the planners take for a
  // block's attention), this iteration's so far and the last step's; the tokens a layer took;
  // when the last layer forward ended and which it was; when the last step ended.
  double between_seconds = 0, last_between_seconds = 0;
  int between_gaps = 0;
  int64_t tokens = 0;
  absl::Time forward_end = absl::InfinitePast();
  int forward_layer = -1;
  absl::Time last_step_end = absl::InfinitePast();
  ~Context();
  // A checkpoint loaded before the first forward: its plan, the kept experts' state by (layer,
  // expert) as (parameters, Adam m, Adam v), applied when the layers start.
  std::shared_ptr<const pl::Plan> restore_plan;
  std::map<std::pair<int, int>, std::vector<torch::Tensor>> restore_experts;
};

std::unique_ptr<Context>& Ctx() {
  static std::unique_ptr<Context> ctx;
  return ctx;
}

Context& Require() {
  if (!Ctx()) throw std::runtime_error("hecate: init() was not called (or shutdown() was)");
  return *Ctx();
}

void Init(int rank, int world, const std::string& master_addr, int master_port, int ranks_per_node,
          const std::string& policy, double timeout_s, const std::string& controller,
          const std::string& job, const std::string& host, uint64_t incarnation, bool overlap,
          bool calibration, const worker::PlannerAssumptions& assumptions, int reshard_period,
          int cpu) {
  if (Ctx()) throw std::runtime_error("hecate: init() called twice (call shutdown() first)");
  if (absl::Status s = worker::ValidateAssumptions(assumptions); !s.ok()) {
    throw std::invalid_argument(absl::StrCat("hecate.init: ", s.message()));
  }
  if (reshard_period < 0) {
    throw std::invalid_argument(
        absl::StrCat("hecate.init: reshard_period must be >= 0, got ", reshard_period));
  }
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument(absl::StrCat("hecate.init: rank ", rank, " of world ", world));
  }
  if (ranks_per_node < 1 || world % ranks_per_node != 0) {
    throw std::invalid_argument(absl::StrCat("hecate.init: ", world,
                                             " ranks do not split into "
                                             "nodes of ",
                                             ranks_per_node));
  }
  if (!pl::MakePolicy(policy).ok()) {
    throw std::invalid_argument("hecate.init: unknown policy '" + policy + "'");
  }
  if (cpu >= 0) {
    // As hecate-worker --cpu: every thread, the BLAS pool that started with the library included.
    if (absl::Status s = worker::PinProcess(cpu); !s.ok()) {
      throw std::invalid_argument(absl::StrCat("hecate.init: cpu: ", s.message()));
    }
  }
  auto ctx = std::make_unique<Context>();
  ctx->policy = policy;
  ctx->controller = controller;
  ctx->job = job;
  ctx->node = absl::StrCat(host, "/", rank / ranks_per_node);
  ctx->local_rank = rank % ranks_per_node;
  ctx->incarnation = incarnation;
  if (world == 1) {
    ctx->single = std::make_unique<worker::InProcessGroup>(1);
    ctx->comm = ctx->single->rank(0);
  } else {
    worker::GlooOptions o;
    o.rank = rank;
    o.world_size = world;
    o.master_addr = master_addr;
    o.master_port = master_port;
    o.prefix = "hecate-python";
    o.timeout = absl::Seconds(timeout_s);
    absl::StatusOr<std::unique_ptr<worker::Communicator>> c = worker::CreateGlooCommunicator(o);
    Check(c.status());
    ctx->gloo = std::move(*c);
    ctx->comm = ctx->gloo.get();
  }
  if (overlap) {
    absl::StatusOr<std::unique_ptr<worker::Communicator>> lane = ctx->comm->CreateLane();
    Check(lane.status());
    ctx->lane = std::make_unique<worker::AsyncLane>(*std::move(lane), absl::Seconds(timeout_s));
  }
  ctx->calibration = calibration;
  ctx->assumptions = assumptions;
  ctx->reshard_period = reshard_period;
  // The planner's view of the ranks, as hecate-worker's: nodes of ranks_per_node, the assumed
  // rates, transfers hidden behind compute when there is a lane.
  absl::StatusOr<pl::Cluster> cluster = pl::Cluster::Create(worker::AssumedClusterSpec(
      assumptions, std::vector<int>(world / ranks_per_node, ranks_per_node),
      worker::kCpuDeviceMemoryBytes, overlap));
  Check(cluster.status());
  ctx->cluster = std::make_unique<pl::Cluster>(*std::move(cluster));
  Ctx() = std::move(ctx);
}

class Layer {
 public:
  Layer(int d_model, int d_ffn, int experts, int top_k, uint64_t seed, bool float64) {
    if (d_model <= 0 || d_ffn <= 0 || experts <= 0 || top_k <= 0 || top_k > experts) {
      throw std::invalid_argument(
          "MoE: d_model, d_ffn and num_experts must be positive and 1 <= top_k <= num_experts");
    }
    if (!Ctx()) {
      Init(0, 1, "", 0, 1, "hecate", 60, "", "hecate", "localhost", 1, true, true,
           worker::PlannerAssumptions{}, pl::PlanningConfig().reshard_period, /*cpu=*/-1);
    }
    Context& ctx = *Ctx();
    if (ctx.started) {
      throw std::runtime_error("hecate: every MoE layer must exist before the first forward");
    }
    worker::MoEConfig c;
    c.d_model = d_model;
    c.d_ffn = d_ffn;
    c.num_experts = experts;
    c.top_k = top_k;
    c.dtype = float64 ? torch::kFloat64 : torch::kFloat32;
    const int index = static_cast<int>(ctx.layers.size());
    layer_ =
        std::make_unique<worker::MoELayer>(index, c, ctx.comm, ctx.cluster.get(), nullptr, seed);
    layer_->set_lane(ctx.lane.get());
    // Layers run forward in creation order, so backward reaches the one created before next.
    if (index > 0) layer_->set_next_in_backward(ctx.layers.back()->layer_.get());
    ctx.layers.push_back(this);
  }
  ~Layer() {
    if (!Ctx()) return;
    std::vector<Layer*>& all = Ctx()->layers;
    all.erase(std::remove(all.begin(), all.end(), this), all.end());
  }

  // `x` [..., d_model] through the gate (`gate_weight` [num_experts, d_model], the router the C++
  // trainer uses) and the layer; the output has the shape of `x`.
  torch::Tensor Forward(const torch::Tensor& input, const torch::Tensor& gate_weight) {
    Context& ctx = Require();
    const worker::MoEConfig& c = layer_->config();
    if (input.dim() < 1 || input.size(-1) != c.d_model) {
      throw std::invalid_argument(absl::StrCat("MoE: input of shape ", c10::str(input.sizes()),
                                               "; the last dimension must be d_model=", c.d_model));
    }
    if (gate_weight.dim() != 2 || gate_weight.size(0) != c.num_experts ||
        gate_weight.size(1) != c.d_model) {
      throw std::invalid_argument(absl::StrCat(
          "MoE: input [..., ", c.d_model, "] and gate [", c.num_experts, ", ", c.d_model,
          "] expected, got ", c10::str(input.sizes()), " and ", c10::str(gate_weight.sizes())));
    }
    const torch::Tensor x = input.reshape({-1, c.d_model});
    if (!ctx.started) Start(ctx, x.size(0));
    const absl::Time entered = absl::Now();
    if (layer_->layer() == ctx.forward_layer + 1 && ctx.forward_layer >= 0) {
      ctx.between_seconds += absl::ToDoubleSeconds(entered - ctx.forward_end);
      ++ctx.between_gaps;
    }
    ctx.tokens = x.size(0);
    // With a lane, layer l + kPrefetchLayers's gather starts as layer l runs (the memory model's
    // assumption, as the trainer schedules it); this layer's own has started by now, unless the
    // model calls its layers out of creation order.
    layer_->StartGather();
    const size_t ahead = static_cast<size_t>(layer_->layer() + pl::kPrefetchLayers);
    if (ahead < ctx.layers.size()) ctx.layers[ahead]->layer_->StartGather();
    const worker::TopKRouting route = worker::TopKGate(torch::linear(x, gate_weight), c.top_k);
    torch::Tensor y = layer_->Forward(x, route.experts, route.weights);
    Check(layer_->comm_status());
    // A plan that re-materializes the top layer: its re-gather starts as its forward ends, so it
    // overlaps the model's head and loss, as the trainer starts it before backward (each layer's
    // backward starts the one below).
    if (y.requires_grad() && this == ctx.layers.back()) layer_->StartRegather();
    ctx.forward_layer = layer_->layer();
    ctx.forward_end = absl::Now();
    return y.reshape(input.sizes());
  }

  worker::MoELayer& layer() { return *layer_; }

  bool Keeps(int e) const {
    const std::vector<pl::ExpertId> kept = layer_->OwnedExperts();
    return std::find(kept.begin(), kept.end(), e) != kept.end();
  }

  void CheckOwned(int e) const {
    if (!Keeps(e)) {
      throw pybind11::key_error(
          absl::StrCat("expert ", e,
                       " is not kept by this rank under the plan in force (plans start at the "
                       "first forward)"));
    }
  }

  std::vector<int64_t> OwnedExperts() const {
    std::vector<int64_t> out;
    for (pl::ExpertId e : layer_->OwnedExperts()) out.push_back(e);
    return out;
  }
  torch::Tensor Param(int e) const {
    CheckOwned(e);
    return layer_->OwnedParam(e);
  }
  torch::Tensor Grad(int e) const {
    CheckOwned(e);
    return layer_->OwnedGrad(e);
  }

  // The first forward: the model the planner sees, the first plan, the first gathers.
  static void Start(Context& ctx, int64_t tokens) {
    const worker::MoEConfig& c = ctx.layers.front()->layer_->config();
    for (Layer* l : ctx.layers) {
      const worker::MoEConfig& o = l->layer_->config();
      if (o.d_model != c.d_model || o.d_ffn != c.d_ffn || o.num_experts != c.num_experts ||
          o.top_k != c.top_k || o.dtype != c.dtype) {
        throw std::invalid_argument("hecate: every MoE layer must have the same shape and dtype");
      }
    }
    ctx.model =
        pl::UniformModel("torch-moe", static_cast<int>(ctx.layers.size()), c.num_experts, c.top_k,
                         c.d_model, c.d_ffn, c.dtype == torch::kFloat64 ? 8 : 4, tokens, 0);
    worker::ApplyAssumptions(ctx.assumptions, ctx.model);
    pl::PlanningConfig pc;
    pc.policy = ctx.policy;
    pc.reshard_period = ctx.reshard_period;
    absl::StatusOr<std::unique_ptr<worker::LocalPlanner>> p =
        worker::LocalPlanner::Create(*ctx.cluster, ctx.model, pc);
    Check(p.status());
    ctx.planner = std::move(*p);
    // The cost model serves calibration and FasterMoE's shadow decisions alike.
    ctx.cost = std::make_unique<pl::CostModel>(*ctx.cluster, ctx.model);
    for (Layer* l : ctx.layers) {
      l->layer_->set_calibration(ctx.cost.get(), pl::CalibrationRule{ctx.calibration});
    }
    if (!ctx.controller.empty()) {
      absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
          ChannelCredentialsFor(WithEnvironment(ClientTls{}));
      Check(creds.status());
      worker::AgentConfig ac;
      ac.controller = ctx.controller;
      ac.credentials = *creds;
      wire::WorkerRegistration reg;
      reg.job_id = ctx.job;
      reg.rank = ctx.comm->rank();
      reg.world_size = ctx.comm->world_size();
      reg.node = ctx.node;
      reg.local_rank = ctx.local_rank;
      reg.device_kind = "cpu";
      reg.device_memory_bytes = worker::kCpuDeviceMemoryBytes;
      reg.incarnation = ctx.incarnation;
      reg.model = ctx.model;
      reg.links = ctx.cluster->spec();
      if (ctx.calibration) reg.calibration = pl::CalibrationRule{/*enabled=*/true};
      ac.registration = wire::ToProto(reg);
      ctx.agent = std::make_unique<worker::ControllerAgent>(ac);
      ctx.agent->Start();
    }
    ctx.started = true;
    if (ctx.restore_plan != nullptr) {
      // A checkpoint: its plan, then its experts' parameters and Adam state.
      ctx.planner->Seed(ctx.restore_plan);
      if (ctx.restore_plan->id.epoch > 0) ctx.controller_applied = ctx.restore_plan->id;
      Apply(ctx, ctx.restore_plan, &ctx.restore_experts);
      ctx.restore_plan = nullptr;
      ctx.restore_experts.clear();
      return;
    }
    // Static even sharding until a plan is agreed (as hecate-worker starts).
    auto ep = std::make_shared<const pl::Plan>(worker::ExpertParallelPlan(*ctx.cluster, ctx.model));
    ctx.planner->Seed(ep);
    ctx.plan = ep;
    Apply(ctx, Select(ctx));
  }

  // The plan for ctx.iteration (collective): the controller's when every rank holds it, else the
  // local planner's while some rank is cut off (or there is no controller).
  static std::shared_ptr<const pl::Plan> Select(Context& ctx) {
    absl::StatusOr<worker::PlanAgreement::Outcome> o = worker::PlanAgreement::Agree(
        *ctx.comm, ctx.agent.get(), ctx.iteration, ctx.controller_applied);
    Check(o.status());
    if (o->plan != nullptr) {
      ctx.controller_applied = o->plan->id;
      ctx.planner->Seed(o->plan);
      return o->plan;
    }
    if (ctx.agent == nullptr || !o->all_connected) {
      return ctx.planner->Next(ctx.iteration, ctx.last_global);
    }
    ctx.planner->Observe(ctx.last_global);
    return ctx.plan;
  }

  // Applies `plan` to every layer (collective: experts move to their new keepers), puts a
  // checkpoint's expert state in place when given, and begins the iteration (the gathers copy
  // that state).
  static void Apply(
      Context& ctx, std::shared_ptr<const pl::Plan> plan,
      const std::map<std::pair<int, int>, std::vector<torch::Tensor>>* restore = nullptr) {
    ctx.plan = std::move(plan);
    if (ctx.plan != ctx.applied) {  // as hecate-worker: only a changed plan is put in force
      std::vector<worker::MoELayer*> layers;
      for (Layer* l : ctx.layers) layers.push_back(l->layer_.get());
      Check(worker::ApplyPlanToLayers(*ctx.plan, *ctx.cluster, ctx.model, layers));
      ctx.applied = ctx.plan;
    }
    if (restore != nullptr) {
      for (const auto& [key, t] : *restore) {
        Layer& layer = *ctx.layers.at(key.first);
        if (!layer.Keeps(key.second)) {
          throw std::runtime_error(absl::StrCat(
              "hecate.load_state_dict: expert ", key.first, "/", key.second,
              " is not kept by this rank under the checkpoint's plan (another rank's file?)"));
        }
        layer.layer_->SetOwned(key.second, t[0], t[1], t[2]);
      }
    }
    // Without a lane every gather runs now, blocking; with one, the first kPrefetchLayers start
    // now and each forward starts the one kPrefetchLayers further on.
    for (size_t i = 0; i < ctx.layers.size(); ++i) {
      Layer* l = ctx.layers[i];
      Check(l->layer_->BeginIteration());
      if (ctx.lane == nullptr || i < static_cast<size_t>(pl::kPrefetchLayers)) {
        l->layer_->StartGather();
      }
    }
  }

 private:
  std::unique_ptr<worker::MoELayer> layer_;
};

// The layers outlive the context (Python owns them): they finish their work on the lane before
// it goes.
Context::~Context() {
  for (Layer* l : layers) l->layer().set_lane(nullptr);
}

// After backward on every rank: the experts' gradients summed to the ranks that keep them.
void ReduceGradients() {
  Context& ctx = Require();
  if (!ctx.started) throw std::runtime_error("hecate: no forward ran since the last step");
  if (ctx.reduced) return;
  for (Layer* l : ctx.layers) Check(l->layer().ReduceGradients());
  ctx.reduced = true;
}

// Then Adam on the experts, the iteration's counts to the planner, and the next plan applied (the
// same on every rank).
void Step(double lr, double beta1, double beta2, double eps) {
  Context& ctx = Require();
  ReduceGradients();
  ++ctx.adam_step;
  ctx.last_global.clear();
  ctx.last_times.Reset();
  for (Layer* l : ctx.layers) {
    l->layer().Step(lr, beta1, beta2, eps, ctx.adam_step);
    ctx.last_global.push_back(l->layer().last_global_counts());
    for (const auto& [name, field] : kPhases) ctx.last_times.*field += l->layer().times().*field;
    l->layer().mutable_times().Reset();
  }
  // A block's attention as the planners see it: the mean gap (none with one layer).
  const double attention = ctx.between_gaps > 0 ? ctx.between_seconds / ctx.between_gaps : 0;
  ctx.last_between_seconds = ctx.between_seconds;
  ctx.between_seconds = 0;
  ctx.between_gaps = 0;
  ctx.forward_layer = -1;
  const absl::Time now = absl::Now();
  if (ctx.agent != nullptr) {
    // What hecate-worker reports: the counts, the phases, a block's attention (here the model's
    // forward between consecutive MoE layers, which the controller's planner overlaps spAG
    // with; none with one layer), the iteration's time and tokens.
    wire::LoadReport report;
    for (Layer* l : ctx.layers) report.layers.push_back(l->layer().last_local_counts());
    report.job_id = ctx.job;
    report.rank = ctx.comm->rank();
    report.incarnation = ctx.incarnation;
    report.iteration = ctx.iteration;
    report.plan = ctx.controller_applied;
    const worker::MoEPhaseTimes& t = ctx.last_times;
    report.timings.attention_seconds = attention;
    report.timings.gate_seconds = t.gate;
    report.timings.dispatch_seconds = t.dispatch;
    report.timings.expert_seconds = t.expert;
    report.timings.combine_seconds = t.combine;
    report.timings.spag_seconds = t.spag;
    report.timings.sprs_seconds = t.sprs;
    report.timings.optimizer_seconds = t.optimizer;
    report.timings.step_seconds = ctx.last_step_end == absl::InfinitePast()
                                      ? 0
                                      : absl::ToDoubleSeconds(now - ctx.last_step_end);
    report.tokens = ctx.tokens;
    report.free_memory_bytes = ctx.cluster->spec().nodes.front().device_memory_bytes;
    ctx.agent->Enqueue(wire::ToProto(report));
  }
  ctx.last_step_end = now;
  ++ctx.iteration;
  Layer::Apply(ctx, Layer::Select(ctx));
  ctx.reduced = false;
}

// hecate.torch.Adam's step: its param_groups and state (torch.optim.Optimizer's) are read here, so
// a step is one call from Python however many parameters there are. Each parameter with a
// gradient takes the worker's Adam (worker/fssdp/adam.h) with its group's hyperparameters; its
// state starts as torch.optim.Adam's (step 0, zero moments). The group options torch.optim.Adam
// has and this step lacks are refused. Everything is checked before any parameter moves.
void AdamStepGroups(const pybind11::list& groups, const pybind11::dict& state) {
  namespace py = pybind11;
  struct Entry {
    torch::Tensor param, grad, exp_avg, exp_avg_sq;
    worker::AdamConfig config;
    int64_t step;
    py::dict state;
  };
  std::vector<Entry> entries;
  const py::str step_key("step"), exp_avg_key("exp_avg"), exp_avg_sq_key("exp_avg_sq");
  for (const py::handle group_handle : groups) {
    const py::dict group = py::reinterpret_borrow<py::dict>(group_handle);
    for (const char* unsupported : {"weight_decay", "amsgrad", "maximize"}) {
      if (group.contains(unsupported) && py::bool_(group[unsupported])) {
        throw std::invalid_argument(
            "hecate.torch.Adam: weight_decay, amsgrad and maximize are not supported (a "
            "torch.optim.Adam state dict that uses them?)");
      }
    }
    const py::sequence betas = group["betas"].cast<py::sequence>();
    if (betas.size() != 2)
      throw std::invalid_argument("hecate.torch.Adam: betas must be two numbers");
    const worker::AdamConfig config{group["lr"].cast<double>(), betas[0].cast<double>(),
                                    betas[1].cast<double>(), group["eps"].cast<double>()};
    for (const py::handle p : group["params"]) {
      const py::object grad = p.attr("grad");
      if (grad.is_none()) continue;
      const size_t i = entries.size();
      const torch::Tensor param = p.cast<torch::Tensor>();
      PyObject* found = PyDict_GetItemWithError(state.ptr(), p.ptr());
      if (found == nullptr && PyErr_Occurred()) throw py::error_already_set();
      if (found != nullptr && !PyDict_Check(found)) {
        throw std::invalid_argument(
            absl::StrCat("hecate.torch.Adam: parameter ", i, ": its state is not a dict"));
      }
      py::dict st = found != nullptr ? py::reinterpret_borrow<py::dict>(found) : py::dict();
      if (found == nullptr) state[p] = st;
      if (st.size() == 0) {
        st[step_key] = 0;
        st[exp_avg_key] = torch::zeros_like(param, torch::MemoryFormat::Preserve);
        st[exp_avg_sq_key] = torch::zeros_like(param, torch::MemoryFormat::Preserve);
      }
      Entry e{param,
              grad.cast<torch::Tensor>(),
              st[exp_avg_key].cast<torch::Tensor>(),
              st[exp_avg_sq_key].cast<torch::Tensor>(),
              config,
              py::int_(st[step_key]).cast<int64_t>() + 1,
              st};
      if (!param.is_floating_point() || param.is_sparse()) {
        throw std::invalid_argument(absl::StrCat("hecate.torch.Adam: parameter ", i,
                                                 " is not a dense floating-point tensor"));
      }
      for (const torch::Tensor* t : {&e.grad, &e.exp_avg, &e.exp_avg_sq}) {
        if (t->is_sparse() || t->sizes() != param.sizes() ||
            t->scalar_type() != param.scalar_type() || t->device() != param.device()) {
          throw std::invalid_argument(absl::StrCat(
              "hecate.torch.Adam: parameter ", i,
              ": its gradient and state must be dense and of its shape, dtype and device"));
        }
      }
      if (e.step < 1) {
        throw std::invalid_argument(absl::StrCat("hecate.torch.Adam: parameter ", i, ": step ",
                                                 e.step, " (counts from 1)"));
      }
      entries.push_back(std::move(e));
    }
  }
  torch::NoGradGuard no_grad;
  for (Entry& e : entries) {
    worker::AdamStep(e.param, e.grad, e.exp_avg, e.exp_avg_sq, e.config, e.step);
    e.state[step_key] = e.step;
  }
}

// Sums a tensor over the ranks in place (dense gradients, when torch.distributed is not used).
void AllReduce(torch::Tensor& t) {
  Context& ctx = Require();
  if (!t.is_contiguous() || !t.device().is_cpu()) {
    throw std::invalid_argument("hecate.all_reduce_: a contiguous CPU tensor");
  }
  // The communicator sums float32 or float64; any other element type would be summed as those.
  if (t.scalar_type() != torch::kFloat && t.scalar_type() != torch::kDouble) {
    throw std::invalid_argument(absl::StrCat(
        "hecate.all_reduce_: a float32 or float64 tensor, got ", c10::toString(t.scalar_type())));
  }
  if (ctx.comm->world_size() == 1) return;
  Check(ctx.comm->AllReduceSum(t.data_ptr(), t.numel(), static_cast<int>(t.element_size())));
}

// The sum over the ranks of one number, in float64 on the control connection: how hecate-worker
// sums its loss for the log.
double GlobalSum(double value) {
  Context& ctx = Require();
  if (ctx.comm->world_size() > 1)
    Check(ctx.comm->AllReduceSum(&value, 1, 8, worker::CommKind::kControl));
  return value;
}

// This rank's part of a checkpoint: the plan in force (serialized hecate.v1.Plan), the iteration
// and Adam step, and every kept expert's parameters and Adam moments. Call between steps.
pybind11::dict StateDict() {
  Context& ctx = Require();
  if (!ctx.started || ctx.plan == nullptr) {
    throw std::runtime_error("hecate.state_dict: no plan yet (run a forward and step first)");
  }
  pybind11::dict d;
  d["plan"] = pybind11::bytes(wire::ToProto(*ctx.plan).SerializeAsString());
  d["iteration"] = ctx.iteration;
  d["adam_step"] = ctx.adam_step;
  d["rank"] = ctx.comm->rank();
  d["world_size"] = ctx.comm->world_size();
  pybind11::dict experts;
  for (size_t l = 0; l < ctx.layers.size(); ++l) {
    worker::MoELayer& m = ctx.layers[l]->layer();
    for (pl::ExpertId e : m.OwnedExperts()) {
      experts[pybind11::make_tuple(static_cast<int>(l), e)] = pybind11::make_tuple(
          m.OwnedParam(e).clone(), m.OwnedAdamM(e).clone(), m.OwnedAdamV(e).clone());
    }
  }
  d["experts"] = experts;
  return d;
}

// Restores this rank's part of a checkpoint (from state_dict() on the same rank of a run with the
// same ranks and layers); call after creating the layers and before the first forward.
void LoadStateDict(const pybind11::dict& d) {
  Context& ctx = Require();
  if (ctx.started) {
    throw std::runtime_error("hecate.load_state_dict: call it before the first forward");
  }
  if (d["world_size"].cast<int>() != ctx.comm->world_size() ||
      d["rank"].cast<int>() != ctx.comm->rank()) {
    throw std::invalid_argument(absl::StrCat("hecate.load_state_dict: the checkpoint is rank ",
                                             d["rank"].cast<int>(), " of ",
                                             d["world_size"].cast<int>(), "; this is rank ",
                                             ctx.comm->rank(), " of ", ctx.comm->world_size()));
  }
  v1::Plan proto;
  if (!proto.ParseFromString(d["plan"].cast<std::string>())) {
    throw std::invalid_argument("hecate.load_state_dict: the plan does not parse");
  }
  auto plan = std::make_shared<pl::Plan>(wire::FromProto(proto));
  if (plan->layers.size() != ctx.layers.size()) {
    throw std::invalid_argument(absl::StrCat("hecate.load_state_dict: the checkpoint has ",
                                             plan->layers.size(), " MoE layers; the model has ",
                                             ctx.layers.size()));
  }
  std::map<std::pair<int, int>, std::vector<torch::Tensor>> experts;
  for (auto item : d["experts"].cast<pybind11::dict>()) {
    auto key = item.first.cast<std::pair<int, int>>();
    auto t = item.second.cast<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>>();
    experts[key] = {std::get<0>(t), std::get<1>(t), std::get<2>(t)};
  }
  ctx.restore_plan = std::move(plan);
  ctx.restore_experts = std::move(experts);
  ctx.iteration = d["iteration"].cast<uint64_t>();
  ctx.adam_step = d["adam_step"].cast<int64_t>();
}

// The MoE layers' phases in the last step, summed over the layers, ms (hecate run's columns).
pybind11::dict PhaseTimes() {
  const worker::MoEPhaseTimes& t = Require().last_times;
  pybind11::dict d;
  for (const auto& [name, field] : kPhases) d[name] = t.*field * 1e3;
  d["between_layers"] = Require().last_between_seconds * 1e3;
  return d;
}

pybind11::dict PlanInfo() {
  Context& ctx = Require();
  pybind11::dict d;
  d["epoch"] = ctx.plan ? ctx.plan->id.epoch : 0;
  d["version"] = ctx.plan ? ctx.plan->id.version : 0;
  d["policy"] = ctx.plan ? ctx.plan->policy : "";
  int copies = 0;
  if (ctx.plan) {
    for (const pl::LayerPlan& l : ctx.plan->layers) {
      for (const auto& h : l.replicas) copies += static_cast<int>(h.size()) - 1;
    }
  }
  d["copies"] = copies;
  d["iteration"] = ctx.iteration;
  d["rank"] = ctx.comm->rank();
  d["connected"] = ctx.agent != nullptr && ctx.agent->connected();
  d["world_size"] = ctx.comm->world_size();
  return d;
}

// The bytes this rank has sent since init(), by collective (the lane's included): what `hecate
// run` reports as spAG, spRS and All-to-All bytes.
pybind11::dict BytesSent() {
  Context& ctx = Require();
  pybind11::dict d;
  for (int k = 0; k < static_cast<int>(worker::CommKind::kCount); ++k) {
    const auto kind = static_cast<worker::CommKind>(k);
    d[worker::CommKindName(kind)] = ctx.comm->counters().sent(kind);
  }
  return d;
}

}  // namespace
}  // namespace hecate::python

PYBIND11_MODULE(_C, m) {
  namespace hp = hecate::python;
  namespace py = pybind11;
  m.doc() = "Hecate's FSSDP MoE layer (see python/hecate/torch.py)";
  m.def(
      "init",
      [](int rank, int world, const std::string& master_addr, int master_port, int ranks_per_node,
         const std::string& policy, double timeout_s, const std::string& controller,
         const std::string& job, const std::string& host, uint64_t incarnation, bool overlap,
         bool calibration, double attention_ms, double device_gflops, double link_gbytes,
         double copy_overhead_ms, int reshard_period, int cpu) {
        hp::Init(rank, world, master_addr, master_port, ranks_per_node, policy, timeout_s,
                 controller, job, host, incarnation, overlap, calibration,
                 {attention_ms, device_gflops, link_gbytes, copy_overhead_ms}, reshard_period, cpu);
      },
      py::arg("rank"), py::arg("world_size"), py::arg("master_addr"), py::arg("master_port"),
      py::arg("ranks_per_node"), py::arg("policy"), py::arg("timeout_s"), py::arg("controller"),
      py::arg("job"), py::arg("host"), py::arg("incarnation"), py::arg("overlap"),
      py::arg("calibration"), py::arg("attention_ms"), py::arg("device_gflops"),
      py::arg("link_gbytes"), py::arg("copy_overhead_ms"), py::arg("reshard_period"),
      py::arg("cpu"));
  // What hecate-worker does at start: "" when done, else why not.
  m.def("keep_freed_memory",
        [] { return std::string(hecate::worker::KeepFreedMemory().message()); });
  m.def("initialized", [] { return hp::Ctx() != nullptr; });
  m.def("shutdown", [] {
    if (hp::Ctx() && hp::Ctx()->agent) hp::Ctx()->agent->Stop();
    hp::Ctx().reset();
  });
  m.def("reduce_gradients", &hp::ReduceGradients);
  m.def("step", &hp::Step);
  m.def("all_reduce_", &hp::AllReduce);
  m.def("global_sum", [](const torch::Tensor& t) {
    if (t.numel() != 1) {
      throw std::invalid_argument(absl::StrCat(
          "hecate.global_sum: a number or a one-element tensor, got shape ", c10::str(t.sizes())));
    }
    return hp::GlobalSum(t.item<double>());
  });
  m.def("global_sum", &hp::GlobalSum);
  m.def("adam_step_groups_", &hp::AdamStepGroups, py::arg("param_groups"), py::arg("state"));
  m.def("plan_info", &hp::PlanInfo);
  m.def("phase_times", &hp::PhaseTimes);
  m.def("bytes_sent", &hp::BytesSent);
  m.def("state_dict", &hp::StateDict);
  m.def("load_state_dict", &hp::LoadStateDict);
  py::class_<hp::Layer>(m, "Layer")
      .def(py::init<int, int, int, int, uint64_t, bool>(), py::arg("d_model"), py::arg("d_ffn"),
           py::arg("num_experts"), py::arg("top_k"), py::arg("seed"), py::arg("float64"))
      .def("forward", &hp::Layer::Forward)
      .def("owned_experts", &hp::Layer::OwnedExperts)
      .def("param", &hp::Layer::Param)
      .def("grad", &hp::Layer::Grad);
}
