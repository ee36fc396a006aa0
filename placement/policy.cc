#include "placement/policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "placement/policy_support.h"

namespace hecate::placement {

absl::Status CheckRequest(const PlanRequest& r) {
  if (r.cluster == nullptr || r.model == nullptr || r.load == nullptr) {
    return absl::InvalidArgumentError("plan request needs a cluster, a model and loads");
  }
  if (absl::Status s = r.model->Validate(); !s.ok()) return s;
  if (absl::Status s = CheckShape(*r.load, *r.cluster, *r.model); !s.ok()) return s;
  auto check_owners = [&](const Owners& owners) -> absl::Status {
    if (static_cast<int>(owners.size()) != r.model->num_layers()) {
      return absl::InvalidArgumentError("owners do not cover every layer");
    }
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      if (static_cast<int>(owners[l].size()) != r.model->layers[l].num_experts) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": wrong owner count"));
      }
      for (DeviceId d : owners[l]) {
        if (d < 0 || d >= r.cluster->num_devices()) {
          return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": owner ", d, " invalid"));
        }
      }
    }
    return absl::OkStatus();
  };
  if (r.owners != nullptr) {
    if (absl::Status s = check_owners(*r.owners); !s.ok()) return s;
  }
  if (r.previous != nullptr) {
    if (absl::Status s = Validate(*r.previous, *r.cluster, *r.model); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("previous plan: ", s.message()));
    }
  }
  return absl::OkStatus();
}

std::vector<std::vector<double>> ExpertLoads(const ModelLoad& load) {
  std::vector<std::vector<double>> out;
  out.reserve(load.size());
  for (const LoadMatrix& m : load) {
    std::vector<int64_t> totals = m.ExpertTotals();
    out.emplace_back(totals.begin(), totals.end());
  }
  return out;
}

std::vector<int> CopyBudget(const Cluster& cluster, const ModelSpec& model, const Owners& owners,
                            ReplicaSemantics semantics, RematMode mode, int cap) {
  const std::vector<int64_t> owned = OwnedBytes(cluster, model, owners);
  int64_t sum_pb = 0, max_pb = 0, sum_full = 0;
  for (const LayerSpec& l : model.layers) {
    sum_pb += l.expert_param_bytes;
    max_pb = std::max(max_pb, l.expert_param_bytes);
    sum_full += 2 * l.expert_param_bytes + l.expert_optimizer_bytes;
  }
  int64_t per_copy = 0;
  if (semantics == ReplicaSemantics::kPersistent) {
    per_copy = sum_full;
  } else if (mode == RematMode::kRegather) {
    // The prefetch window's layers alive at once in forward, plus a layer's replica gradients.
    per_copy = (kPrefetchLayers + 2) * max_pb;
  } else {
    per_copy = sum_pb + max_pb;
  }
  std::vector<int> budget(cluster.num_devices(), 0);
  for (DeviceId d = 0; d < cluster.num_devices(); ++d) {
    const int64_t free = cluster.memory_bytes(d) - owned[d];
    int64_t c = free > 0 && per_copy > 0 ? free / per_copy : 0;
    if (cap >= 0) c = std::min<int64_t>(c, cap);
    budget[d] = static_cast<int>(std::min<int64_t>(c, 1 << 20));
  }
  return budget;
}

void PlanRemat(const CostModel& cost, std::vector<LayerPlan>* layers) {
  const Cluster& cluster = cost.cluster();
  const ModelSpec& model = cost.model();
  const double attention = cost.attention_forward_seconds();
  // Exposed backward time a layer saves by staying resident.
  std::vector<std::pair<double, LayerId>> savings;
  for (LayerId l = 0; l < static_cast<int>(layers->size()); ++l) {
    (*layers)[l].remat = RematMode::kRegather;
    const double t = cost.SparseCollectiveSeconds(l, (*layers)[l], nullptr);
    // Ranked by the backward attention window alone (the layer's compute is not known here).
    CostModel::HidingWindows w;
    w.forward = attention;
    w.regather = w.reduce = 2 * attention;
    const double saved =
        CostModel::ExposedSeconds(ReplicaSemantics::kEphemeral, RematMode::kRegather, t, t, w) -
        CostModel::ExposedSeconds(ReplicaSemantics::kEphemeral, RematMode::kKeep, t, t, w);
    savings.push_back({saved, l});
  }
  std::stable_sort(savings.begin(), savings.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  Plan probe;
  probe.semantics = ReplicaSemantics::kEphemeral;
  probe.layers = *layers;
  for (const auto& [saved, l] : savings) {
    probe.layers[l].remat = RematMode::kKeep;
    if (CheckMemory(probe, cluster, model).ok()) {
      (*layers)[l].remat = RematMode::kKeep;
    } else {
      probe.layers[l].remat = RematMode::kRegather;
    }
  }
}

std::vector<std::string> PolicyNames() {
  return {"hecate", "hecate-paper", "hecate-rm", "ep", "fastermoe", "flexmoe", "smartmoe", "eplb"};
}

std::pair<int, int> RepairEffort(const PlannerConfig& config, int devices) {
  int moves = config.repair_moves, candidates = config.repair_candidates;
  if (moves <= 0) return {0, candidates};
  const double want = static_cast<double>(moves) * candidates * std::max(devices, 1);
  if (config.repair_device_budget > 0 && want > static_cast<double>(config.repair_device_budget)) {
    const double scale = std::sqrt(static_cast<double>(config.repair_device_budget) / want);
    // The small epsilon keeps exact quarters (4 x 16 at 1,024 devices -> 2 x 8) from rounding
    // down to the next integer.
    moves = std::max(1, static_cast<int>(std::floor(moves * scale + 1e-9)));
    candidates = std::max(1, static_cast<int>(std::floor(candidates * scale + 1e-9)));
  }
  return {moves, candidates};
}

double BalanceOverage(const LayerPrediction& p, double target) {
  if (target <= 0 || p.mean_tokens <= 0) return 0;
  return std::max(0.0, p.max_tokens / p.mean_tokens - target);
}

double BalanceOverage(const Prediction& p, double target) {
  double sum = 0;
  for (const LayerPrediction& l : p.layers) sum += BalanceOverage(l, target);
  return sum;
}

bool PolicyCalibrates(std::string_view name) {
  auto policy = MakePolicy(name);
  return policy.ok() && (*policy)->Calibrates();
}

absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(std::string_view name) {
  if (name == "hecate") return internal::NewHecatePolicy(/*regather_every_layer=*/false);
  if (name == "hecate-paper") return internal::NewPaperPolicy();
  if (name == "hecate-rm") return internal::NewHecatePolicy(/*regather_every_layer=*/true);
  if (name == "ep") return internal::NewEpPolicy();
  if (name == "fastermoe") return internal::NewFasterMoePolicy();
  if (name == "flexmoe") return internal::NewFlexMoePolicy();
  if (name == "smartmoe") return internal::NewSmartMoePolicy();
  if (name == "eplb") return internal::NewEplbPolicy();
  return absl::NotFoundError(absl::StrCat("unknown policy '", std::string(name),
                                          "'; known: ", absl::StrJoin(PolicyNames(), ", ")));
}

}  // namespace hecate::placement