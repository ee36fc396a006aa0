#include "placement/synthetic.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace hecate::placement {

uint64_t Rng::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::vector<double> ZipfShares(int experts, double s) {
  std::vector<double> w(experts);
  double sum = 0;
  for (int r = 0; r < experts; ++r) {
    w[r] = std::pow(static_cast<double>(r + 1), -s);
    sum += w[r];
  }
  for (double& x : w) x /= sum;
  return w;
}

ModelLoad SkewedLoad(const Cluster& cluster, const ModelSpec& model, const SkewOptions& options,
                     uint64_t iteration) {
  ModelLoad out;
  const int devices = cluster.num_devices();
  const int64_t per_row = model.tokens_per_device * model.top_k;
  for (LayerId l = 0; l < model.num_layers(); ++l) {
    const int experts = model.layers[l].num_experts;
    // A fixed permutation per layer (which experts are hot), seeded by (seed, layer).
    Rng perm_rng(options.seed * 1000003 + static_cast<uint64_t>(l));
    std::vector<ExpertId> perm(experts);
    std::iota(perm.begin(), perm.end(), 0);
    for (int i = experts - 1; i > 0; --i) std::swap(perm[i], perm[perm_rng.Below(i + 1)]);
    const std::vector<double> shares = ZipfShares(experts, options.zipf_s);
    const int shift =
        static_cast<int>(std::floor(static_cast<double>(iteration) * options.drift_per_iteration)) %
        experts;
    std::vector<double> expert_share(experts);
    for (int r = 0; r < experts; ++r) expert_share[perm[(r + shift) % experts]] = shares[r];
    if (options.burst_period > 0 && options.burst_share > 0 &&
        static_cast<int>(iteration % options.burst_period) < options.burst_length) {
      const uint64_t burst = iteration / options.burst_period;
      Rng pick(options.seed * 7919 + burst * 104729 + static_cast<uint64_t>(l));
      const int hot = static_cast<int>(pick.Below(experts));
      for (double& s : expert_share) s *= 1.0 - options.burst_share;
      expert_share[hot] += options.burst_share;
    }

    LoadMatrix m(devices, experts);
    Rng noise(options.seed ^ (0x51ed27ULL * (iteration + 1)) ^ (static_cast<uint64_t>(l) << 32));
    std::vector<double> w(experts);
    for (DeviceId d = 0; d < devices; ++d) {
      double sum = 0;
      for (int e = 0; e < experts; ++e) {
        const double jitter = 1.0 + options.source_noise * (2.0 * noise.Uniform() - 1.0);
        w[e] = expert_share[e] * jitter;
        sum += w[e];
      }
      // Largest-remainder rounding so the row sums to exactly per_row.
      int64_t assigned = 0;
      std::vector<std::pair<double, int>> rema(experts);
      for (int e = 0; e < experts; ++e) {
        const double exact = sum > 0 ? per_row * w[e] / sum : 0;
        const int64_t whole = static_cast<int64_t>(std::floor(exact));
        m.at(d, e) = whole;
        assigned += whole;
        rema[e] = {exact - whole, e};
      }
      std::stable_sort(rema.begin(), rema.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      for (int64_t i = 0; i < per_row - assigned; ++i) ++m.at(d, rema[i % experts].second);
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace hecate::placement
