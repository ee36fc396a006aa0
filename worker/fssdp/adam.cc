#include "worker/fssdp/adam.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>

namespace hecate::worker {

namespace {

bool Fusable(const at::Tensor& t, int64_t n) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
         t.numel() == n;
}

}  // namespace

void AdamStepOps(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& m,
                 const at::Tensor& v, const AdamConfig& config, int64_t step) {
  torch::NoGradGuard no_grad;
  const double c1 = 1.0 - std::pow(config.beta1, static_cast<double>(step));
  const double c2 = 1.0 - std::pow(config.beta2, static_cast<double>(step));
  at::Tensor mm = m, vv = v, p = param;
  mm.mul_(config.beta1).add_(grad, 1.0 - config.beta1);
  vv.mul_(config.beta2).addcmul_(grad, grad, 1.0 - config.beta2);
  p.addcdiv_(mm / c1, (vv / c2).sqrt_().add_(config.eps), -config.lr);
}

void AdamStep(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& m,
              const at::Tensor& v, const AdamConfig& config, int64_t step) {
  const int64_t n = param.numel();
  if (!(Fusable(param, n) && Fusable(grad, n) && Fusable(m, n) && Fusable(v, n))) {
    AdamStepOps(param, grad, m, v, config, step);
    return;
  }
  const double c1 = 1.0 - std::pow(config.beta1, static_cast<double>(step));
  const double c2 = 1.0 - std::pow(config.beta2, static_cast<double>(step));
  const float b1 = static_cast<float>(config.beta1), a1 = static_cast<float>(1.0 - config.beta1);
  const float b2 = static_cast<float>(config.beta2), a2 = static_cast<float>(1.0 - config.beta2);
  const float step_size = static_cast<float>(config.lr / c1);
  const float inv_c2 = static_cast<float>(1.0 / c2);
  const float eps = static_cast<float>(config.eps);
  // Distinct tensors of one shape (the caller's contract): no aliasing, so the loop vectorizes.
  float* __restrict p = param.data_ptr<float>();
  const float* __restrict g = grad.data_ptr<float>();
  float* __restrict mp = m.data_ptr<float>();
  float* __restrict vp = v.data_ptr<float>();
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float mi = b1 * mp[i] + a1 * gi;
      const float vi = b2 * vp[i] + a2 * gi * gi;
      mp[i] = mi;
      vp[i] = vi;
      p[i] -= step_size * mi / (std::sqrt(vi * inv_c2) + eps);
    }
  });
}

}  // namespace hecate::worker
