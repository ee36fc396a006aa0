// CUDA versions of kernels/kernels.h: the same signatures with device pointers and a stream, the
// same index math (parity-tested against the CPU reference). Launches are asynchronous on
// `stream`; the return value is the launch status (cudaGetLastError).
#ifndef HECATE_KERNELS_CUDA_KERNELS_CUDA_H_
#define HECATE_KERNELS_CUDA_KERNELS_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace hecate::kernels::cuda {

cudaError_t GatherRows(const float* x, int64_t d, const int64_t* index, int64_t n, float* out,
                       cudaStream_t stream);
cudaError_t WeightedCombine(const float* in, int64_t d, int64_t tokens, int64_t k,
                            const float* weights, const int64_t* position, float* y,
                            cudaStream_t stream);
cudaError_t WeightedCombineBackward(const float* in, const float* grad_y, int64_t d, int64_t tokens,
                                    int64_t k, const float* weights, const int64_t* position,
                                    float* grad_in, float* grad_weights, cudaStream_t stream);
cudaError_t AccumulateChunks(const float* received, const int64_t* offsets, int64_t chunks,
                             int64_t chunk_elems, float* dst, cudaStream_t stream);

// Number of usable CUDA devices; 0 (never an error) when there is no driver or device.
int DeviceCount();

}  // namespace hecate::kernels::cuda

#endif  // HECATE_KERNELS_CUDA_KERNELS_CUDA_H_
