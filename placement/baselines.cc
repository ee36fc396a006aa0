// The baselines, each under the same Policy interface with honest memory and migration
// accounting (docs/placement.md "Baselines"): `ep`, `fastermoe`, `flexmoe`, `smartmoe`, `eplb`.
#include <algorithm>
#include <numeric>
#include <utility>

#include "placement/baselines.h"
#include "placement/cost_model.h"
#include "placement/dispatch.h"
#include "placement/policy_support.h"

namespace hecate::placement::internal {

namespace {

class EpPolicy : public Policy {
 public:
  bool SchedulesItself() const override { return true; }
  std::string_view name() const override { return "ep"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const Owners owners = EvenSharding(*r.cluster, *r.model);
    std::vector<LayerPlan> layers;
    for (const std::vector<DeviceId>& o : owners) layers.push_back(OwnersOnlyLayer(o));
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  OwnerMigrations(r, owners));
  }
};

class FasterMoePolicy : public Policy {
 public:
  bool SchedulesItself() const override { return true; }
  std::string_view name() const override { return "fastermoe"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kShadow; }
  bool PlansAfterGate() const override { return true; }
  Plan Compute(const PlanRequest& r) const override {
    const Owners owners = EvenSharding(*r.cluster, *r.model);
    const std::vector<int> keep = CopyBudget(*r.cluster, *r.model, owners, semantics(),
                                             RematMode::kKeep, r.config.extra_slots);
    const int max_shadows = *std::min_element(keep.begin(), keep.end());
    CostModel cost(*r.cluster, *r.model, r.config.attention_forward_seconds);
    Dispatcher dispatcher(*r.cluster);
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      layers.push_back(ShadowHotExperts(cost, l, OwnersOnlyLayer(owners[l]), (*r.load)[l],
                                        max_shadows, &dispatcher));
    }
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  OwnerMigrations(r, owners));
  }
};

// Per-device load under an even split of each expert's load over its holders.
std::vector<double> EvenSplitLoads(const LayerPlan& layer, const std::vector<double>& loads,
                                   int devices) {
  std::vector<double> dl(devices, 0.0);
  for (ExpertId e = 0; e < layer.num_experts(); ++e) {
    const double per = loads[e] / layer.replicas[e].size();
    for (DeviceId d : layer.replicas[e]) dl[d] += per;
  }
  return dl;
}

class FlexMoePolicy : public Policy {
 public:
  bool SchedulesItself() const override { return true; }
  std::string_view name() const override { return "flexmoe"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const int devices = r.cluster->num_devices();
    const std::vector<std::vector<double>> loads = ExpertLoads(*r.load);
    const bool continuing = r.previous != nullptr && r.previous->policy == name();
    const Owners owners = continuing ? OwnersOf(*r.previous) : EvenSharding(*r.cluster, *r.model);
    const std::vector<int> budget = CopyBudget(*r.cluster, *r.model, owners, semantics(),
                                               RematMode::kKeep, r.config.extra_slots);
    const int max_changes =
        r.config.flexmoe_max_changes > 0 ? r.config.flexmoe_max_changes : devices;
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      LayerPlan layer = continuing ? r.previous->layers[l] : OwnersOnlyLayer(owners[l]);
      layer.remat = RematMode::kKeep;
      const std::vector<double>& w = loads[l];
      double total = std::accumulate(w.begin(), w.end(), 0.0);
      const double mean = total / devices;
      for (int change = 0; change < max_changes && mean > 0; ++change) {
        std::vector<double> dl = EvenSplitLoads(layer, w, devices);
        const DeviceId hot =
            static_cast<DeviceId>(std::max_element(dl.begin(), dl.end()) - dl.begin());
        if (dl[hot] <= r.config.flexmoe_threshold * mean) break;
        // Expand: the hot device's expert with the highest load per copy gets a copy on the
        // least-loaded device that has (or can make, by shrinking) room.
        ExpertId e_hot = -1;
        for (ExpertId e = 0; e < layer.num_experts(); ++e) {
          if (!layer.Holds(e, hot) || static_cast<int>(layer.replicas[e].size()) >= devices)
            continue;
          if (e_hot < 0 ||
              w[e] / layer.replicas[e].size() > w[e_hot] / layer.replicas[e_hot].size()) {
            e_hot = e;
          }
        }
        if (e_hot < 0) break;
        const double next = w[e_hot] / (layer.replicas[e_hot].size() + 1);
        DeviceId target = -1;
        for (DeviceId d = 0; d < devices; ++d) {
          if (layer.Holds(e_hot, d) || budget[d] <= 0) continue;
          if (target < 0 || dl[d] < dl[target]) target = d;
        }
        if (target < 0 || dl[target] + next >= dl[hot]) break;
        if (layer.ExtraCopiesOn(target) >= budget[target]) {
          // Shrink: drop the target's coldest extra copy.
          ExpertId cold = -1;
          for (ExpertId e = 0; e < layer.num_experts(); ++e) {
            if (layer.owner[e] == target || !layer.Holds(e, target)) continue;
            if (cold < 0 ||
                w[e] / layer.replicas[e].size() < w[cold] / layer.replicas[cold].size()) {
              cold = e;
            }
          }
          if (cold < 0) break;
          std::vector<DeviceId>& rc = layer.replicas[cold];
          rc.erase(std::find(rc.begin(), rc.end(), target));
        }
        std::vector<DeviceId>& rh = layer.replicas[e_hot];
        rh.insert(std::upper_bound(rh.begin(), rh.end(), target), target);
      }
      layers.push_back(std::move(layer));
    }
    std::vector<Migration> migrations = CopyMigrations(r, layers);
    return Finish(r, name(), semantics(), DispatchRule::kReplicaEven, std::move(layers),
                  std::move(migrations));
  }
};

class SmartMoePolicy : public Policy {
 public:
  bool SchedulesItself() const override { return true; }
  std::string_view name() const override { return "smartmoe"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const int devices = r.cluster->num_devices();
    const bool continuing = r.previous != nullptr && r.previous->policy == name();
    const int period = std::max(1, r.config.smartmoe_period);
    if (continuing && r.iteration % period != 0) {
      return Finish(r, name(), semantics(), DispatchRule::kEven, r.previous->layers, {});
    }
    const std::vector<std::vector<double>> loads = ExpertLoads(*r.load);
    const Owners current = continuing ? OwnersOf(*r.previous) : EvenSharding(*r.cluster, *r.model);
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      const int experts = r.model->layers[l].num_experts;
      const int cap = (experts + devices - 1) / devices;
      std::vector<ExpertId> order(experts);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](ExpertId a, ExpertId b) { return loads[l][a] > loads[l][b]; });
      // Balanced packing with equal expert counts per device (LPT), ties to the current owner.
      std::vector<double> dl(devices, 0.0);
      std::vector<int> count(devices, 0);
      std::vector<DeviceId> owner(experts, 0);
      for (ExpertId e : order) {
        DeviceId best = -1;
        for (DeviceId d = 0; d < devices; ++d) {
          if (count[d] >= cap) continue;
          if (best < 0 || dl[d] < dl[best] || (dl[d] == dl[best] && d == current[l][e])) best = d;
        }
        owner[e] = best;
        dl[best] += loads[l][e];
        ++count[best];
      }
      layers.push_back(OwnersOnlyLayer(owner));
    }
    Owners owners;
    for (const LayerPlan& layer : layers) owners.push_back(layer.owner);
    std::vector<Migration> migrations = Migrations(current, owners, *r.model);
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  std::move(migrations));
  }
};

class EplbPolicy : public Policy {
 public:
  bool SchedulesItself() const override { return true; }
  std::string_view name() const override { return "eplb"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kPersistent; }
  Plan Compute(const PlanRequest& r) const override {
    const int devices = r.cluster->num_devices();
    const bool continuing = r.previous != nullptr && r.previous->policy == name();
    const int period = std::max(1, r.config.eplb_period);
    if (continuing && r.iteration % period != 0) {
      return Finish(r, name(), semantics(), DispatchRule::kReplicaEven, r.previous->layers, {});
    }
    const std::vector<std::vector<double>> loads = ExpertLoads(*r.load);
    // Slots per device: each slot holds one expert of a layer with its gradient and optimizer
    // state, in every layer at once (persistent copies).
    int64_t per_slot = 0;
    for (const LayerSpec& spec : r.model->layers) {
      per_slot += 2 * spec.expert_param_bytes + spec.expert_optimizer_bytes;
    }
    int64_t min_memory = r.cluster->memory_bytes(0);
    for (DeviceId d = 1; d < devices; ++d)
      min_memory = std::min(min_memory, r.cluster->memory_bytes(d));
    const int64_t slot_cap = per_slot > 0 ? min_memory / per_slot : 0;
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      const int experts = r.model->layers[l].num_experts;
      const std::vector<double>& w = loads[l];
      // EPLB gives every device the same number of physical slots (num_replicas % num_gpus ==
      // 0): the logical experts plus the configured redundant ones, rounded up to that, within
      // memory (and the equal-memory cap, if set). When even the logical experts do not fit that
      // way, it places just the logical experts.
      const int base_slots = (experts + devices - 1) / devices;
      const int redundant =
          r.config.eplb_redundant_experts >= 0 ? r.config.eplb_redundant_experts : devices;
      int64_t want = std::min<int64_t>(slot_cap, (experts + redundant + devices - 1) / devices);
      if (r.config.extra_slots >= 0)
        want = std::min<int64_t>(want, base_slots + r.config.extra_slots);
      want = std::min<int64_t>(want, experts);  // more slots than distinct experts are useless
      const int per_device = static_cast<int>(std::max<int64_t>(want, base_slots));
      const int physical = want >= base_slots ? per_device * devices : experts;
      // replicate_experts: each redundant slot to argmax(load / count).
      std::vector<int> count(experts, 1);
      for (int s = experts; s < physical; ++s) {
        ExpertId best = 0;
        for (ExpertId e = 1; e < experts; ++e) {
          if (w[e] * count[best] > w[best] * count[e]) best = e;
        }
        ++count[best];
      }
      // balanced_packing: physical experts by load per copy (descending) to the lightest device
      // with a free slot. EPLB ignores identity, so two copies may land on one device; such a
      // duplicate is merged (the slot is wasted, as in EPLB).
      std::vector<std::pair<double, ExpertId>> items;
      for (ExpertId e = 0; e < experts; ++e) {
        for (int c = 0; c < count[e]; ++c) items.push_back({w[e] / count[e], e});
      }
      std::stable_sort(items.begin(), items.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      std::vector<double> dl(devices, 0.0);
      std::vector<int> used(devices, 0);
      LayerPlan layer;
      layer.replicas.resize(experts);
      for (const auto& [per_copy, e] : items) {
        DeviceId best = -1;
        for (DeviceId d = 0; d < devices; ++d) {
          if (used[d] >= per_device) continue;
          if (best < 0 || dl[d] < dl[best]) best = d;
        }
        dl[best] += per_copy;
        ++used[best];
        std::vector<DeviceId>& holders = layer.replicas[e];
        auto it = std::lower_bound(holders.begin(), holders.end(), best);
        if (it == holders.end() || *it != best) holders.insert(it, best);
      }
      layer.owner.resize(experts);
      for (ExpertId e = 0; e < experts; ++e) layer.owner[e] = layer.replicas[e].front();
      layers.push_back(std::move(layer));
    }
    std::vector<Migration> migrations = CopyMigrations(r, layers);
    return Finish(r, name(), semantics(), DispatchRule::kReplicaEven, std::move(layers),
                  std::move(migrations));
  }
};

}  // namespace

}  // namespace hecate::placement::internal

namespace hecate::placement {

LayerPlan ShadowHotExperts(const CostModel& cost, LayerId l, LayerPlan layer,
                           const LoadMatrix& load, int max_shadows, Dispatcher* dispatcher) {
  const int devices = cost.cluster().num_devices();
  const std::vector<int64_t> loads = load.ExpertTotals();
  std::vector<ExpertId> order(layer.num_experts());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](ExpertId a, ExpertId b) { return loads[a] > loads[b]; });
  double best =
      cost.EvaluateLayer(l, layer, load, DispatchRule::kEven, ReplicaSemantics::kShadow, dispatcher)
          .total_seconds;
  for (int i = 0; i < std::min<int>(max_shadows, layer.num_experts()); ++i) {
    const ExpertId e = order[i];
    if (loads[e] <= 0) break;
    std::vector<DeviceId> previous = layer.replicas[e];
    layer.replicas[e].resize(devices);
    std::iota(layer.replicas[e].begin(), layer.replicas[e].end(), 0);
    const double t = cost.EvaluateLayer(l, layer, load, DispatchRule::kEven,
                                        ReplicaSemantics::kShadow, dispatcher)
                         .total_seconds;
    if (t < best) {
      best = t;
    } else {
      layer.replicas[e] = std::move(previous);
      break;
    }
  }
  return layer;
}

}  // namespace hecate::placement

namespace hecate::placement::internal {

std::unique_ptr<Policy> NewEpPolicy() { return std::make_unique<EpPolicy>(); }
std::unique_ptr<Policy> NewFasterMoePolicy() { return std::make_unique<FasterMoePolicy>(); }
std::unique_ptr<Policy> NewFlexMoePolicy() { return std::make_unique<FlexMoePolicy>(); }
std::unique_ptr<Policy> NewSmartMoePolicy() { return std::make_unique<SmartMoePolicy>(); }
std::unique_ptr<Policy> NewEplbPolicy() { return std::make_unique<EplbPolicy>(); }

}  // namespace hecate::placement::internal
