// Placement plans: owners (sharding), replicas (materialization), re-materialization mode and the
// dispatch rule per layer, plus the cost model's prediction. A Plan is immutable once built and is
// shared read-only (STYLE.md "Immutable, versioned snapshots"). Validate() is the one invariant
// check used by the controller, the workers and the tests.
#ifndef HECATE_PLACEMENT_PLAN_H_
#define HECATE_PLACEMENT_PLAN_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "placement/cluster.h"

namespace hecate::placement {

// Fencing token of a plan: compared as (epoch, version).
struct PlanId {
  uint64_t epoch = 0;
  uint64_t version = 0;
  friend bool operator<(const PlanId& a, const PlanId& b) {
    return std::tie(a.epoch, a.version) < std::tie(b.epoch, b.version);
  }
  friend bool operator==(const PlanId& a, const PlanId& b) {
    return a.epoch == b.epoch && a.version == b.version;
  }
  friend bool operator!=(const PlanId& a, const PlanId& b) { return !(a == b); }
  friend bool operator<=(const PlanId& a, const PlanId& b) { return !(b < a); }
  friend bool operator>(const PlanId& a, const PlanId& b) { return b < a; }
  bool is_zero() const { return epoch == 0 && version == 0; }
};

enum class RematMode { kKeep, kRegather };

// The workers start layer l's SparseAllGather this many layers ahead, at the start of layer
// (l - kPrefetchLayers)'s attention (docs/cost-model.md "Schedule"); memory and time are charged
// for that schedule.
inline constexpr int kPrefetchLayers = 2;
// How a (source device, expert) pair's tokens are split over the expert's holders (dispatch.h):
//   kEven          the paper's: a holding source keeps them, else the node's holders, else all
//   kLoadAware     Hecate's default: locality by node, least-loaded holder first, spill
//   kReplicaEven   EPLB's (and FlexMoE's): every source splits evenly over all holders, whatever
//                  the node -- the even-split load model their planners assume
enum class DispatchRule { kEven, kLoadAware, kReplicaEven };

// How a policy's extra copies live, which decides what they cost (memory, traffic, migration).
enum class ReplicaSemantics {
  // FSSDP: parameters only, gathered every iteration (spAG), gradients summed back (spRS).
  kEphemeral,
  // FasterMoE shadowing: parameters broadcast after the gate (not overlappable with attention),
  // gradients reduced back to the owner.
  kShadow,
  // Rearrangement systems (FlexMoE, SmartMoE, EPLB): full copies with their own optimizer
  // state, gradients AllReduced; a new copy migrates parameters + optimizer state.
  kPersistent,
};

// The placement of one layer.
struct LayerPlan {
  // Owner device per expert.
  std::vector<DeviceId> owner;
  // Holders per expert: ascending, no duplicates, contains the owner.
  std::vector<std::vector<DeviceId>> replicas;
  RematMode remat = RematMode::kKeep;

  int num_experts() const { return static_cast<int>(owner.size()); }
  bool Holds(ExpertId e, DeviceId d) const;
  // Adds holder d of expert e, keeping the holders ascending. Precondition: !Holds(e, d).
  void AddHolder(ExpertId e, DeviceId d);
  // Removes holder d of expert e. Precondition: Holds(e, d).
  void DropHolder(ExpertId e, DeviceId d);
  // Number of non-owner copies on device d.
  int ExtraCopiesOn(DeviceId d) const;
  // ExtraCopiesOn for every device at once, in one pass over the holders.
  std::vector<int> ExtraCopies(int num_devices) const;

  friend bool operator==(const LayerPlan& a, const LayerPlan& b) {
    return a.owner == b.owner && a.replicas == b.replicas && a.remat == b.remat;
  }
  friend bool operator!=(const LayerPlan& a, const LayerPlan& b) { return !(a == b); }
};

// Predicted cost of one layer for one iteration (see cost_model.h for the formulas).
struct LayerPrediction {
  std::vector<double> device_tokens;  // tokens computed per device
  double max_tokens = 0;
  double mean_tokens = 0;
  double balancedness = 1;          // mean / max, 0-1
  double compute_seconds = 0;       // forward + backward expert compute on the slowest device
  double all_to_all_seconds = 0;    // 4 All-to-Alls (dispatch, combine; forward and backward)
  double spag_seconds = 0;          // one SparseAllGather (or shadow broadcast)
  double sprs_seconds = 0;          // one SparseReduceScatter (or replica gradient AllReduce)
  double exposed_comm_seconds = 0;  // replica communication not hidden behind attention
  double total_seconds = 0;         // compute + all_to_all + exposed_comm
  int64_t spag_bytes = 0;           // bytes moved by spAG per iteration (all devices)
  int64_t sprs_bytes = 0;           // bytes moved by spRS per iteration (all devices)
  // Token count per expert of the load the layer was planned for (kept in memory by `hecate`'s
  // warm start to tell whether the load moved since; not part of the wire format). Empty: unknown.
  std::vector<int64_t> planned_expert_tokens;
  // Warm start with a replan threshold: the last revision of this layer gained less than
  // revise_gain on an unmoved load; it is not revised again until its load moves.
  bool settled = false;
};

struct Migration {
  LayerId layer = 0;
  ExpertId expert = 0;
  DeviceId from = 0;
  DeviceId to = 0;
  int64_t bytes = 0;  // parameters + optimizer state
  friend bool operator==(const Migration& a, const Migration& b) {
    return std::tie(a.layer, a.expert, a.from, a.to, a.bytes) ==
           std::tie(b.layer, b.expert, b.from, b.to, b.bytes);
  }
};

struct Prediction {
  std::vector<LayerPrediction> layers;
  double moe_seconds = 0;                    // sum over layers of total_seconds
  double migration_seconds = 0;              // exposed migration time of this plan (0 if none)
  double balancedness = 1;                   // mean over layers
  int64_t sparse_bytes = 0;                  // sum over layers of spag_bytes + sprs_bytes
  std::vector<int64_t> device_memory_bytes;  // peak MoE memory per device
};

struct Plan {
  std::string job_id;
  PlanId id;
  uint64_t effective_iteration = 0;
  uint64_t computed_from_iteration = 0;
  std::string policy;
  uint64_t sharding_version = 0;
  DispatchRule dispatch_rule = DispatchRule::kLoadAware;
  ReplicaSemantics semantics = ReplicaSemantics::kEphemeral;
  std::vector<LayerPlan> layers;
  // Owner changes relative to the sharding this plan replaced.
  std::vector<Migration> migrations;
  Prediction prediction;

  int64_t migration_bytes() const;
};

// Every invariant of a plan against the cluster and model: one layer per MoE layer, one owner per
// expert inside the cluster, the owner among the holders, holders ascending and unique (never two
// copies of an expert on one device). INVALID_ARGUMENT naming the first violation.
absl::Status Validate(const Plan& plan, const Cluster& cluster, const ModelSpec& model);
absl::Status ValidateLayer(const LayerPlan& layer, LayerId l, const Cluster& cluster,
                           const ModelSpec& model);

// Per-device peak MoE memory of a plan (owned state + its copies), bytes. See cost_model.h.
std::vector<int64_t> MemoryPerDevice(const Plan& plan, const Cluster& cluster,
                                     const ModelSpec& model);
// The materialized copies' parameter bytes a device holds at most at once (the copy part of
// MemoryPerDevice, without gradients or owned state): what a worker meters as its peak copy bytes.
std::vector<int64_t> CopyBytesPerDevice(const Plan& plan, const Cluster& cluster,
                                        const ModelSpec& model);
// FAILED_PRECONDITION when some device's peak MoE memory exceeds its budget.
absl::Status CheckMemory(const Plan& plan, const Cluster& cluster, const ModelSpec& model);

// What changes from plan `a` to plan `b`.
struct PlanDiff {
  struct ReplicaChange {
    LayerId layer;
    ExpertId expert;
    DeviceId device;
    bool added;  // false: removed
  };
  std::vector<Migration> owner_changes;  // parameters + optimizer state move
  std::vector<ReplicaChange> replica_changes;
  int64_t migration_bytes = 0;  // sum of owner_changes bytes
  // Parameter bytes the new replicas of `b` (not held in `a`) take to gather, bytes.
  int64_t added_replica_bytes = 0;
  int layers_changed = 0;
};

// INVALID_ARGUMENT if the plans' shapes differ.
absl::Status Diff(const Plan& a, const Plan& b, const ModelSpec& model, PlanDiff* out);

// Owner changes from `from` to `to` (per layer owner vectors), each with param + optimizer bytes.
std::vector<Migration> Migrations(const std::vector<std::vector<DeviceId>>& from,
                                  const std::vector<std::vector<DeviceId>>& to,
                                  const ModelSpec& model);

// Every field of the plan (doubles printed exactly), one line per layer: two plans are
// identical iff their DebugStrings are.
std::string DebugString(const Plan& plan);

const char* RematModeName(RematMode m);
const char* DispatchRuleName(DispatchRule r);
const char* ReplicaSemanticsName(ReplicaSemantics s);
// The inverses of the names above; false (and *out unchanged) for an unknown name.
bool ParseDispatchRule(std::string_view name, DispatchRule* out);
bool ParseReplicaSemantics(std::string_view name, ReplicaSemantics* out);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_PLAN_H_
