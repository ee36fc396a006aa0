#include "sim/workloads.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "placement/sharding.h"

namespace hecate::sim {

namespace pl = placement;

namespace {

// The imbalance figures the workloads are solved for (reference/peers.md, UltraEP).
constexpr double kMild = 1.30;
constexpr double kHeavy = 4.01;
constexpr double kMiddle = 2.28;  // sqrt(1.30 x 4.01)
// Our trainer's source noise when no fit is given (bench/traces/gpt_moe_cpu_e32.trace's).
constexpr double kNoise = 0.06;

}  // namespace

double EpImbalance(const pl::Cluster& cluster, const pl::ModelSpec& model,
                   const pl::SkewOptions& options, int iterations) {
  const pl::Owners owners = pl::EvenSharding(cluster, model);
  double sum = 0;
  int n = 0;
  for (int i = 0; i < iterations; ++i) {
    const pl::ModelLoad load = pl::SkewedLoad(cluster, model, options, static_cast<uint64_t>(i));
    for (int l = 0; l < model.num_layers(); ++l) {
      std::vector<int64_t> device(cluster.num_devices(), 0);
      const std::vector<int64_t> totals = load[l].ExpertTotals();
      for (size_t e = 0; e < totals.size(); ++e) device[owners[l][e]] += totals[e];
      int64_t all = 0;
      for (int64_t t : device) all += t;
      if (all == 0) continue;
      sum += static_cast<double>(*std::max_element(device.begin(), device.end())) *
             cluster.num_devices() / static_cast<double>(all);
      ++n;
    }
  }
  return n > 0 ? sum / n : 1.0;
}

double ZipfForImbalance(const pl::Cluster& cluster, const pl::ModelSpec& model, double target,
                        const pl::SkewOptions& base) {
  pl::SkewOptions o = base;
  o.burst_period = 0;  // solved on the steady shape
  // Every layer has the same shape (only its hot experts differ): on a large model a few layers
  // and iterations estimate it, which keeps the search cheap at 1,024 devices x 58 layers x 256
  // experts; a small one is solved on the estimate Workload::ep_max_mean reports.
  pl::ModelSpec few = model;
  int iterations = 8;
  if (int64_t{cluster.num_devices()} * model.total_experts() > (int64_t{1} << 21)) {
    if (few.layers.size() > 4) few.layers.resize(4);
    iterations = 4;
  }
  double lo = 0, hi = 6;
  for (int step = 0; step < 30; ++step) {
    o.zipf_s = (lo + hi) / 2;
    (EpImbalance(cluster, few, o, iterations) < target ? lo : hi) = o.zipf_s;
  }
  return (lo + hi) / 2;
}

namespace {

// The workloads in order; with `only`, just that one (the others are not solved).
std::vector<Workload> Build(const pl::Cluster& cluster, const pl::ModelSpec& model,
                            const GeneratorFit* trainer, const std::string* only) {
  std::vector<Workload> out;
  const double noise = trainer != nullptr ? trainer->source_noise : kNoise;
  // make(options): the workload's options, from the skewed base.
  auto add = [&](const std::string& name, const std::string& source, auto make) {
    if (only != nullptr && *only != name) return;
    pl::SkewOptions o;
    o.source_noise = noise;
    make(o);
    out.push_back(Workload{name, source, o, EpImbalance(cluster, model, o)});
  };
  add("balanced", "a router trained with a balance loss: uniform shares, 5% source noise",
      [](pl::SkewOptions& o) {
        o.zipf_s = 0;
        o.source_noise = 0.05;
      });
  add("mild", "EP max/mean 1.30, UltraEP's least imbalanced production model",
      [&](pl::SkewOptions& o) { o.zipf_s = ZipfForImbalance(cluster, model, kMild, o); });
  add("heavy", "EP max/mean 4.01, UltraEP's most imbalanced production model",
      [&](pl::SkewOptions& o) { o.zipf_s = ZipfForImbalance(cluster, model, kHeavy, o); });
  add("rotating",
      "EP max/mean 2.28 (middle of UltraEP's 1.30-4.01), hot set moving half a rank an "
      "iteration: a stress case, no published rate",
      [&](pl::SkewOptions& o) {
        o.drift_per_iteration = 0.5;
        o.zipf_s = ZipfForImbalance(cluster, model, kMiddle, o);
      });
  add("bursts",
      "mild, and for 2 of every 20 iterations one expert a layer takes 20% of the tokens: a "
      "stress case, no published rate",
      [&](pl::SkewOptions& o) {
        o.zipf_s = ZipfForImbalance(cluster, model, kMild, o);
        o.burst_period = 20;
        o.burst_length = 2;
        o.burst_share = 0.2;
      });
  if (trainer != nullptr) {
    add("trainer",
        absl::StrFormat("our GPT-MoE trainer's trace at %d experts: zipf %.3f, drift %.3f, "
                        "noise %.3f",
                        model.layers.empty() ? 0 : model.layers[0].num_experts, trainer->zipf_s,
                        trainer->drift_per_iteration, trainer->source_noise),
        [&](pl::SkewOptions& o) {
          o.zipf_s = trainer->zipf_s;
          o.drift_per_iteration = trainer->drift_per_iteration;
          o.source_noise = trainer->source_noise;
        });
  }
  return out;
}

}  // namespace

std::vector<Workload> NamedWorkloads(const pl::Cluster& cluster, const pl::ModelSpec& model,
                                     const GeneratorFit* trainer) {
  return Build(cluster, model, trainer, nullptr);
}

absl::StatusOr<Workload> FindWorkload(const std::string& name, const pl::Cluster& cluster,
                                      const pl::ModelSpec& model, const GeneratorFit* trainer) {
  std::vector<Workload> one = Build(cluster, model, trainer, &name);
  if (!one.empty()) return std::move(one.front());
  std::vector<std::string> names = {"balanced", "mild", "heavy", "rotating", "bursts"};
  if (trainer != nullptr) names.push_back("trainer");
  return absl::NotFoundError(
      absl::StrCat("unknown workload '", name, "' (", absl::StrJoin(names, ", "), ")"));
}

}  // namespace hecate::sim
