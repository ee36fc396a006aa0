#include "tests/reference_moe.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>

namespace hecate::reference {

namespace {

// The sample order of the trainer's data: sample g of the run starts at a position hashed from
// (seed, g) (splitmix64).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

torch::Tensor Leaf(const torch::Tensor& t) { return t.detach().clone().requires_grad_(true); }

}  // namespace

Model::Model(Config config, const std::vector<torch::Tensor>& dense,
             const std::vector<std::vector<torch::Tensor>>& experts)
    : config_(std::move(config)) {
  std::ifstream in(config_.text_path, std::ios::binary);
  if (!in) throw std::runtime_error("reference: no text at " + config_.text_path);
  text_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  for (const torch::Tensor& t : dense) {
    dense_.push_back(Leaf(t));
    dense_m_.push_back(torch::zeros_like(t));
    dense_v_.push_back(torch::zeros_like(t));
  }
  for (const std::vector<torch::Tensor>& layer : experts) {
    experts_.emplace_back();
    expert_m_.emplace_back();
    expert_v_.emplace_back();
    for (const torch::Tensor& t : layer) {
      experts_.back().push_back(Leaf(t));
      expert_m_.back().push_back(torch::zeros_like(t));
      expert_v_.back().push_back(torch::zeros_like(t));
    }
  }
}

torch::Tensor Model::Forward(const torch::Tensor& input, const torch::Tensor& target) {
  const int64_t B = input.size(0), S = config_.seq_len, D = config_.d_model, H = config_.heads;
  const int64_t E = config_.experts, F = config_.d_ffn, K = config_.top_k;
  const int64_t tokens = B * S;
  size_t i = 0;
  auto next = [&]() -> const torch::Tensor& { return dense_.at(i++); };
  const torch::Tensor& tok = next();
  const torch::Tensor& pos = next();
  torch::Tensor h = tok.index_select(0, input.reshape({-1})).view({B, S, D}) +
                    pos.index_select(0, torch::arange(S)).unsqueeze(0);
  torch::Tensor mask =
      torch::full({S, S}, -std::numeric_limits<double>::infinity(), h.options()).triu(1);
  torch::Tensor aux = torch::zeros({}, h.options());
  for (int l = 0; l < config_.layers; ++l) {
    const torch::Tensor &ln1_w = next(), &ln1_b = next(), &qkv_w = next(), &qkv_b = next();
    const torch::Tensor &proj_w = next(), &proj_b = next(), &ln2_w = next(), &ln2_b = next();
    const torch::Tensor& gate_w = next();
    // Causal self-attention, pre-LN.
    torch::Tensor x = torch::layer_norm(h, {D}, ln1_w, ln1_b, 1e-5);
    torch::Tensor qkv = x.matmul(qkv_w.t()) + qkv_b;
    std::vector<torch::Tensor> parts = qkv.chunk(3, -1);
    auto split = [&](const torch::Tensor& t) {
      return t.reshape({B, S, H, D / H}).permute({0, 2, 1, 3});
    };
    torch::Tensor q = split(parts[0]), k = split(parts[1]), v = split(parts[2]);
    torch::Tensor scores = q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(D / H));
    torch::Tensor attn = torch::softmax(scores + mask, -1).matmul(v);
    h = h + attn.permute({0, 2, 1, 3}).reshape({B, S, D}).matmul(proj_w.t()) + proj_b;
    // Top-k softmax gate, weights renormalized over the chosen experts.
    torch::Tensor z = torch::layer_norm(h, {D}, ln2_w, ln2_b, 1e-5).reshape({tokens, D});
    torch::Tensor probs = torch::softmax(z.matmul(gate_w.t()), -1);
    auto [top_p, top_e] = probs.topk(K, -1);
    torch::Tensor weight = top_p / top_p.sum(-1, true);
    // Dense mixture: every expert on the tokens routed to it.
    torch::Tensor y = torch::zeros_like(z);
    std::vector<double> counts(E, 0.0);
    for (int64_t e = 0; e < E; ++e) {
      torch::Tensor hit = top_e.eq(e);  // [tokens, K]
      torch::Tensor rows = hit.any(-1).nonzero().reshape({-1});
      counts[e] = static_cast<double>(hit.sum().item<int64_t>());
      if (rows.numel() == 0) continue;
      const torch::Tensor& p = experts_[l][e];
      torch::Tensor w1 = p.narrow(0, 0, D * F).view({D, F});
      torch::Tensor w2 = p.narrow(0, D * F, F * D).view({F, D});
      torch::Tensor out = torch::gelu(z.index_select(0, rows).matmul(w1)).matmul(w2);
      torch::Tensor gate = (weight * hit.to(weight.dtype())).sum(-1).index_select(0, rows);
      y = y.index_add(0, rows, out * gate.unsqueeze(-1));
    }
    if (config_.aux_loss > 0) {
      // Switch/GShard balance loss: E * sum_e f_e * P_e (f from the routing counts).
      torch::Tensor f = torch::tensor(counts, probs.options()) / static_cast<double>(tokens * K);
      torch::Tensor mean_p = probs.sum(0) / static_cast<double>(tokens);
      aux = aux + config_.aux_loss * static_cast<double>(E) * (f * mean_p).sum();
    }
    h = h + y.view({B, S, D});
  }
  const torch::Tensor &lnf_w = next(), &lnf_b = next(), &head_w = next(), &head_b = next();
  torch::Tensor logits = torch::layer_norm(h, {D}, lnf_w, lnf_b, 1e-5).matmul(head_w.t()) + head_b;
  torch::Tensor nll = torch::nll_loss(torch::log_softmax(logits.view({tokens, 256}), -1),
                                      target.reshape({-1}), {}, at::Reduction::Sum);
  return nll / static_cast<double>(tokens) + aux;
}

void Model::Adam(torch::Tensor& p, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& g) {
  const double c1 = 1.0 - std::pow(config_.beta1, static_cast<double>(step_));
  const double c2 = 1.0 - std::pow(config_.beta2, static_cast<double>(step_));
  m = config_.beta1 * m + (1.0 - config_.beta1) * g;
  v = config_.beta2 * v + (1.0 - config_.beta2) * g * g;
  p.sub_(config_.lr * (m / c1) / ((v / c2).sqrt() + config_.eps));
}

double Model::Step(uint64_t iteration) {
  const int64_t B = int64_t{config_.batch_per_rank} * config_.world, S = config_.seq_len;
  torch::Tensor input = torch::empty({B, S}, torch::kInt64);
  torch::Tensor target = torch::empty({B, S}, torch::kInt64);
  const uint64_t span = text_.size() - S - 1;
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t g = iteration * static_cast<uint64_t>(B) + static_cast<uint64_t>(b);
    const uint64_t start = Mix(config_.seed * 7919 + g) % span;
    for (int64_t s = 0; s < S; ++s) {
      input[b][s] = static_cast<int64_t>(text_[start + s]);
      target[b][s] = static_cast<int64_t>(text_[start + s + 1]);
    }
  }
  for (torch::Tensor& t : dense_) t.mutable_grad() = torch::Tensor();
  for (auto& layer : experts_) {
    for (torch::Tensor& t : layer) t.mutable_grad() = torch::Tensor();
  }
  torch::Tensor loss = Forward(input, target);
  loss.backward();
  ++step_;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < dense_.size(); ++i) {
    torch::Tensor g = dense_[i].grad().defined() ? dense_[i].grad() : torch::zeros_like(dense_[i]);
    Adam(dense_[i], dense_m_[i], dense_v_[i], g);
  }
  for (size_t l = 0; l < experts_.size(); ++l) {
    for (size_t e = 0; e < experts_[l].size(); ++e) {
      torch::Tensor& p = experts_[l][e];
      torch::Tensor g = p.grad().defined() ? p.grad() : torch::zeros_like(p);
      Adam(p, expert_m_[l][e], expert_v_[l][e], g);
    }
  }
  return loss.item<double>();
}

std::vector<torch::Tensor> Model::DenseGrads() const {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& t : dense_) {
    out.push_back(t.grad().defined() ? t.grad() : torch::zeros_like(t));
  }
  return out;
}

torch::Tensor Model::ExpertGrad(int layer, int expert) const {
  const torch::Tensor& p = experts_.at(layer).at(expert);
  return p.grad().defined() ? p.grad() : torch::zeros_like(p);
}

double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  if (got.sizes() != want.sizes()) return std::numeric_limits<double>::infinity();
  const double scale = want.abs().max().item<double>();
  const double diff = (got.to(want.dtype()) - want).abs().max().item<double>();
  if (scale == 0) return diff == 0 ? 0 : std::numeric_limits<double>::infinity();
  return diff / scale;
}

}  // namespace hecate::reference
