// Kernel throughput against the GPU's memory bandwidth, and expert GEMM TFLOP/s against its bf16
// peak. Prints a table; exits 0 with "SKIPPED: ..." where there is no GPU.
//
// Bandwidth references, both printed: (1) the datasheet HBM peak for known parts (H100 SXM
// 3.35 TB/s, H100 PCIe 2.0, H200 4.8, A100-40G 1.555, A100-80G 2.039), else 2 x memory clock x bus
// width from the device attributes; (2) a device-to-device cudaMemcpy of the same size, the
// practical ceiling. Kernel bytes = bytes read + bytes written (index arrays included).
// GEMM: the expert FFN's first matmul [tokens x d] x [d x 4d] in bf16 with fp32 accumulation via
// cublasGemmEx, at expert batch sizes the MoE layer sees.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/kernels_cuda.h"

namespace {

namespace kc = hecate::kernels::cuda;

#define CUDA_OK(x)                                                                              \
  do {                                                                                          \
    cudaError_t err_ = (x);                                                                     \
    if (err_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(err_)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

struct Peak {
  double hbm_gbs;
  double bf16_tflops;  // dense tensor-core peak
  const char* source;
};

Peak DatasheetPeak(const cudaDeviceProp& prop) {
  const std::string name = prop.name;
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H200")) return {4800, 989, "datasheet H200"};
  if (has("H100") && has("PCIe")) return {2000, 756, "datasheet H100 PCIe"};
  if (has("H100")) return {3350, 989, "datasheet H100 SXM"};
  if (has("A100") && prop.totalGlobalMem > (50ULL << 30)) return {2039, 312, "datasheet A100-80G"};
  if (has("A100")) return {1555, 312, "datasheet A100-40G"};
  int clock_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
  return {2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9, 0, "device attributes"};
}

// Median of `reps` timed runs of `fn` after a warm-up, milliseconds.
double TimeMs(const std::function<void()>& fn, int reps = 20) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  fn();
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

template <typename T>
T* Alloc(size_t n) {
  T* p = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)));
  CUDA_OK(cudaMemset(p, 0, n * sizeof(T)));
  return p;
}

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* p = Alloc<T>(v.size());
  CUDA_OK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

void Row(const char* kernel, const std::string& shape, double bytes, double ms, double copy_gbs,
         const Peak& peak) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("%-22s %-28s %9.3f %10.1f %9.1f%% %9.1f%%\n", kernel, shape.c_str(), ms, gbs,
              100 * gbs / peak.hbm_gbs, 100 * gbs / copy_gbs);
}

}  // namespace

int main() {
  if (kc::DeviceCount() == 0) {
    std::printf("SKIPPED: no CUDA device (kernel_bench needs a GPU)\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  const Peak peak = DatasheetPeak(prop);
  std::printf(
      "device: %s, sm_%d%d, %.1f GiB; HBM peak %.0f GB/s, bf16 dense peak %.0f TFLOP/s (%s)\n",
      prop.name, prop.major, prop.minor, prop.totalGlobalMem / double(1 << 30), peak.hbm_gbs,
      peak.bf16_tflops, peak.source);

  // Practical ceiling: D2D copy of 1 GiB.
  const size_t copy_bytes = size_t{1} << 30;
  char* c1 = Alloc<char>(copy_bytes);
  char* c2 = Alloc<char>(copy_bytes);
  const double copy_ms =
      TimeMs([&] { cudaMemcpyAsync(c2, c1, copy_bytes, cudaMemcpyDeviceToDevice); });
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
  cudaFree(c1);
  cudaFree(c2);
  std::printf("cudaMemcpy D2D 1 GiB: %.3f ms, %.1f GB/s (%.1f%% of HBM peak)\n\n", copy_ms,
              copy_gbs, 100 * copy_gbs / peak.hbm_gbs);

  std::printf("%-22s %-28s %9s %10s %10s %10s\n", "kernel", "shape", "ms", "GB/s", "of HBM",
              "of D2D");
  std::mt19937 rng(1);
  // Token permutation at MoE shapes: tokens x top-2 assignments of width d.
  for (int64_t d : {1024, 4096}) {
    const int64_t tokens = 16384, k = 2, n = tokens * k;
    std::vector<int64_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int64_t> token_of(n);
    for (int64_t i = 0; i < n; ++i) token_of[i] = perm[i] / k;
    float* x = Alloc<float>(tokens * d);
    float* out = Alloc<float>(n * d);
    float* y = Alloc<float>(tokens * d);
    float* w = Alloc<float>(n);
    int64_t* idx = Upload(token_of);
    int64_t* pidx = Upload(perm);
    const std::string shape = std::to_string(n) + " rows x " + std::to_string(d);
    const double row_bytes = 4.0 * d;
    double ms = TimeMs([&] { kc::GatherRows(x, d, idx, n, out, nullptr); });
    Row("GatherRows (permute)", shape, 2 * n * row_bytes + 8.0 * n, ms, copy_gbs, peak);
    ms = TimeMs([&] { kc::WeightedCombine(out, d, tokens, k, w, pidx, y, nullptr); });
    Row("WeightedCombine", shape, (n + tokens) * row_bytes + 12.0 * n, ms, copy_gbs, peak);
    cudaFree(x);
    cudaFree(out);
    cudaFree(y);
    cudaFree(w);
    cudaFree(idx);
    cudaFree(pidx);
  }
  // Gradient accumulation of received expert chunks (spRS on device memory): chunks of
  // 2 x d x 4d floats.
  for (int64_t d : {1024, 2048}) {
    const int64_t chunk = 2 * d * 4 * d, held = 8, chunks = 6;
    float* params = Alloc<float>(held * chunk);
    float* packed = Alloc<float>(chunks * chunk);
    std::vector<int64_t> offsets;
    for (int64_t c = 0; c < chunks; ++c) offsets.push_back(((c * 3) % held) * chunk);
    int64_t* off = Upload(offsets);
    const std::string shape =
        std::to_string(chunks) + " chunks x " + std::to_string(chunk * 4 >> 20) + " MiB";
    const double ms =
        TimeMs([&] { kc::AccumulateChunks(packed, off, chunks, chunk, params, nullptr); });
    Row("AccumulateChunks", shape, 3.0 * chunks * chunk * 4, ms, copy_gbs, peak);
    cudaFree(params);
    cudaFree(packed);
    cudaFree(off);
  }

  // Expert GEMM, bf16 in, fp32 accumulate: [m x d] x [d x 4d].
  std::printf("\n%-22s %-28s %9s %10s %10s\n", "gemm (cuBLAS bf16)", "m x d x 4d", "ms", "TFLOP/s",
              "of peak");
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::printf("FAIL: cublasCreate\n");
    return 1;
  }
  for (int64_t d : {1024, 2048, 4096}) {
    for (int64_t m : {512, 2048, 8192}) {
      const int64_t f = 4 * d;
      __nv_bfloat16* a = Alloc<__nv_bfloat16>(m * d);
      __nv_bfloat16* b = Alloc<__nv_bfloat16>(d * f);
      __nv_bfloat16* c = Alloc<__nv_bfloat16>(m * f);
      const float alpha = 1, beta = 0;
      // Row-major C[m x f] = A[m x d] B[d x f] is column-major C^T = B^T A^T.
      auto gemm = [&] {
        cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, f, m, d, &alpha, b, CUDA_R_16BF, f, a,
                     CUDA_R_16BF, d, &beta, c, CUDA_R_16BF, f, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
      };
      const double ms = TimeMs(gemm);
      const double tflops = 2.0 * m * d * f / (ms * 1e-3) / 1e12;
      const std::string shape =
          std::to_string(m) + " x " + std::to_string(d) + " x " + std::to_string(f);
      std::printf("%-22s %-28s %9.3f %10.1f %9.1f%%\n", "expert FFN1", shape.c_str(), ms, tflops,
                  peak.bf16_tflops > 0 ? 100 * tflops / peak.bf16_tflops : 0.0);
      cudaFree(a);
      cudaFree(b);
      cudaFree(c);
    }
  }
  cublasDestroy(handle);
  return 0;
}
