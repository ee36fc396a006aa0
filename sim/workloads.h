// Named workloads: load shapes seen in practice, each with its parameters and where they come
// from, for the simulator and the benchmarks (docs/benchmarks.md "Workloads").
//
//   balanced   a router trained with a balance loss: uniform shares, 5% source noise
//   mild       EP's max/mean device load 1.30: UltraEP's least imbalanced production model
//              (imbalance 1.30-4.01 before balancing, 106B-671B models, reference/peers.md)
//   heavy      EP's max/mean 4.01: UltraEP's most imbalanced
//   rotating   EP's max/mean 2.28 (the geometric middle of UltraEP's range), the hot set moving
//              half a rank per iteration: a stress case for prediction (no published rate)
//   bursts     mild, plus every 20 iterations for 2 iterations one expert per layer takes 20% of
//              the tokens: a stress case for calibration (no published rate)
//   trainer    fitted to our own GPT-MoE trainer's trace at this expert count
//              (bench/traces/gpt_moe_cpu_e{16,32,64}.trace, `hecatectl trace fit`)
//
// The Zipf exponent of mild, heavy, rotating and bursts is solved at the simulated cluster and
// model (ZipfForImbalance), so a figure keeps its meaning at any expert and device count; the
// source noise of every skewed workload is the trainer fit's.
#ifndef HECATE_SIM_WORKLOADS_H_
#define HECATE_SIM_WORKLOADS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/synthetic.h"
#include "sim/simulator.h"

namespace hecate::sim {

struct Workload {
  std::string name;
  std::string source;  // where its parameters come from
  placement::SkewOptions options;
  double ep_max_mean = 1;  // EP's max/mean device tokens under it, on the cluster and model given
};

// EP's (even sharding) max/mean device tokens under `options`, averaged over the layers and the
// first `iterations` iterations.
double EpImbalance(const placement::Cluster& cluster, const placement::ModelSpec& model,
                   const placement::SkewOptions& options, int iterations = 8);

// The Zipf exponent (in [0, 6]) whose EpImbalance is `target`; the other options from `base`.
double ZipfForImbalance(const placement::Cluster& cluster, const placement::ModelSpec& model,
                        double target, const placement::SkewOptions& base);

// Every named workload at this cluster and model, in the order above; `trainer` is the fit of
// the trainer's trace at the model's expert count (without it, no `trainer` workload).
std::vector<Workload> NamedWorkloads(const placement::Cluster& cluster,
                                     const placement::ModelSpec& model,
                                     const GeneratorFit* trainer);

// NOT_FOUND (listing the names) for an unknown workload.
absl::StatusOr<Workload> FindWorkload(const std::string& name, const placement::Cluster& cluster,
                                      const placement::ModelSpec& model,
                                      const GeneratorFit* trainer);

}  // namespace hecate::sim

#endif  // HECATE_SIM_WORKLOADS_H_
