// What a rank's local planner assumes about the hardware, and the cluster and model the planners
// (local, and the controller through the registration) see from it. hecate-worker (its
// --attention_ms, --device_gflops, --link_gbytes, --copy_overhead_ms) and the PyTorch front end
// (hecate.init's keywords of the same names) share it, so the same job is planned the same way
// through either. Torch-free.
#ifndef HECATE_WORKER_PLANNER_ASSUMPTIONS_H_
#define HECATE_WORKER_PLANNER_ASSUMPTIONS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "placement/cluster.h"

namespace hecate::worker {

struct PlannerAssumptions {
  double attention_ms = 0.5;    // attention forward per block
  double device_gflops = 20;    // expert FLOP rate
  double link_gbytes = 2;       // link bandwidth (inter-node: half)
  double copy_overhead_ms = 0;  // fixed compute an expert copy costs its holder per iteration
};

// The memory a CPU rank offers the planner.
inline constexpr int64_t kCpuDeviceMemoryBytes = int64_t{4} << 30;
// Fixed cost of one collective step the planner charges.
inline constexpr double kAssumedLinkLatencySeconds = 50e-6;

// INVALID_ARGUMENT naming the field (flag / keyword) when an assumption is out of range:
// attention_ms >= 0, device_gflops > 0, link_gbytes > 0, copy_overhead_ms >= 0.
absl::Status ValidateAssumptions(const PlannerAssumptions& a);

// The cluster: one node per entry of `devices_per_node`, each device with `device_memory_bytes`
// and the assumed FLOP rate; links at the assumed bandwidth (inter-node half of it) and
// kAssumedLinkLatencySeconds; transfers hidden behind compute when the ranks run a lane.
placement::ClusterSpec AssumedClusterSpec(const PlannerAssumptions& a,
                                          const std::vector<int>& devices_per_node,
                                          int64_t device_memory_bytes, bool overlap);

// The assumed attention time and copy overhead, written into every layer of `model`.
void ApplyAssumptions(const PlannerAssumptions& a, placement::ModelSpec& model);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_PLANNER_ASSUMPTIONS_H_
