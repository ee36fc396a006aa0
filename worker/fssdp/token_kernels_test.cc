// The token movement's kernel path (float32: kernels/ CPU references) against its tensor-op path
// (float64, the same formula), and the combine's gradients against autograd.
#include "worker/fssdp/token_kernels.h"

#include <torch/torch.h>

#include <gtest/gtest.h>

namespace hecate::worker {
namespace {

// A random permutation of n rows.
torch::Tensor Permutation(int64_t n) { return torch::randperm(n, torch::kInt64); }

TEST(TokenKernelsTest, GatherRowsMatchesIndexSelect) {
  torch::manual_seed(3);
  for (int64_t d : {1, 3, 8}) {
    const torch::Tensor x = torch::randn({7, d});
    const torch::Tensor index = torch::randint(0, 7, {11}, torch::kInt64);
    const torch::Tensor got = GatherRows(x, index);
    EXPECT_TRUE(torch::equal(got, x.index_select(0, index))) << "d " << d;
    // The float64 path (tensor ops) gives the same rows.
    EXPECT_TRUE(torch::equal(GatherRows(x.to(torch::kFloat64), index), got.to(torch::kFloat64)));
  }
  EXPECT_EQ(GatherRows(torch::randn({3, 4}), torch::empty({0}, torch::kInt64)).size(0), 0);
}

TEST(TokenKernelsTest, CombineAndItsGradientsMatchAutograd) {
  torch::manual_seed(5);
  for (int64_t k : {1, 2, 3}) {
    const int64_t tokens = 9, d = 5;
    const torch::Tensor position = Permutation(tokens * k);
    torch::Tensor in = torch::randn({tokens * k, d}, torch::kFloat64).requires_grad_(true);
    torch::Tensor w = torch::rand({tokens, k}, torch::kFloat64).requires_grad_(true);
    torch::Tensor grad_y = torch::randn({tokens, d}, torch::kFloat64);
    // Autograd on the plain formula.
    torch::Tensor y_ref =
        (in.index_select(0, position).view({tokens, k, d}) * w.unsqueeze(-1)).sum(1);
    y_ref.backward(grad_y);
    for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
      const double tol = dtype == torch::kFloat32 ? 1e-5 : 1e-12;
      const torch::Tensor in_d = in.detach().to(dtype), w_d = w.detach().to(dtype);
      const torch::Tensor y = WeightedCombine(in_d, w_d, position, k);
      EXPECT_TRUE(torch::allclose(y.to(torch::kFloat64), y_ref.detach(), tol, tol)) << k;
      auto [grad_in, grad_w] = WeightedCombineBackward(in_d, grad_y.to(dtype), w_d, position, k);
      EXPECT_TRUE(torch::allclose(grad_in.to(torch::kFloat64), in.grad(), tol, tol)) << k;
      EXPECT_TRUE(torch::allclose(grad_w.to(torch::kFloat64).view({tokens, k}), w.grad(), tol, tol))
          << k;
    }
  }
}

}  // namespace
}  // namespace hecate::worker
