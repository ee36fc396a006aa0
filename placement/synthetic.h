// Synthetic expert loads for tests, benchmarks and the trace generator: Zipf-skewed routing with
// a per-layer random hot set, and a drifting hot set over iterations. Deterministic for a seed
// (a local SplitMix64, not <random>'s implementation-defined distributions).
#ifndef HECATE_PLACEMENT_SYNTHETIC_H_
#define HECATE_PLACEMENT_SYNTHETIC_H_

#include <cstdint>
#include <vector>

#include "placement/cluster.h"
#include "placement/load.h"

namespace hecate::placement {

// SplitMix64: tiny, fast, seedable, identical on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, n).
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// Zipf(s) shares over `experts` experts: share of rank r (0-based) is proportional to (r+1)^-s.
std::vector<double> ZipfShares(int experts, double s);

struct SkewOptions {
  double zipf_s = 1.0;
  // Per-iteration rotation of the hot set (0 = static): the expert at rank r at iteration i is
  // perm[(r + floor(i * drift)) % E].
  double drift_per_iteration = 0;
  // Relative per-source noise on each count (0 = every source routes identically).
  double source_noise = 0.1;
  // Bursts: for `burst_length` iterations out of every `burst_period` (0: none), one expert per
  // layer (drawn per burst) takes `burst_share` of the layer's tokens on top of the Zipf shares
  // (which are scaled by 1 - burst_share).
  int burst_period = 0;
  int burst_length = 1;
  double burst_share = 0;
  uint64_t seed = 1;
};

// One iteration's loads: every device routes tokens_per_device * top_k assignments per layer by
// the layer's (permuted) Zipf shares, with multiplicative source noise, rounded so each row sums
// exactly to tokens_per_device * top_k.
ModelLoad SkewedLoad(const Cluster& cluster, const ModelSpec& model, const SkewOptions& options,
                     uint64_t iteration);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_SYNTHETIC_H_
