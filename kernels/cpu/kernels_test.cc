// Properties of the CPU reference kernels: permutation round trips, combine against a hand-worked
// example, the combine backward against finite differences, counts, pack/unpack round trips and
// accumulation with repeated targets.
#include "kernels/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace hecate::kernels {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

std::vector<int64_t> Permutation(int64_t n, uint32_t seed) {
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  std::shuffle(p.begin(), p.end(), std::mt19937(seed));
  return p;
}

TEST(KernelsCpu, GatherPicksIndexedRows) {
  const std::vector<float> x = {0, 1, 10, 11, 20, 21};  // 3 rows, d = 2
  const std::vector<int64_t> index = {2, 0, 2};
  std::vector<float> out(6, -1);
  GatherRows(x.data(), 2, index.data(), 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{20, 21, 0, 1, 20, 21}));
}

TEST(KernelsCpu, ZeroRowsWriteNothing) {
  std::vector<float> out(4, 5.f);
  GatherRows(nullptr, 4, nullptr, 0, out.data());
  EXPECT_EQ(out, std::vector<float>(4, 5.f));
}

TEST(KernelsCpu, CombineMatchesHandWorkedExample) {
  // 2 tokens, k = 2, d = 2; expert outputs rows 0..3.
  const std::vector<float> in = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<float> w = {0.5f, 0.25f, 1.f, 2.f};
  const std::vector<int64_t> pos = {3, 0, 1, 2};
  std::vector<float> y(4, -1);
  WeightedCombine(in.data(), 2, 2, 2, w.data(), pos.data(), y.data());
  EXPECT_FLOAT_EQ(y[0], 0.5f * 7 + 0.25f * 1);
  EXPECT_FLOAT_EQ(y[1], 0.5f * 8 + 0.25f * 2);
  EXPECT_FLOAT_EQ(y[2], 1.f * 3 + 2.f * 5);
  EXPECT_FLOAT_EQ(y[3], 1.f * 4 + 2.f * 6);
}

// L = sum(grad_y * combine(in, w)); its gradient by central differences must match the kernel.
TEST(KernelsCpu, CombineBackwardMatchesFiniteDifferences) {
  const int64_t tokens = 5, k = 3, d = 6;
  std::vector<float> in = Random(tokens * k * d, 11);
  std::vector<float> w = Random(tokens * k, 12);
  const std::vector<float> gy = Random(tokens * d, 13);
  const std::vector<int64_t> pos = Permutation(tokens * k, 14);
  std::vector<float> gin(in.size(), 0), gw(w.size(), 0);
  WeightedCombineBackward(in.data(), gy.data(), d, tokens, k, w.data(), pos.data(), gin.data(),
                          gw.data());
  auto loss = [&]() {
    std::vector<float> y(tokens * d);
    WeightedCombine(in.data(), d, tokens, k, w.data(), pos.data(), y.data());
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += double{gy[i]} * y[i];
    return s;
  };
  const float h = 1e-2f;
  for (size_t i = 0; i < in.size(); i += 7) {
    const float keep = in[i];
    in[i] = keep + h;
    const double up = loss();
    in[i] = keep - h;
    const double down = loss();
    in[i] = keep;
    EXPECT_NEAR(gin[i], (up - down) / (2 * h), 2e-3) << "in[" << i << "]";
  }
  for (size_t a = 0; a < w.size(); ++a) {
    const float keep = w[a];
    w[a] = keep + h;
    const double up = loss();
    w[a] = keep - h;
    const double down = loss();
    w[a] = keep;
    EXPECT_NEAR(gw[a], (up - down) / (2 * h), 2e-3) << "w[" << a << "]";
  }
}

TEST(KernelsCpu, AccumulateAddsRepeatedTargets) {
  const int64_t chunk = 3;
  const std::vector<float> received = {1, 2, 3, 10, 20, 30, 100, 200, 300};
  const std::vector<int64_t> offsets = {0, 3, 0};
  std::vector<float> dst = {1, 1, 1, 1, 1, 1};
  AccumulateChunks(received.data(), offsets.data(), 3, chunk, dst.data());
  EXPECT_EQ(dst, (std::vector<float>{102, 203, 304, 11, 21, 31}));
}

}  // namespace
}  // namespace hecate::kernels
