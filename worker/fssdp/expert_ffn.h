// The experts' FFN (x W1 -> GELU -> W2) over the tokens a rank received, grouped by expert: one
// gather into expert-major order, then one GEMM pair per expert on contiguous slices — cuBLAS for
// CUDA tensors, the CPU BLAS otherwise — and one scatter back. Forward and a hand-written backward
// (the MoE layer's custom autograd calls both). Depends on LibTorch only (no Abseil), so
// kernels/tools/gpu_check.sh can build it against PyTorch's CUDA LibTorch.
//
// An expert's parameters are one flat tensor: W1 [d x f] followed by W2 [f x d].
#ifndef HECATE_WORKER_FSSDP_EXPERT_FFN_H_
#define HECATE_WORKER_FSSDP_EXPERT_FFN_H_

#include <torch/torch.h>

#include <vector>

namespace hecate::worker {

// The rows of `x` each expert processes (int64 indices on x's device) and its parameters.
struct ExpertGroups {
  std::vector<torch::Tensor> rows;
  std::vector<torch::Tensor> params;  // flat, 2 * d * f
};

// What backward needs: the expert-major permutation and the pre-activations x_e W1 (one tensor,
// groups consecutive).
struct ExpertFfnSaved {
  torch::Tensor order;
  std::vector<int64_t> sizes;
  torch::Tensor pre;
};

// out[r] = GELU(x[r] W1_e) W2_e for every row r of group e; rows in no group are zero.
torch::Tensor ExpertFfnForward(const torch::Tensor& x, const ExpertGroups& groups, int64_t d,
                               int64_t f, ExpertFfnSaved* saved);

// Given dL/dout, returns dL/dx and adds dL/dparams_e into grads[e] (flat, like params).
torch::Tensor ExpertFfnBackward(const torch::Tensor& x, const torch::Tensor& grad_out,
                                const ExpertGroups& groups, int64_t d, int64_t f,
                                const ExpertFfnSaved& saved, std::vector<torch::Tensor>* grads);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_FSSDP_EXPERT_FFN_H_
