// An independent reference for the FSSDP equivalence test: the GPT-MoE the trainer trains
// (worker/model/trainer.h), written again directly with LibTorch autograd and nothing of Hecate's
// below it: a dense mixture of experts where every expert is applied to the tokens routed to it,
// the whole global batch in one process, and its own Adam. It reads its own data and takes only
// the initial parameter values from outside.
//
// This header includes <torch/torch.h>: include it only from tests.
#ifndef HECATE_TESTS_REFERENCE_MOE_H_
#define HECATE_TESTS_REFERENCE_MOE_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace hecate::reference {

struct Config {
  int layers = 2;
  int d_model = 16;
  int heads = 2;
  int experts = 4;
  int top_k = 2;
  int d_ffn = 32;
  int seq_len = 8;
  int batch_per_rank = 2;
  int world = 2;
  double lr = 5e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double aux_loss = 0.0;
  uint64_t seed = 7;
  bool float64 = true;
  std::string text_path;
};

class Model {
 public:
  // `dense`: the dense parameters in the trainer's order (token and position embeddings; per
  // block LayerNorm 1, QKV, output projection, LayerNorm 2, gate; final LayerNorm; LM head;
  // weight before bias). `experts[l][e]`: expert (l, e)'s parameters, flat W1 [d x f] then W2
  // [f x d]. Copied.
  Model(Config config, const std::vector<torch::Tensor>& dense,
        const std::vector<std::vector<torch::Tensor>>& experts);

  // One iteration on the global batch (every rank's samples): forward, backward, Adam. Returns
  // the loss; gradients stay readable until the next step.
  double Step(uint64_t iteration);

  // The last step's gradients, in the constructor's layout.
  std::vector<torch::Tensor> DenseGrads() const;
  torch::Tensor ExpertGrad(int layer, int expert) const;

 private:
  torch::Tensor Forward(const torch::Tensor& input, const torch::Tensor& target);
  void Adam(torch::Tensor& p, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& g);

  Config config_;
  std::vector<uint8_t> text_;
  std::vector<torch::Tensor> dense_;                 // leaf tensors, requires_grad
  std::vector<std::vector<torch::Tensor>> experts_;  // leaf tensors, requires_grad
  std::vector<torch::Tensor> dense_m_, dense_v_;
  std::vector<std::vector<torch::Tensor>> expert_m_, expert_v_;
  int64_t step_ = 0;
};

// How far `got` is from `want`: the largest elementwise difference over the largest magnitude
// of `want` (0 when both are zero; infinity when the shapes differ).
double RelativeError(const torch::Tensor& got, const torch::Tensor& want);

}  // namespace hecate::reference

#endif  // HECATE_TESTS_REFERENCE_MOE_H_
