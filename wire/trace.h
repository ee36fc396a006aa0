// Load traces: what the simulator replays and what `hecate-worker --trace_out` records.
//
// Format (text, one file; docs/traces.md):
//   line 1   "hecate-trace v1"
//   line 2   {"cluster": <ClusterSpec as proto3 JSON>, "model": <ModelSpec as proto3 JSON>}
//   then per iteration:
//            "iteration <n>"
//            one line per MoE layer: the [source device x expert] token matrix, row-major,
//            space-separated integers (devices x experts of that layer)
// Readers validate every matrix's shape against the header; a truncated last iteration (a
// crashed recorder) is dropped, not an error.
#ifndef HECATE_WIRE_TRACE_H_
#define HECATE_WIRE_TRACE_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/load.h"

namespace hecate::wire {

struct Trace {
  placement::ClusterSpec cluster;
  placement::ModelSpec model;
  std::vector<uint64_t> iterations;
  std::vector<placement::ModelLoad> loads;  // one per iteration
};

class TraceWriter {
 public:
  static absl::StatusOr<std::unique_ptr<TraceWriter>> Open(const std::string& path,
                                                           const placement::ClusterSpec& cluster,
                                                           const placement::ModelSpec& model);
  absl::Status Append(uint64_t iteration, const placement::ModelLoad& load);

 private:
  std::ofstream out_;
};

absl::Status WriteTrace(const std::string& path, const Trace& trace);
// NOT_FOUND: no file; INVALID_ARGUMENT: not a trace / bad header / wrong matrix shape.
absl::StatusOr<Trace> ReadTrace(const std::string& path);

}  // namespace hecate::wire

#endif  // HECATE_WIRE_TRACE_H_
