#include "worker/fssdp/adam.h"

#include <torch/torch.h>

#include "gtest/gtest.h"

namespace hecate::worker {
namespace {

struct State {
  at::Tensor p, m, v;
};

State Random(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({n}), torch::zeros({n}), torch::zeros({n})};
}

State Clone(const State& s) { return {s.p.clone(), s.m.clone(), s.v.clone()}; }

TEST(AdamTest, FusedPassMatchesTheTensorFormulaOverSteps) {
  const int64_t n = 100003;  // not a multiple of any vector width or grain
  State fused = Random(n, 1);
  State ops = Clone(fused);
  const at::Tensor start = fused.p.clone();
  AdamConfig c;
  c.lr = 1e-2;
  for (int64_t step = 1; step <= 5; ++step) {
    torch::manual_seed(100 + step);
    const at::Tensor g = torch::randn({n});
    AdamStep(fused.p, g, fused.m, fused.v, c, step);
    AdamStepOps(ops.p, g, ops.m, ops.v, c, step);
  }
  // Five steps of lr 1e-2 move the parameters by ~lr per step each (random gradient signs make
  // some net moves small, so the mean is checked).
  EXPECT_GT((fused.p - start).abs().mean().item<float>(), 1e-3);
  EXPECT_LT((fused.p - ops.p).abs().max().item<float>(), 1e-6);
  EXPECT_LT((fused.m - ops.m).abs().max().item<float>(), 1e-6);
  EXPECT_LT(((fused.v - ops.v).abs() / ops.v.abs().clamp_min(1e-12)).max().item<float>(), 1e-5);
}

TEST(AdamTest, StridedOrDoubleTensorsTakeTheTensorFormula) {
  // A strided view: the fallback must update the viewed elements exactly as the formula does.
  State fused = Random(64, 2), ops = Clone(fused);
  const at::Tensor g = torch::randn({64});
  AdamConfig c;
  AdamStep(fused.p.view({8, 8}).t(), g.view({8, 8}).t(), fused.m.view({8, 8}).t(),
           fused.v.view({8, 8}).t(), c, 1);
  AdamStepOps(ops.p.view({8, 8}).t(), g.view({8, 8}).t(), ops.m.view({8, 8}).t(),
              ops.v.view({8, 8}).t(), c, 1);
  EXPECT_TRUE(torch::equal(fused.p, ops.p));
  EXPECT_TRUE(torch::equal(fused.v, ops.v));

  State d{torch::randn({32}, torch::kDouble), torch::zeros({32}, torch::kDouble),
          torch::zeros({32}, torch::kDouble)};
  State d_ops = Clone(d);
  const at::Tensor gd = torch::randn({32}, torch::kDouble);
  AdamStep(d.p, gd, d.m, d.v, c, 3);
  AdamStepOps(d_ops.p, gd, d_ops.m, d_ops.v, c, 3);
  EXPECT_TRUE(torch::equal(d.p, d_ops.p));
}

}  // namespace
}  // namespace hecate::worker
