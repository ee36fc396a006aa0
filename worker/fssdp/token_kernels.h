// The MoE layer's token movement on tensors, through kernels/ (kernels/kernels.h): float32 rows
// run the CPU reference on CPU tensors and the CUDA kernel on CUDA tensors (builds with
// HECATE_CUDA_KERNELS, on LibTorch's current stream); other dtypes (the float64 test path) use the
// same formula as tensor ops. Inputs are not modified; results are new contiguous tensors.
#ifndef HECATE_WORKER_FSSDP_TOKEN_KERNELS_H_
#define HECATE_WORKER_FSSDP_TOKEN_KERNELS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace hecate::worker {

// out[i] = x[index[i]] (rows); `index` int64 on x's device. The dispatch permutation.
at::Tensor GatherRows(const at::Tensor& x, const at::Tensor& index);

// y[t] = sum_j weights[t*k + j] * in[position[t*k + j]] for t < weights.numel() / k: the top-k
// combine straight from the rows as they came back (`position`: the row of each assignment).
at::Tensor WeightedCombine(const at::Tensor& in, const at::Tensor& weights,
                           const at::Tensor& position, int64_t k);

// Its gradient: grad_in[position[a]] = weights[a] * grad_y[a / k] (rows no assignment uses are
// zero; `position` must not repeat a row) and grad_weights[a] = dot(grad_y[a / k],
// in[position[a]]).
std::pair<at::Tensor, at::Tensor> WeightedCombineBackward(const at::Tensor& in,
                                                          const at::Tensor& grad_y,
                                                          const at::Tensor& weights,
                                                          const at::Tensor& position, int64_t k);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_FSSDP_TOKEN_KERNELS_H_
