// What crosses the controller's wire, in domain form (no protobuf): a worker's registration and
// its per-iteration load report. The controller's core takes these; the worker builds them;
// wire/convert.h maps them to and from hecate.v1 messages. Value types.
#ifndef HECATE_WIRE_TYPES_H_
#define HECATE_WIRE_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "placement/calibration.h"
#include "placement/cluster.h"
#include "placement/plan.h"

namespace hecate::wire {

struct WorkerRegistration {
  std::string job_id;
  int rank = 0;
  int world_size = 0;
  std::string node;
  int local_rank = 0;
  std::string device_kind;
  int64_t device_memory_bytes = 0;
  uint64_t incarnation = 0;
  placement::ModelSpec model;
  // Link bandwidths, latency and device FLOP rate (nodes are derived from `node`).
  placement::ClusterSpec links;
  // How the worker calibrates plans after the gate: the controller judges the plan in force the
  // way the workers run it (the observed balancedness).
  placement::CalibrationRule calibration;
  // SHA-256 of the secret the controller issued to this incarnation (set by the controller).
  std::string secret_sha256;
};

// Wall time of one iteration's phases on one worker, seconds (attention: per block).
struct PhaseTimes {
  double attention_seconds = 0;
  double gate_seconds = 0;
  double dispatch_seconds = 0;
  double expert_seconds = 0;
  double combine_seconds = 0;
  double spag_seconds = 0;
  double sprs_seconds = 0;
  double optimizer_seconds = 0;
  double step_seconds = 0;
};

struct LoadReport {
  std::string job_id;
  int rank = 0;
  uint64_t incarnation = 0;
  uint64_t iteration = 0;
  placement::PlanId plan;
  // One row per layer: tokens this rank routed to each expert.
  std::vector<std::vector<int64_t>> layers;
  PhaseTimes timings;
  int64_t free_memory_bytes = 0;
  int64_t tokens = 0;
};

}  // namespace hecate::wire

#endif  // HECATE_WIRE_TYPES_H_
