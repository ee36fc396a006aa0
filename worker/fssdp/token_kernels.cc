#include "worker/fssdp/token_kernels.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

#ifdef HECATE_CUDA_KERNELS
#include "kernels/cuda/kernels_cuda.h"
#ifdef HECATE_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif
#endif

namespace hecate::worker {
namespace {

// Which implementation a call takes.
enum class Path { kCpuKernel, kCudaKernel, kTensorOps };

Path Choose(const at::Tensor& rows) {
  if (rows.scalar_type() != at::kFloat) return Path::kTensorOps;
  if (rows.device().is_cpu()) return Path::kCpuKernel;
#ifdef HECATE_CUDA_KERNELS
  if (rows.device().is_cuda()) return Path::kCudaKernel;
#endif
  return Path::kTensorOps;
}

#ifdef HECATE_CUDA_KERNELS
cudaStream_t Stream() {
#ifdef HECATE_TORCH_CUDA
  return at::cuda::getCurrentCUDAStream().stream();
#else
  return nullptr;  // the legacy default stream, where LibTorch queues its work by default
#endif
}

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#endif

at::Tensor Contiguous(const at::Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

}  // namespace

at::Tensor GatherRows(const at::Tensor& x_in, const at::Tensor& index_in) {
  const Path path = Choose(x_in);
  if (path == Path::kTensorOps) return x_in.index_select(0, index_in).contiguous();
  const at::Tensor x = Contiguous(x_in), index = Contiguous(index_in);
  const int64_t n = index.numel(), d = x.size(1);
  at::Tensor out = at::empty({n, d}, x.options());
  if (n == 0) return out;
  if (path == Path::kCpuKernel) {
    kernels::GatherRows(x.data_ptr<float>(), d, index.data_ptr<int64_t>(), n,
                        out.data_ptr<float>());
  } else {
#ifdef HECATE_CUDA_KERNELS
    Check(kernels::cuda::GatherRows(x.data_ptr<float>(), d, index.data_ptr<int64_t>(), n,
                                    out.data_ptr<float>(), Stream()),
          "GatherRows");
#endif
  }
  return out;
}

at::Tensor WeightedCombine(const at::Tensor& in_, const at::Tensor& weights_,
                           const at::Tensor& position_, int64_t k) {
  const int64_t tokens = weights_.numel() / k, d = in_.size(1);
  const Path path = Choose(in_);
  if (path == Path::kTensorOps) {
    return (in_.index_select(0, position_).view({tokens, k, d}) *
            weights_.reshape({tokens, k, 1}).to(in_.scalar_type()))
        .sum(1);
  }
  const at::Tensor in = Contiguous(in_), position = Contiguous(position_);
  const at::Tensor weights = Contiguous(weights_.to(at::kFloat)).view({-1});
  at::Tensor y = at::empty({tokens, d}, in.options());
  if (tokens == 0) return y;
  if (path == Path::kCpuKernel) {
    kernels::WeightedCombine(in.data_ptr<float>(), d, tokens, k, weights.data_ptr<float>(),
                             position.data_ptr<int64_t>(), y.data_ptr<float>());
  } else {
#ifdef HECATE_CUDA_KERNELS
    Check(kernels::cuda::WeightedCombine(in.data_ptr<float>(), d, tokens, k,
                                         weights.data_ptr<float>(), position.data_ptr<int64_t>(),
                                         y.data_ptr<float>(), Stream()),
          "WeightedCombine");
#endif
  }
  return y;
}

std::pair<at::Tensor, at::Tensor> WeightedCombineBackward(const at::Tensor& in_,
                                                          const at::Tensor& grad_y_,
                                                          const at::Tensor& weights_,
                                                          const at::Tensor& position_, int64_t k) {
  const int64_t tokens = weights_.numel() / k, d = in_.size(1);
  const Path path = Choose(in_);
  if (path == Path::kTensorOps) {
    const at::Tensor w = weights_.reshape({tokens, k, 1}).to(in_.scalar_type());
    const at::Tensor per_assignment = (grad_y_.unsqueeze(1) * w).reshape({tokens * k, d});
    at::Tensor grad_in = at::zeros_like(in_).index_add_(0, position_, per_assignment);
    at::Tensor grad_w = (in_.index_select(0, position_).view({tokens, k, d}) * grad_y_.unsqueeze(1))
                            .sum(2)
                            .reshape({-1});
    return {grad_in, grad_w};
  }
  const at::Tensor in = Contiguous(in_), grad_y = Contiguous(grad_y_);
  const at::Tensor position = Contiguous(position_);
  const at::Tensor weights = Contiguous(weights_.to(at::kFloat)).view({-1});
  at::Tensor grad_in = at::zeros_like(in);
  at::Tensor grad_w = at::empty({tokens * k}, in.options());
  if (tokens == 0) return {grad_in, grad_w};
  if (path == Path::kCpuKernel) {
    kernels::WeightedCombineBackward(in.data_ptr<float>(), grad_y.data_ptr<float>(), d, tokens, k,
                                     weights.data_ptr<float>(), position.data_ptr<int64_t>(),
                                     grad_in.data_ptr<float>(), grad_w.data_ptr<float>());
  } else {
#ifdef HECATE_CUDA_KERNELS
    Check(kernels::cuda::WeightedCombineBackward(
              in.data_ptr<float>(), grad_y.data_ptr<float>(), d, tokens, k,
              weights.data_ptr<float>(), position.data_ptr<int64_t>(), grad_in.data_ptr<float>(),
              grad_w.data_ptr<float>(), Stream()),
          "WeightedCombineBackward");
#endif
  }
  return {grad_in, grad_w};
}

}  // namespace hecate::worker
