// hecate._C: the worker's FSSDP MoE layer (worker/fssdp/moe_layer.h) for PyTorch, wrapped for
// python/hecate/torch.py. One process for now: an in-process group of one rank on a one-device
// cluster, every expert owned by it.
#include <torch/extension.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "placement/cluster.h"
#include "placement/plan.h"
#include "worker/comm/fake_communicator.h"
#include "worker/fssdp/moe_layer.h"

namespace hecate::python {
namespace {

namespace pl = placement;

void Check(const absl::Status& s) {
  if (!s.ok()) throw std::runtime_error(std::string(s.ToString()));
}

class Layer {
 public:
  Layer(int layer, int d_model, int d_ffn, int experts, int top_k, uint64_t seed, bool float64)
      : group_(1), cluster_(pl::Cluster::Uniform(1, 1, int64_t{1} << 36, 1e12, 1e11, 1e11)) {
    if (d_model <= 0 || d_ffn <= 0 || experts <= 0 || top_k <= 0 || top_k > experts) {
      throw std::invalid_argument(
          "MoE: d_model, d_ffn and num_experts must be positive and 1 <= top_k <= num_experts");
    }
    worker::MoEConfig c;
    c.d_model = d_model;
    c.d_ffn = d_ffn;
    c.num_experts = experts;
    c.top_k = top_k;
    c.dtype = float64 ? torch::kFloat64 : torch::kFloat32;
    layer_ = std::make_unique<worker::MoELayer>(layer, c, group_.rank(0), &cluster_, nullptr, seed);
    pl::LayerPlan plan;
    plan.owner.assign(experts, 0);
    plan.replicas.assign(experts, {0});
    Check(layer_->ApplyPlan(plan, pl::DispatchRule::kLoadAware));
    Begin();
  }

  // x [T, d_model], topk_idx [T, k] int64, topk_w [T, k]: the experts' weighted sum [T, d_model].
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& topk_idx,
                        const torch::Tensor& topk_w) {
    torch::Tensor y = layer_->Forward(x, topk_idx, topk_w);
    Check(layer_->comm_status());
    return y;
  }

  // After backward: the experts' gradients summed, Adam on them, and the next iteration begun.
  void Step(double lr, double beta1, double beta2, double eps) {
    Check(layer_->ReduceGradients());
    layer_->Step(lr, beta1, beta2, eps, ++step_);
    Begin();
  }

  torch::Tensor Param(int e) const { return layer_->OwnedParam(e); }
  torch::Tensor Grad(int e) const { return layer_->OwnedGrad(e); }
  std::vector<int64_t> Counts() const { return layer_->last_local_counts(); }

 private:
  void Begin() {
    Check(layer_->BeginIteration());
    layer_->StartGather();
  }

  worker::InProcessGroup group_;
  pl::Cluster cluster_;
  std::unique_ptr<worker::MoELayer> layer_;
  int64_t step_ = 0;
};

}  // namespace
}  // namespace hecate::python

PYBIND11_MODULE(_C, m) {
  namespace hp = hecate::python;
  m.doc() = "Hecate's FSSDP MoE layer (see python/hecate/torch.py)";
  pybind11::class_<hp::Layer>(m, "Layer")
      .def(pybind11::init<int, int, int, int, int, uint64_t, bool>(), pybind11::arg("layer"),
           pybind11::arg("d_model"), pybind11::arg("d_ffn"), pybind11::arg("num_experts"),
           pybind11::arg("top_k"), pybind11::arg("seed"), pybind11::arg("float64"))
      .def("forward", &hp::Layer::Forward)
      .def("step", &hp::Layer::Step)
      .def("param", &hp::Layer::Param)
      .def("grad", &hp::Layer::Grad)
      .def("counts", &hp::Layer::Counts);
}
