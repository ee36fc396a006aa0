// hecatectl commands that need no controller: `simulate`, `plan compute`, `trace ...`.
#ifndef HECATE_CLIENTS_CTL_OFFLINE_H_
#define HECATE_CLIENTS_CTL_OFFLINE_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "clients/ctl/output.h"
#include "placement/cluster.h"
#include "placement/load.h"

namespace hecate::ctl {

// Loads from a trace file (the window mean of its last `window` iterations) or a CSV of
// layer,expert,tokens (global counts, spread evenly over the source devices). NOT_FOUND for a
// missing file, INVALID_ARGUMENT naming the line of a malformed one.
absl::StatusOr<placement::ModelLoad> ReadLoads(const std::string& path,
                                               const placement::Cluster& cluster,
                                               const placement::ModelSpec& model, int window);

// `args` start with the command ("simulate", "plan", "trace"). Sets *handled = false when the
// command is not an offline one.
int RunOffline(const std::vector<std::string>& args, Format format, std::ostream& out,
               std::ostream& err, bool* handled);

}  // namespace hecate::ctl

#endif  // HECATE_CLIENTS_CTL_OFFLINE_H_
