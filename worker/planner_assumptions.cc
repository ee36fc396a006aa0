#include "worker/planner_assumptions.h"

#include "absl/strings/str_cat.h"

namespace hecate::worker {

namespace pl = placement;

absl::Status ValidateAssumptions(const PlannerAssumptions& a) {
  // Written so that NaN fails too.
  if (!(a.attention_ms >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention_ms must be >= 0, got ", a.attention_ms));
  }
  if (!(a.device_gflops > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device_gflops must be > 0, got ", a.device_gflops));
  }
  if (!(a.link_gbytes > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("link_gbytes must be > 0, got ", a.link_gbytes));
  }
  if (!(a.copy_overhead_ms >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("copy_overhead_ms must be >= 0, got ", a.copy_overhead_ms));
  }
  return absl::OkStatus();
}

pl::ClusterSpec AssumedClusterSpec(const PlannerAssumptions& a,
                                   const std::vector<int>& devices_per_node,
                                   int64_t device_memory_bytes, bool overlap) {
  pl::ClusterSpec spec;
  spec.name = "workers";
  for (int devices : devices_per_node) {
    spec.nodes.push_back({absl::StrCat("node", spec.nodes.size()), devices, device_memory_bytes,
                          a.device_gflops * 1e9});
  }
  const double bw = a.link_gbytes * 1e9;
  spec.intra_node_bandwidth_bytes_per_second = bw;
  spec.inter_node_bandwidth_bytes_per_second = bw / 2;
  spec.link_latency_seconds = kAssumedLinkLatencySeconds;
  // With the lane, transfers run beside the step's compute (on CPU workers the lane mostly waits on
  // its peers and the kernel's socket copies, //bench:calibration); blocking, they take its time.
  spec.transfers_overlap_compute = overlap;
  return spec;
}

void ApplyAssumptions(const PlannerAssumptions& a, pl::ModelSpec& model) {
  model.attention_forward_seconds = a.attention_ms * 1e-3;
  for (pl::LayerSpec& l : model.layers) l.copy_seconds = a.copy_overhead_ms * 1e-3;
}

}  // namespace hecate::worker
