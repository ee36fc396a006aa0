// Internal to the policies (placement/*_policy.cc, baselines.cc): what every policy's Compute
// shares -- the sharding it plans on, seeding from a previous plan, migrations, and finishing a
// plan with the cost model's prediction -- and the policies' constructors behind MakePolicy.
#ifndef HECATE_PLACEMENT_POLICY_SUPPORT_H_
#define HECATE_PLACEMENT_POLICY_SUPPORT_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "placement/load.h"
#include "placement/plan.h"
#include "placement/policy.h"
#include "placement/sharding.h"

namespace hecate::placement::internal {

// The sharding an FSSDP policy uses for this request: the request's owners, else the previous
// plan's, else even sharding.
Owners ResolveOwners(const PlanRequest& r);

// Adds `previous`'s copies (same owners) to `base`, within the per-device copy budget (experts in
// ascending order keep theirs first).
void SeedCopies(const LayerPlan& previous, const std::vector<int>& max_copies, LayerPlan* base);

// A layer whose experts are held by their owners only.
LayerPlan OwnersOnlyLayer(const std::vector<DeviceId>& owners);

// Owner changes relative to the previous plan's owners (or to even sharding at the start).
std::vector<Migration> OwnerMigrations(const PlanRequest& r, const Owners& owners);

// For persistent copies: every copy not held before costs parameters + optimizer state, sent
// from the expert's owner (or any previous holder).
std::vector<Migration> CopyMigrations(const PlanRequest& r, const std::vector<LayerPlan>& layers);

// The plan with its prediction on the request's load. `aggregates`, when given, holds
// LoadAggregate::Of of every layer's matrix; `reuse` (per layer, may be null) names predictions
// to keep instead of evaluating; `totals`, when given, are recorded as what each evaluated layer
// was planned for.
Plan Finish(const PlanRequest& r, std::string_view name, ReplicaSemantics semantics,
            DispatchRule rule, std::vector<LayerPlan> layers, std::vector<Migration> migrations,
            const std::vector<LoadAggregate>* aggregates = nullptr,
            const std::vector<const LayerPrediction*>* reuse = nullptr,
            const std::vector<std::vector<int64_t>>* totals = nullptr);

// The policies (MakePolicy's table).
std::unique_ptr<Policy> NewHecatePolicy(bool regather_every_layer);
std::unique_ptr<Policy> NewPaperPolicy();
std::unique_ptr<Policy> NewEpPolicy();
std::unique_ptr<Policy> NewFasterMoePolicy();
std::unique_ptr<Policy> NewFlexMoePolicy();
std::unique_ptr<Policy> NewSmartMoePolicy();
std::unique_ptr<Policy> NewEplbPolicy();

}  // namespace hecate::placement::internal

#endif  // HECATE_PLACEMENT_POLICY_SUPPORT_H_
