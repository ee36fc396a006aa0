// The FSSDP MoE layer on CUDA against the same layer on the CPU: same seed, same inputs, four
// training iterations (forward, backward, SparseReduceScatter, Adam) — outputs, input gradients,
// owned-expert gradients and parameters must agree within 1e-4 relative. The CUDA layer runs over
// the NCCL communicator (one rank, bootstrapped from the in-process fake), so this also exercises
// NcclCommunicator's AllGatherInt64 (host buffers, staged) and AllToAllV (device buffers). Also
// checks that a CUDA layer refuses a host-memory communicator. A plain program so that
// kernels/tools/gpu_check.sh can build it on a GPU machine without Bazel; "SKIPPED" without CUDA.
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cuda/gpu_test_skip.h"
#include "placement/cluster.h"
#include "placement/plan.h"
#include "worker/comm/fake_communicator.h"
#include "worker/comm/nccl/nccl_communicator.h"
#include "worker/fssdp/moe_layer.h"

namespace {

namespace pl = hecate::placement;
using hecate::worker::MoEConfig;
using hecate::worker::MoELayer;

int failures = 0;

void Expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

bool Close(const torch::Tensor& a, const torch::Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() &&
         torch::allclose(a.to(torch::kCPU, torch::kFloat64), b.to(torch::kCPU, torch::kFloat64),
                         1e-4, 1e-5);
}

}  // namespace

int main() {
  if (!torch::cuda::is_available()) {
    return hecate::kernels::SkipTest("moe_layer_cuda_check",
                                     "no CUDA device or a CPU-only LibTorch");
  }
  const pl::Cluster cluster = pl::Cluster::Uniform(1, 1, int64_t{80} << 30, 1e14, 1e11, 1e10);
  hecate::worker::InProcessGroup group(1);
  absl::StatusOr<std::unique_ptr<hecate::worker::Communicator>> nccl =
      hecate::worker::CreateNcclCommunicator(*group.rank(0), {0, absl::Seconds(30)});
  Expect(nccl.ok(), "NCCL communicator: " + nccl.status().ToString());
  if (!nccl.ok()) return 1;

  MoEConfig cpu_cfg;
  cpu_cfg.d_model = 64;
  cpu_cfg.d_ffn = 128;
  cpu_cfg.num_experts = 8;
  cpu_cfg.top_k = 2;
  cpu_cfg.device = torch::kCPU;
  MoEConfig gpu_cfg = cpu_cfg;
  gpu_cfg.device = torch::kCUDA;

  pl::LayerPlan plan;
  for (int e = 0; e < cpu_cfg.num_experts; ++e) {
    plan.owner.push_back(0);
    plan.replicas.push_back({0});
  }
  {
    MoELayer wrong(0, gpu_cfg, group.rank(0), &cluster, nullptr, 7);
    const absl::Status s = wrong.ApplyPlan(plan, pl::DispatchRule::kLoadAware);
    Expect(s.code() == absl::StatusCode::kFailedPrecondition,
           "CUDA layer on a host communicator is FAILED_PRECONDITION: " + s.ToString());
  }
  MoELayer cpu(0, cpu_cfg, group.rank(0), &cluster, nullptr, 7);
  MoELayer gpu(0, gpu_cfg, nccl->get(), &cluster, nullptr, 7);
  Expect(cpu.ApplyPlan(plan, pl::DispatchRule::kLoadAware).ok(), "cpu ApplyPlan");
  Expect(gpu.ApplyPlan(plan, pl::DispatchRule::kLoadAware).ok(), "cuda ApplyPlan");

  torch::manual_seed(3);
  const int64_t tokens = 96, d = cpu_cfg.d_model;
  for (int it = 1; it <= 4; ++it) {
    const std::string tag = " (iteration " + std::to_string(it) + ")";
    Expect(cpu.BeginIteration().ok() && gpu.BeginIteration().ok(), "BeginIteration" + tag);
    cpu.StartGather();
    gpu.StartGather();
    const torch::Tensor x0 = torch::randn({tokens, d});
    // Skewed routing: experts 0 and 1 take most tokens.
    const torch::Tensor logits = torch::randn({tokens, cpu_cfg.num_experts}) +
                                 torch::tensor({3.f, 2.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f});
    const auto [topv, topi] = torch::softmax(logits, -1).topk(cpu_cfg.top_k, -1);
    const torch::Tensor g = torch::randn({tokens, d});

    torch::Tensor xc = x0.clone().requires_grad_(true);
    torch::Tensor yc = cpu.Forward(xc, topi, topv);
    (yc * g).sum().backward();
    torch::Tensor xg = x0.clone().requires_grad_(true);  // a CPU input: the layer moves it
    torch::Tensor yg = gpu.Forward(xg, topi, topv);
    Expect(yg.device().is_cpu(), "output comes back on the caller's device" + tag);
    (yg * g).sum().backward();
    Expect(Close(yc, yg), "forward output cuda == cpu" + tag);
    Expect(Close(xc.grad(), xg.grad()), "input gradient cuda == cpu" + tag);

    Expect(cpu.ReduceGradients().ok() && gpu.ReduceGradients().ok(), "ReduceGradients" + tag);
    bool grads = true, device_ok = true;
    for (pl::ExpertId e : cpu.OwnedExperts()) {
      grads = grads && Close(cpu.OwnedGrad(e), gpu.OwnedGrad(e));
      device_ok = device_ok && gpu.OwnedParam(e).device().is_cuda();
    }
    Expect(grads, "expert gradients cuda == cpu" + tag);
    Expect(device_ok, "expert parameters live on the GPU" + tag);
    cpu.Step(1e-3, 0.9, 0.999, 1e-8, it);
    gpu.Step(1e-3, 0.9, 0.999, 1e-8, it);
    bool params = true;
    for (pl::ExpertId e : cpu.OwnedExperts()) {
      params = params && Close(cpu.OwnedParam(e), gpu.OwnedParam(e)) &&
               Close(cpu.OwnedAdamV(e), gpu.OwnedAdamV(e));
    }
    Expect(params, "parameters and Adam state after the step cuda == cpu" + tag);
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
