#include "placement/plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace hecate::placement {

bool LayerPlan::Holds(ExpertId e, DeviceId d) const {
  const std::vector<DeviceId>& r = replicas[e];
  return std::binary_search(r.begin(), r.end(), d);
}

void LayerPlan::AddHolder(ExpertId e, DeviceId d) {
  std::vector<DeviceId>& r = replicas[e];
  r.insert(std::upper_bound(r.begin(), r.end(), d), d);
}

void LayerPlan::DropHolder(ExpertId e, DeviceId d) {
  std::vector<DeviceId>& r = replicas[e];
  r.erase(std::lower_bound(r.begin(), r.end(), d));
}

int LayerPlan::ExtraCopiesOn(DeviceId d) const {
  int n = 0;
  for (ExpertId e = 0; e < num_experts(); ++e) {
    if (owner[e] != d && Holds(e, d)) ++n;
  }
  return n;
}

std::vector<int> LayerPlan::ExtraCopies(int num_devices) const {
  std::vector<int> n(num_devices, 0);
  for (ExpertId e = 0; e < num_experts(); ++e) {
    for (DeviceId d : replicas[e]) {
      if (d != owner[e] && d >= 0 && d < num_devices) ++n[d];
    }
  }
  return n;
}

int64_t Plan::migration_bytes() const {
  int64_t total = 0;
  for (const Migration& m : migrations) total += m.bytes;
  return total;
}

absl::Status ValidateLayer(const LayerPlan& layer, LayerId l, const Cluster& cluster,
                           const ModelSpec& model) {
  const int experts = model.layers[l].num_experts;
  const int devices = cluster.num_devices();
  if (layer.num_experts() != experts || static_cast<int>(layer.replicas.size()) != experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", l, ": plan has ", layer.num_experts(), " owners and ",
                     layer.replicas.size(), " replica sets, model has ", experts, " experts"));
  }
  for (ExpertId e = 0; e < experts; ++e) {
    const DeviceId owner = layer.owner[e];
    if (owner < 0 || owner >= devices) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, " expert ", e, ": owner ", owner, " is not a device"));
    }
    const std::vector<DeviceId>& r = layer.replicas[e];
    for (size_t i = 0; i < r.size(); ++i) {
      if (r[i] < 0 || r[i] >= devices) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer ", l, " expert ", e, ": holder ", r[i], " is not a device"));
      }
      if (i > 0 && r[i] <= r[i - 1]) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, " expert ", e,
                                                       ": holders not ascending or device ", r[i],
                                                       " holds two copies"));
      }
    }
    if (!std::binary_search(r.begin(), r.end(), owner)) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, " expert ", e, ": owner ", owner, " holds no copy"));
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const Plan& plan, const Cluster& cluster, const ModelSpec& model) {
  if (static_cast<int>(plan.layers.size()) != model.num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan has ", plan.layers.size(), " layers, model has ", model.num_layers()));
  }
  for (LayerId l = 0; l < model.num_layers(); ++l) {
    absl::Status s = ValidateLayer(plan.layers[l], l, cluster, model);
    if (!s.ok()) return s;
  }
  for (const Migration& m : plan.migrations) {
    if (m.layer < 0 || m.layer >= model.num_layers() || m.expert < 0 ||
        m.expert >= model.layers[m.layer].num_experts ||
        !plan.layers[m.layer].Holds(m.expert, m.to)) {
      return absl::InvalidArgumentError(absl::StrCat("migration of layer ", m.layer, " expert ",
                                                     m.expert, " does not end on a holder"));
    }
  }
  return absl::OkStatus();
}

namespace {

// Per device: owned expert state, resident copies (kept layers, or persistent copies with their
// optimizer state), the most re-gathered copies alive at once, and the largest single layer's
// copy bytes (its replica gradients).
struct DeviceMemory {
  std::vector<int64_t> owned, resident, regathered, max_layer;
};

DeviceMemory Account(const Plan& plan, const Cluster& cluster, const ModelSpec& model) {
  const int devices = cluster.num_devices();
  const int layers = static_cast<int>(plan.layers.size());
  const bool persistent = plan.semantics == ReplicaSemantics::kPersistent;
  DeviceMemory m;
  m.owned.assign(devices, 0);
  m.resident.assign(devices, 0);
  m.regathered.assign(devices, 0);
  m.max_layer.assign(devices, 0);
  std::vector<std::vector<int64_t>> regather(layers, std::vector<int64_t>(devices, 0));
  for (LayerId l = 0; l < layers; ++l) {
    const LayerPlan& layer = plan.layers[l];
    const LayerSpec& spec = model.layers[l];
    std::vector<int64_t> copies(devices, 0);
    for (ExpertId e = 0; e < layer.num_experts(); ++e) {
      // Owned: parameters, their gradient and the optimizer state.
      m.owned[layer.owner[e]] += 2 * spec.expert_param_bytes + spec.expert_optimizer_bytes;
      for (DeviceId d : layer.replicas[e]) {
        if (d == layer.owner[e]) continue;
        copies[d] += persistent ? 2 * spec.expert_param_bytes + spec.expert_optimizer_bytes
                                : spec.expert_param_bytes;
      }
    }
    const bool regathered = !persistent && layer.remat == RematMode::kRegather;
    for (DeviceId d = 0; d < devices; ++d) {
      (regathered ? regather[l][d] : m.resident[d]) += copies[d];
      m.max_layer[d] = std::max(m.max_layer[d], copies[d]);
    }
  }
  // Re-gathered layers: in forward, a layer's copies arrive kPrefetchLayers layers ahead and go
  // after its forward, so up to kPrefetchLayers + 1 consecutive layers' copies are alive at once;
  // in backward, two (the layer in backward and the one re-gathered one layer early).
  for (LayerId l = 0; l < layers; ++l) {
    std::vector<int64_t> window(devices, 0);
    for (LayerId k = l; k < std::min(layers, l + kPrefetchLayers + 1); ++k) {
      for (DeviceId d = 0; d < devices; ++d) window[d] += regather[k][d];
    }
    for (DeviceId d = 0; d < devices; ++d) {
      m.regathered[d] = std::max(m.regathered[d], window[d]);
    }
  }
  return m;
}

}  // namespace

std::vector<int64_t> MemoryPerDevice(const Plan& plan, const Cluster& cluster,
                                     const ModelSpec& model) {
  const DeviceMemory m = Account(plan, cluster, model);
  const bool persistent = plan.semantics == ReplicaSemantics::kPersistent;
  std::vector<int64_t> peak(m.owned.size(), 0);
  for (size_t d = 0; d < peak.size(); ++d) {
    // Persistent copies carry their own gradients and optimizer state. Ephemeral copies: kept
    // layers' parameters stay until backward, re-gathered layers' as above, and during backward
    // one layer's replica gradients exist until its spRS completes.
    peak[d] = persistent ? m.owned[d] + m.resident[d]
                         : m.owned[d] + m.resident[d] + m.regathered[d] + m.max_layer[d];
  }
  return peak;
}

std::vector<int64_t> CopyBytesPerDevice(const Plan& plan, const Cluster& cluster,
                                        const ModelSpec& model) {
  const DeviceMemory m = Account(plan, cluster, model);
  std::vector<int64_t> out(m.owned.size(), 0);
  for (size_t d = 0; d < out.size(); ++d) out[d] = m.resident[d] + m.regathered[d];
  return out;
}

absl::Status CheckMemory(const Plan& plan, const Cluster& cluster, const ModelSpec& model) {
  std::vector<int64_t> mem = MemoryPerDevice(plan, cluster, model);
  for (DeviceId d = 0; d < cluster.num_devices(); ++d) {
    if (mem[d] > cluster.memory_bytes(d)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", d, " needs ", mem[d], " bytes, budget is ", cluster.memory_bytes(d)));
    }
  }
  return absl::OkStatus();
}

std::vector<Migration> Migrations(const std::vector<std::vector<DeviceId>>& from,
                                  const std::vector<std::vector<DeviceId>>& to,
                                  const ModelSpec& model) {
  std::vector<Migration> out;
  for (LayerId l = 0; l < static_cast<int>(to.size()) && l < static_cast<int>(from.size()); ++l) {
    const LayerSpec& spec = model.layers[l];
    for (ExpertId e = 0; e < static_cast<int>(to[l].size()); ++e) {
      if (e < static_cast<int>(from[l].size()) && from[l][e] != to[l][e]) {
        out.push_back(Migration{l, e, from[l][e], to[l][e],
                                spec.expert_param_bytes + spec.expert_optimizer_bytes});
      }
    }
  }
  return out;
}

absl::Status Diff(const Plan& a, const Plan& b, const ModelSpec& model, PlanDiff* out) {
  *out = PlanDiff();
  if (a.layers.size() != b.layers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("plans have ", a.layers.size(), " and ", b.layers.size(), " layers"));
  }
  std::vector<std::vector<DeviceId>> owners_a, owners_b;
  for (size_t l = 0; l < a.layers.size(); ++l) {
    if (a.layers[l].num_experts() != b.layers[l].num_experts()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": expert counts differ"));
    }
    owners_a.push_back(a.layers[l].owner);
    owners_b.push_back(b.layers[l].owner);
  }
  out->owner_changes = Migrations(owners_a, owners_b, model);
  for (const Migration& m : out->owner_changes) out->migration_bytes += m.bytes;
  for (LayerId l = 0; l < static_cast<int>(a.layers.size()); ++l) {
    bool changed = false;
    const LayerPlan& la = a.layers[l];
    const LayerPlan& lb = b.layers[l];
    if (la.owner != lb.owner || la.remat != lb.remat) changed = true;
    for (ExpertId e = 0; e < la.num_experts(); ++e) {
      const std::vector<DeviceId>& ra = la.replicas[e];
      const std::vector<DeviceId>& rb = lb.replicas[e];
      std::vector<DeviceId> added, removed;
      std::set_difference(rb.begin(), rb.end(), ra.begin(), ra.end(), std::back_inserter(added));
      std::set_difference(ra.begin(), ra.end(), rb.begin(), rb.end(), std::back_inserter(removed));
      for (DeviceId d : added) {
        out->replica_changes.push_back({l, e, d, true});
        if (d != lb.owner[e]) out->added_replica_bytes += model.layers[l].expert_param_bytes;
      }
      for (DeviceId d : removed) out->replica_changes.push_back({l, e, d, false});
      if (!added.empty() || !removed.empty()) changed = true;
    }
    if (changed) ++out->layers_changed;
  }
  return absl::OkStatus();
}

std::string DebugString(const Plan& plan) {
  std::string out =
      absl::StrCat("plan job=", plan.job_id, " id=", plan.id.epoch, ".", plan.id.version,
                   " eff=", plan.effective_iteration, " from=", plan.computed_from_iteration,
                   " policy=", plan.policy, " shard=", plan.sharding_version,
                   " rule=", DispatchRuleName(plan.dispatch_rule),
                   " sem=", ReplicaSemanticsName(plan.semantics), "\n");
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const LayerPlan& layer = plan.layers[l];
    absl::StrAppend(&out, "L", l, " ", RematModeName(layer.remat), ":");
    for (ExpertId e = 0; e < layer.num_experts(); ++e) {
      absl::StrAppend(&out, " ", e, "@", layer.owner[e], "[", absl::StrJoin(layer.replicas[e], ","),
                      "]");
    }
    absl::StrAppend(&out, "\n");
  }
  for (const Migration& m : plan.migrations) {
    absl::StrAppend(&out, "M ", m.layer, ".", m.expert, " ", m.from, "->", m.to, " ", m.bytes,
                    "\n");
  }
  const Prediction& p = plan.prediction;
  absl::StrAppend(&out, absl::StrFormat("P moe=%a mig=%a bal=%a bytes=%d\n", p.moe_seconds,
                                        p.migration_seconds, p.balancedness, p.sparse_bytes));
  for (const LayerPrediction& lp : p.layers) {
    absl::StrAppend(
        &out, absl::StrFormat("LP %a %a %a %a %a %a %d %d |", lp.total_seconds, lp.compute_seconds,
                              lp.all_to_all_seconds, lp.spag_seconds, lp.exposed_comm_seconds,
                              lp.balancedness, lp.spag_bytes, lp.sprs_bytes));
    for (double t : lp.device_tokens) absl::StrAppend(&out, absl::StrFormat(" %a", t));
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "MEM ", absl::StrJoin(p.device_memory_bytes, ","), "\n");
  return out;
}

const char* RematModeName(RematMode m) { return m == RematMode::kKeep ? "keep" : "regather"; }

const char* DispatchRuleName(DispatchRule r) {
  switch (r) {
    case DispatchRule::kEven:
      return "even";
    case DispatchRule::kReplicaEven:
      return "replica-even";
    case DispatchRule::kLoadAware:
      break;
  }
  return "load-aware";
}

const char* ReplicaSemanticsName(ReplicaSemantics s) {
  switch (s) {
    case ReplicaSemantics::kEphemeral:
      return "ephemeral";
    case ReplicaSemantics::kShadow:
      return "shadow";
    case ReplicaSemantics::kPersistent:
      return "persistent";
  }
  return "?";
}

bool ParseDispatchRule(std::string_view name, DispatchRule* out) {
  for (DispatchRule r :
       {DispatchRule::kEven, DispatchRule::kLoadAware, DispatchRule::kReplicaEven}) {
    if (name == DispatchRuleName(r)) {
      *out = r;
      return true;
    }
  }
  return false;
}

bool ParseReplicaSemantics(std::string_view name, ReplicaSemantics* out) {
  for (ReplicaSemantics s :
       {ReplicaSemantics::kEphemeral, ReplicaSemantics::kShadow, ReplicaSemantics::kPersistent}) {
    if (name == ReplicaSemanticsName(s)) {
      *out = s;
      return true;
    }
  }
  return false;
}

}  // namespace hecate::placement
