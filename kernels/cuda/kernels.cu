// CUDA kernels of kernels/kernels.h. Row copies move float4 when the row width allows (the
// permute/pack kernels are bandwidth-bound: the target is >= 70% of HBM bandwidth on H100/H200).
#include "kernels/cuda/kernels_cuda.h"

namespace hecate::kernels::cuda {

namespace {

constexpr int kThreads = 256;

int Blocks(int64_t work, int64_t per_block = kThreads) {
  int64_t b = (work + per_block - 1) / per_block;
  if (b > 65535L * 32) b = 65535L * 32;
  return static_cast<int>(b < 1 ? 1 : b);
}

// One warp per row (grid-stride over rows, kRowsPerBlock rows per block), lanes over the row's
// float4s with four loads in flight per lane: out[i] = x[index[i]].
constexpr int kRowsPerBlock = kThreads / 32;

__global__ void CopyRows(const float* __restrict__ x, int64_t d, const int64_t* __restrict__ index,
                         int64_t n, float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  for (int64_t i = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / 32; i < n;
       i += int64_t{gridDim.x} * kRowsPerBlock) {
    const int64_t at = index[i];
    const float* src = x + at * d;
    float* dst = out + i * d;
    if ((d & 3) == 0) {
      const float4* s4 = reinterpret_cast<const float4*>(src);
      float4* d4 = reinterpret_cast<float4*>(dst);
      const int64_t v = d / 4;
      int64_t c = lane;
      for (; c + 96 < v; c += 128) {
        const float4 a = s4[c], b = s4[c + 32], e = s4[c + 64], f = s4[c + 96];
        d4[c] = a;
        d4[c + 32] = b;
        d4[c + 64] = e;
        d4[c + 96] = f;
      }
      for (; c < v; c += 32) d4[c] = s4[c];
    } else {
      for (int64_t c = lane; c < d; c += 32) dst[c] = src[c];
    }
  }
}

__global__ void CombineKernel(const float* __restrict__ in, int64_t d, int64_t tokens, int64_t k,
                              const float* __restrict__ w, const int64_t* __restrict__ pos,
                              float* __restrict__ y) {
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    if ((d & 3) == 0) {  // float4 loads; per component the same order as the CPU reference
      float4* out = reinterpret_cast<float4*>(y + t * d);
      for (int64_t c = threadIdx.x; c < d / 4; c += blockDim.x) {
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int64_t j = 0; j < k; ++j) {
          const int64_t a = t * k + j;
          const float wa = w[a];
          const float4 v = reinterpret_cast<const float4*>(in + pos[a] * d)[c];
          acc.x += wa * v.x;
          acc.y += wa * v.y;
          acc.z += wa * v.z;
          acc.w += wa * v.w;
        }
        out[c] = acc;
      }
    } else {
      for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0;
        for (int64_t j = 0; j < k; ++j) {
          const int64_t a = t * k + j;  // same order as the CPU reference
          acc += w[a] * in[pos[a] * d + c];
        }
        y[t * d + c] = acc;
      }
    }
  }
}

__global__ void CombineBackwardKernel(const float* __restrict__ in, const float* __restrict__ gy,
                                      int64_t d, int64_t assignments, int64_t k,
                                      const float* __restrict__ w, const int64_t* __restrict__ pos,
                                      float* __restrict__ gin, float* __restrict__ gw) {
  __shared__ float partial[kThreads];
  for (int64_t a = blockIdx.x; a < assignments; a += gridDim.x) {
    const float* g = gy + (a / k) * d;
    const float* src = in + pos[a] * d;
    float* out = gin + pos[a] * d;
    float dot = 0;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      out[c] = w[a] * g[c];
      dot += g[c] * src[c];
    }
    partial[threadIdx.x] = dot;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) gw[a] = partial[0];
    __syncthreads();
  }
}

__global__ void AccumulateKernel(const float* __restrict__ received,
                                 const int64_t* __restrict__ offsets, int64_t chunks, int64_t elems,
                                 float* dst) {
  for (int64_t i = blockIdx.y; i < chunks; i += gridDim.y) {
    for (int64_t j = blockIdx.x * blockDim.x + threadIdx.x; j < elems;
         j += gridDim.x * blockDim.x) {
      atomicAdd(dst + offsets[i] + j, received[i * elems + j]);
    }
  }
}

}  // namespace

cudaError_t GatherRows(const float* x, int64_t d, const int64_t* index, int64_t n, float* out,
                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  CopyRows<<<Blocks(n, kRowsPerBlock), kThreads, 0, stream>>>(x, d, index, n, out);
  return cudaGetLastError();
}

cudaError_t WeightedCombine(const float* in, int64_t d, int64_t tokens, int64_t k,
                            const float* weights, const int64_t* position, float* y,
                            cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  CombineKernel<<<Blocks(tokens, 1), kThreads, 0, stream>>>(in, d, tokens, k, weights, position, y);
  return cudaGetLastError();
}

cudaError_t WeightedCombineBackward(const float* in, const float* grad_y, int64_t d, int64_t tokens,
                                    int64_t k, const float* weights, const int64_t* position,
                                    float* grad_in, float* grad_weights, cudaStream_t stream) {
  if (tokens * k == 0) return cudaSuccess;
  CombineBackwardKernel<<<Blocks(tokens * k, 1), kThreads, 0, stream>>>(
      in, grad_y, d, tokens * k, k, weights, position, grad_in, grad_weights);
  return cudaGetLastError();
}

// Chunk kernels: blockIdx.y walks the chunks, blockIdx.x/threadIdx.x the elements of one chunk.
static dim3 ChunkGrid(int64_t chunks, int64_t work_per_chunk) {
  return dim3(Blocks(work_per_chunk), static_cast<unsigned>(chunks < 65535 ? chunks : 65535));
}

cudaError_t AccumulateChunks(const float* received, const int64_t* offsets, int64_t chunks,
                             int64_t chunk_elems, float* dst, cudaStream_t stream) {
  if (chunks == 0 || chunk_elems == 0) return cudaSuccess;
  AccumulateKernel<<<ChunkGrid(chunks, chunk_elems), kThreads, 0, stream>>>(
      received, offsets, chunks, chunk_elems, dst);
  return cudaGetLastError();
}

int DeviceCount() {
  int count = 0;  // left unwritten by the runtime when there is no driver
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

}  // namespace hecate::kernels::cuda
