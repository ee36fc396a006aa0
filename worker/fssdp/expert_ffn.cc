#include "worker/fssdp/expert_ffn.h"

namespace hecate::worker {

namespace {

torch::Tensor W1(const torch::Tensor& p, int64_t d, int64_t f) {
  return p.narrow(0, 0, d * f).view({d, f});
}
torch::Tensor W2(const torch::Tensor& p, int64_t d, int64_t f) {
  return p.narrow(0, d * f, f * d).view({f, d});
}

}  // namespace

torch::Tensor ExpertFfnForward(const torch::Tensor& x, const ExpertGroups& groups, int64_t d,
                               int64_t f, ExpertFfnSaved* saved) {
  torch::Tensor out = torch::zeros({x.size(0), d}, x.options());
  saved->sizes.clear();
  std::vector<torch::Tensor> rows;
  for (const torch::Tensor& r : groups.rows) {
    saved->sizes.push_back(r.numel());
    rows.push_back(r);
  }
  if (rows.empty()) {
    saved->order = torch::empty({0}, x.options().dtype(torch::kInt64));
    saved->pre = torch::empty({0, f}, x.options());
    return out;
  }
  saved->order = torch::cat(rows);
  torch::Tensor xs = x.index_select(0, saved->order);  // expert-major, contiguous per expert
  saved->pre = torch::empty({xs.size(0), f}, x.options());
  torch::Tensor ys = torch::empty({xs.size(0), d}, x.options());
  int64_t at = 0;
  for (size_t g = 0; g < rows.size(); ++g) {
    const int64_t n = saved->sizes[g];
    if (n == 0) continue;
    torch::Tensor h = saved->pre.narrow(0, at, n);
    torch::mm_out(h, xs.narrow(0, at, n), W1(groups.params[g], d, f));
    torch::Tensor y = ys.narrow(0, at, n);
    torch::mm_out(y, torch::gelu(h), W2(groups.params[g], d, f));
    at += n;
  }
  out.index_copy_(0, saved->order, ys);
  return out;
}

torch::Tensor ExpertFfnBackward(const torch::Tensor& x, const torch::Tensor& grad_out,
                                const ExpertGroups& groups, int64_t d, int64_t f,
                                const ExpertFfnSaved& saved, std::vector<torch::Tensor>* grads) {
  torch::Tensor dx = torch::zeros_like(x);
  if (saved.order.numel() == 0) return dx;
  torch::Tensor xs = x.index_select(0, saved.order);
  torch::Tensor gs = grad_out.index_select(0, saved.order);
  torch::Tensor dxs = torch::empty_like(xs);
  int64_t at = 0;
  for (size_t g = 0; g < saved.sizes.size(); ++g) {
    const int64_t n = saved.sizes[g];
    if (n == 0) continue;
    const torch::Tensor& p = groups.params[g];
    torch::Tensor h = saved.pre.narrow(0, at, n);
    torch::Tensor xe = xs.narrow(0, at, n);
    torch::Tensor ge = gs.narrow(0, at, n);
    torch::Tensor dh = at::gelu_backward(ge.mm(W2(p, d, f).t()), h);
    torch::Tensor& grad = (*grads)[g];
    W1(grad, d, f).add_(xe.t().mm(dh));
    W2(grad, d, f).add_(torch::gelu(h).t().mm(ge));
    torch::Tensor dxe = dxs.narrow(0, at, n);
    torch::mm_out(dxe, dh, W1(p, d, f).t());
    at += n;
  }
  dx.index_copy_(0, saved.order, dxs);
  return dx;
}

}  // namespace hecate::worker
