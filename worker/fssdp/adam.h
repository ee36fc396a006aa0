// One Adam step (torch.optim.Adam without weight decay), in place, for the trainer's dense
// parameters and the MoE layer's owned experts:
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
//   p <- p - lr (m / c1) / (sqrt(v / c2) + eps),  c1 = 1 - b1^step, c2 = 1 - b2^step.
// Contiguous float32 CPU tensors take one fused pass (p, g, m, v read once; p, m, v written once)
// instead of ~20 passes and two temporaries of tensor ops; anything else (CUDA, other dtypes,
// strided views) uses the tensor ops. The two agree to float rounding.
#ifndef HECATE_WORKER_FSSDP_ADAM_H_
#define HECATE_WORKER_FSSDP_ADAM_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace hecate::worker {

struct AdamConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// `step` >= 1 counts this step. Preconditions: the four tensors have the same shape and dtype.
void AdamStep(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& m,
              const at::Tensor& v, const AdamConfig& config, int64_t step);

// The tensor-op formula, always (the reference the fused pass is tested against).
void AdamStepOps(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& m,
                 const at::Tensor& v, const AdamConfig& config, int64_t step);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_FSSDP_ADAM_H_
