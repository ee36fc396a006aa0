// ExpertFfnForward/Backward against LibTorch autograd of the same math, on the CPU always and on
// CUDA when this LibTorch has it and a GPU is present (then also CUDA against CPU, and the expert
// GEMMs' bf16 throughput). A plain program so that kernels/tools/gpu_check.sh builds the same file
// against PyTorch's CUDA LibTorch; under Bazel it is a test. Exit 0 when every check passed.
#include <torch/torch.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "worker/fssdp/expert_ffn.h"

namespace {

using hecate::worker::ExpertFfnBackward;
using hecate::worker::ExpertFfnForward;
using hecate::worker::ExpertFfnSaved;
using hecate::worker::ExpertGroups;

int failures = 0;

void Expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

bool Close(const torch::Tensor& a, const torch::Tensor& b, double tol) {
  return a.sizes() == b.sizes() && torch::allclose(a.to(torch::kCPU, torch::kFloat64),
                                                   b.to(torch::kCPU, torch::kFloat64), tol, tol);
}

struct Problem {
  torch::Tensor x, grad_out;
  ExpertGroups groups;
};

// `rows` tokens routed to `experts` experts with ragged counts (expert e gets ~2^-e of them, some
// none); every row goes to exactly one expert except a few left out (they must come back zero).
Problem Make(int64_t rows, int64_t experts, int64_t d, int64_t f, torch::Device dev,
             uint64_t seed) {
  torch::manual_seed(seed);
  Problem p;
  p.x = torch::randn({rows, d}).to(dev);
  p.grad_out = torch::randn({rows, d}).to(dev);
  std::vector<std::vector<int64_t>> by(experts);
  for (int64_t r = 0; r < rows; ++r) {
    if (r % 11 == 10) continue;  // unrouted row
    int64_t e = 0;
    while (e + 1 < experts && (r >> e) % 2 == 1) ++e;
    by[e].push_back(r);
  }
  for (int64_t e = 0; e < experts; ++e) {
    if (by[e].empty()) continue;
    p.groups.rows.push_back(torch::tensor(by[e], torch::kInt64).to(dev));
    p.groups.params.push_back((torch::randn({2 * d * f}) / std::sqrt(double(d))).to(dev));
  }
  return p;
}

// The reference: autograd through index_select, mm, gelu, mm, index_copy per expert.
void Reference(const Problem& p, int64_t d, int64_t f, torch::Tensor* out, torch::Tensor* dx,
               std::vector<torch::Tensor>* dparams) {
  torch::Tensor x = p.x.detach().clone().requires_grad_(true);
  std::vector<torch::Tensor> params;
  torch::Tensor y = x * 0;  // in the graph even when no row is routed
  for (size_t g = 0; g < p.groups.rows.size(); ++g) {
    params.push_back(p.groups.params[g].detach().clone().requires_grad_(true));
    torch::Tensor w1 = params[g].narrow(0, 0, d * f).view({d, f});
    torch::Tensor w2 = params[g].narrow(0, d * f, f * d).view({f, d});
    torch::Tensor xe = x.index_select(0, p.groups.rows[g]);
    y = y.index_copy(0, p.groups.rows[g], torch::gelu(xe.mm(w1)).mm(w2));
  }
  (y * p.grad_out).sum().backward();
  *out = y.detach();
  *dx = x.grad();
  dparams->clear();
  for (auto& t : params) dparams->push_back(t.grad());
}

void CheckAgainstAutograd(torch::Device dev, int64_t rows, int64_t experts, int64_t d, int64_t f) {
  const std::string tag = std::string(dev.is_cuda() ? "cuda" : "cpu") +
                          " rows=" + std::to_string(rows) + " experts=" + std::to_string(experts) +
                          " d=" + std::to_string(d) + " f=" + std::to_string(f);
  Problem p = Make(rows, experts, d, f, dev, 7 + rows);
  ExpertFfnSaved saved;
  torch::Tensor out = ExpertFfnForward(p.x, p.groups, d, f, &saved);
  std::vector<torch::Tensor> grads;
  for (const auto& w : p.groups.params) grads.push_back(torch::zeros_like(w));
  torch::Tensor dx = ExpertFfnBackward(p.x, p.grad_out, p.groups, d, f, saved, &grads);
  torch::Tensor ref_out, ref_dx;
  std::vector<torch::Tensor> ref_dp;
  Reference(p, d, f, &ref_out, &ref_dx, &ref_dp);
  Expect(Close(out, ref_out, 1e-4), "forward == autograd, " + tag);
  Expect(Close(dx, ref_dx, 1e-4), "dx == autograd, " + tag);
  bool grads_ok = grads.size() == ref_dp.size();
  for (size_t g = 0; grads_ok && g < grads.size(); ++g) grads_ok = Close(grads[g], ref_dp[g], 1e-4);
  Expect(grads_ok, "dparams == autograd, " + tag);
  if (rows > 10) Expect(out[10].abs().sum().item<double>() == 0, "unrouted row is zero, " + tag);
}

void CudaAgainstCpu(int64_t rows, int64_t experts, int64_t d, int64_t f) {
  Problem c = Make(rows, experts, d, f, torch::kCPU, 3);
  Problem g = Make(rows, experts, d, f, torch::kCUDA, 3);  // same seed: same values
  ExpertFfnSaved sc, sg;
  torch::Tensor oc = ExpertFfnForward(c.x, c.groups, d, f, &sc);
  torch::Tensor og = ExpertFfnForward(g.x, g.groups, d, f, &sg);
  Expect(Close(oc, og, 1e-3), "cuda forward == cpu forward, rows=" + std::to_string(rows));
}

void BenchBf16() {
  std::printf("\n%-34s %10s %10s\n", "grouped expert FFN fwd (bf16)", "ms", "TFLOP/s");
  for (int64_t d : {1024, 2048, 4096}) {
    const int64_t f = 4 * d, experts = 8, per = 4096;
    auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
    ExpertGroups groups;
    for (int64_t e = 0; e < experts; ++e) {
      groups.rows.push_back(
          torch::arange(e * per, (e + 1) * per,
                        torch::TensorOptions().dtype(torch::kInt64).device(torch::kCUDA)));
      groups.params.push_back(torch::randn({2 * d * f}, opts) * 0.02);
    }
    torch::Tensor x = torch::randn({experts * per, d}, opts);
    ExpertFfnSaved saved;
    for (int i = 0; i < 3; ++i) ExpertFfnForward(x, groups, d, f, &saved);
    torch::cuda::synchronize();
    const int reps = 10;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) ExpertFfnForward(x, groups, d, f, &saved);
    torch::cuda::synchronize();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    const double flops = 2.0 * 2 * experts * per * d * f;  // two GEMMs
    std::printf("%-34s %10.3f %10.1f\n", ("8 experts x 4096 rows, d=" + std::to_string(d)).c_str(),
                s * 1e3, flops / s / 1e12);
  }
}

}  // namespace

int main() {
  for (auto [rows, experts, d, f] : std::vector<std::array<int64_t, 4>>{
           {0, 1, 4, 8}, {1, 1, 3, 5}, {37, 5, 8, 16}, {256, 8, 32, 64}}) {
    CheckAgainstAutograd(torch::kCPU, rows, experts, d, f);
  }
  if (torch::cuda::is_available()) {
    std::printf("CUDA devices: %d\n", static_cast<int>(torch::cuda::device_count()));
    for (auto [rows, experts, d, f] : std::vector<std::array<int64_t, 4>>{
             {0, 1, 4, 8}, {1, 1, 3, 5}, {37, 5, 8, 16}, {1024, 16, 128, 256}}) {
      CheckAgainstAutograd(torch::kCUDA, rows, experts, d, f);
    }
    CudaAgainstCpu(300, 6, 64, 128);
    BenchBf16();
  } else {
    std::printf("CUDA checks skipped: this LibTorch has no CUDA or there is no GPU\n");
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
