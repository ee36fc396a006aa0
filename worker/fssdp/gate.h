// The MoE layers' router, shared by the C++ trainer and the PyTorch front end: a softmax over the
// experts' logits, each token's top-k experts, their probabilities renormalized over the k.
#ifndef HECATE_WORKER_FSSDP_GATE_H_
#define HECATE_WORKER_FSSDP_GATE_H_

#include <ATen/core/Tensor.h>

namespace hecate::worker {

struct TopKRouting {
  at::Tensor probs;    // [T, E], the softmax (for a balance loss)
  at::Tensor experts;  // [T, k], int64
  at::Tensor weights;  // [T, k], summing to 1 per token
};

// `logits` [T, E]; differentiable through autograd. Precondition: 1 <= k <= E.
TopKRouting TopKGate(const at::Tensor& logits, int64_t k);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_FSSDP_GATE_H_
