// Parity of every CUDA kernel with its CPU reference (kernels/kernels.h) on small and odd shapes:
// zero tokens, one expert, odd row widths (scalar path), widths divisible by 4 (float4 path),
// ragged expert counts and repeated accumulation targets. Copies must match bit for bit; sums
// (combine, accumulate) within 1e-5 relative, since the GPU may fuse or reorder additions.
//
// A plain program so that kernels/tools/gpu_check.sh can build it with CMake where there is no
// Bazel or GoogleTest. Exit 0: all passed, or skipped with "SKIPPED: ..." when there is no GPU.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/gpu_test_skip.h"
#include "kernels/cuda/kernels_cuda.h"
#include "kernels/kernels.h"

namespace {

namespace k = hecate::kernels;
namespace kc = hecate::kernels::cuda;

int failures = 0;
int checks = 0;

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(n, 1) * sizeof(T));
    if (n > 0) cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<T> Host() const {
    std::vector<T> out(n);
    if (n > 0) cudaMemcpy(out.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
    return out;
  }
};

// `got` reads the device result; it runs only after the launch and a synchronize (a plain argument
// could be evaluated before the launch: argument evaluation order is unspecified).
void Check(const std::string& what, cudaError_t launch, const std::vector<float>& want,
           const std::function<std::vector<float>()>& read, double rel) {
  ++checks;
  const cudaError_t sync = cudaDeviceSynchronize();
  if (launch != cudaSuccess || sync != cudaSuccess) {
    std::printf("FAIL %s: %s\n", what.c_str(),
                cudaGetErrorString(launch != cudaSuccess ? launch : sync));
    ++failures;
    return;
  }
  const std::vector<float> got = read();
  if (got.size() != want.size()) {
    std::printf("FAIL %s: %zu elements, want %zu\n", what.c_str(), got.size(), want.size());
    ++failures;
    return;
  }
  for (size_t i = 0; i < want.size(); ++i) {
    const double tol = rel * std::max(1.0, std::fabs(static_cast<double>(want[i])));
    if (!(std::fabs(static_cast<double>(want[i]) - got[i]) <= tol)) {
      std::printf("FAIL %s: element %zu want %.9g got %.9g\n", what.c_str(), i, want[i], got[i]);
      ++failures;
      return;
    }
  }
}

std::vector<float> Random(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

struct Shape {
  int64_t tokens, d, k, experts;
};

void RunShape(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::string tag = "tokens=" + std::to_string(s.tokens) + " d=" + std::to_string(s.d) +
                          " k=" + std::to_string(s.k) + " experts=" + std::to_string(s.experts);
  const int64_t n = s.tokens * s.k;  // assignments
  // Ragged routing: expert e gets weight 2^-e, so the first experts are hot and some may be empty.
  std::vector<int64_t> expert(n);
  std::vector<double> weight(s.experts);
  for (int64_t e = 0; e < s.experts; ++e) weight[e] = std::pow(0.5, static_cast<double>(e));
  std::discrete_distribution<int64_t> pick(weight.begin(), weight.end());
  for (int64_t& e : expert) e = pick(rng);
  // The permutation to expert-major order (what dispatch builds): stable sort by expert.
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int64_t a, int64_t b) { return expert[a] < expert[b]; });
  std::vector<int64_t> token_of(n);
  for (int64_t i = 0; i < n; ++i) token_of[i] = perm[i] / s.k;

  const std::vector<float> x = Random(s.tokens * s.d, rng);
  DeviceBuffer<float> dx(x);
  DeviceBuffer<int64_t> didx(token_of);

  // GatherRows: tokens into expert-major order.
  std::vector<float> want(n * s.d);
  k::GatherRows(x.data(), s.d, token_of.data(), n, want.data());
  DeviceBuffer<float> dout(std::vector<float>(n * s.d, 0));
  Check(
      "GatherRows " + tag, kc::GatherRows(dx.ptr, s.d, didx.ptr, n, dout.ptr, nullptr), want,
      [&] { return dout.Host(); }, 0);

  // Expert outputs in sent-row order, for the combine.
  const std::vector<float> rows = Random(n * s.d, rng);
  DeviceBuffer<float> drows(rows);

  // WeightedCombine and its backward: position[a] = where assignment a's output row sits.
  std::vector<int64_t> position(n);
  for (int64_t i = 0; i < n; ++i) position[perm[i]] = i;
  const std::vector<float> w = Random(n, rng);
  std::vector<float> want_y(s.tokens * s.d, 0);
  k::WeightedCombine(rows.data(), s.d, s.tokens, s.k, w.data(), position.data(), want_y.data());
  DeviceBuffer<float> dw(w), dy(std::vector<float>(s.tokens * s.d, 0));
  DeviceBuffer<int64_t> dpos(position);
  Check(
      "WeightedCombine " + tag,
      kc::WeightedCombine(drows.ptr, s.d, s.tokens, s.k, dw.ptr, dpos.ptr, dy.ptr, nullptr), want_y,
      [&] { return dy.Host(); }, 1e-5);

  const std::vector<float> gy = Random(s.tokens * s.d, rng);
  std::vector<float> want_gin(n * s.d, 0), want_gw(n, 0);
  k::WeightedCombineBackward(rows.data(), gy.data(), s.d, s.tokens, s.k, w.data(), position.data(),
                             want_gin.data(), want_gw.data());
  DeviceBuffer<float> dgy(gy), dgin(std::vector<float>(n * s.d, 0)), dgw(std::vector<float>(n, 0));
  const cudaError_t e = kc::WeightedCombineBackward(drows.ptr, dgy.ptr, s.d, s.tokens, s.k, dw.ptr,
                                                    dpos.ptr, dgin.ptr, dgw.ptr, nullptr);
  Check(
      "WeightedCombineBackward(grad_in) " + tag, e, want_gin, [&] { return dgin.Host(); }, 1e-5);
  Check(
      "WeightedCombineBackward(grad_w) " + tag, e, want_gw, [&] { return dgw.Host(); }, 1e-4);

  // Accumulate over expert chunks: chunk = 2 * d * d_ffn floats (odd when d is).
  const int64_t chunk = s.d * 3;
  const int64_t held = s.experts + 1;
  const std::vector<float> params = Random(held * chunk, rng);
  std::vector<int64_t> offsets;
  for (int64_t c = 0; c < s.experts; ++c) offsets.push_back(((c * 5) % held) * chunk);
  // Accumulate with a repeated target (chunk 0 twice).
  std::vector<int64_t> acc_off = offsets;
  if (!acc_off.empty()) acc_off.push_back(acc_off[0]);
  const int64_t acc_chunks = static_cast<int64_t>(acc_off.size());
  const std::vector<float> received = Random(acc_chunks * chunk, rng);
  std::vector<float> want_a = params;
  k::AccumulateChunks(received.data(), acc_off.data(), acc_chunks, chunk, want_a.data());
  DeviceBuffer<float> drecv(received), dacc(params);
  DeviceBuffer<int64_t> dacc_off(acc_off);
  Check(
      "AccumulateChunks " + tag,
      kc::AccumulateChunks(drecv.ptr, dacc_off.ptr, acc_chunks, chunk, dacc.ptr, nullptr), want_a,
      [&] { return dacc.Host(); }, 1e-5);
}

}  // namespace

int main() {
  const int devices = kc::DeviceCount();
  if (devices == 0) {
    return hecate::kernels::SkipTest("kernels_parity_test",
                                     "no CUDA device (kernels compiled; parity needs a GPU)");
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  const std::vector<Shape> shapes = {
      {0, 4, 2, 1},      // zero tokens
      {1, 1, 1, 1},      // one token, one expert, width 1
      {7, 3, 2, 5},      // odd width: scalar path
      {33, 12, 2, 1},    // one expert, float4 path
      {64, 128, 2, 8},   // ragged counts over 8 experts
      {257, 36, 4, 16},  // top-4, many empty experts
      {1000, 1024, 2, 64},
  };
  uint32_t seed = 1;
  for (const Shape& s : shapes) RunShape(s, seed++);
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
