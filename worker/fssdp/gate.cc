#include "worker/fssdp/gate.h"

#include <torch/torch.h>

namespace hecate::worker {

TopKRouting TopKGate(const at::Tensor& logits, int64_t k) {
  TopKRouting r;
  r.probs = torch::softmax(logits, -1);
  auto [top_p, top_i] = r.probs.topk(k, -1);
  r.experts = top_i;
  r.weights = top_p / top_p.sum(-1, true);
  return r;
}

}  // namespace hecate::worker
