#include "worker/fssdp/gate.h"

#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"

namespace hecate::worker {
namespace {

TEST(TopKGateTest, EachTokensTopExpertsWithWeightsRenormalizedOverThem) {
  const torch::Tensor logits =
      torch::tensor({{0.0, 2.0, 1.0, -1.0}, {3.0, 0.0, 0.5, 2.5}}, torch::kFloat64);
  const TopKRouting r = TopKGate(logits, 2);
  EXPECT_TRUE(torch::allclose(r.probs, torch::softmax(logits, -1)));
  EXPECT_EQ(r.experts.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(r.experts, torch::tensor({{1, 2}, {0, 3}}, torch::kInt64)));
  // Renormalized: e^2 / (e^2 + e^1) and e^1 / (e^2 + e^1) for the first token.
  const double a = std::exp(2.0), b = std::exp(1.0);
  EXPECT_NEAR(r.weights[0][0].item<double>(), a / (a + b), 1e-12);
  EXPECT_NEAR(r.weights[0][1].item<double>(), b / (a + b), 1e-12);
  EXPECT_TRUE(torch::allclose(r.weights.sum(-1), torch::ones({2}, torch::kFloat64)));
}

TEST(TopKGateTest, GradientsReachTheLogitsOfTheChosenExpertsOnly) {
  const torch::Tensor logits =
      torch::tensor({{0.0, 2.0, 1.0, -1.0}}, torch::kFloat64).requires_grad_(true);
  const TopKRouting r = TopKGate(logits, 2);
  (r.weights * torch::tensor({{1.0, 3.0}}, torch::kFloat64)).sum().backward();
  const torch::Tensor g = logits.grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(g[0][1].abs().item<double>(), 1e-3);
  EXPECT_GT(g[0][2].abs().item<double>(), 1e-3);
  // Renormalized over the chosen two, the weights do not depend on the others' logits.
  EXPECT_NEAR(g[0][0].item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(g[0][3].item<double>(), 0.0, 1e-12);
}

}  // namespace
}  // namespace hecate::worker
