// A placement that came from elsewhere, read for `hecatectl plan evaluate`:
//
//   CSV    layer,expert,devices        one line per (layer, expert) of the model; devices
//                                      separated by ';' or spaces, the first the owner (the
//                                      device keeping its optimizer state); a header line
//                                      starting with "layer" and '#' comments are skipped
//   JSON   {"phy2log": [[...], ...]}   EPLB's output: per layer, the logical expert of each
//                                      physical slot; slot s lives on device s / (slots /
//                                      devices) (rank-major, as EPLB lays them out). An optional
//                                      "num_gpus" must equal the cluster's devices. Two slots of
//                                      one expert on one device are one copy (EPLB wastes the
//                                      slot); the owner is the lowest holder.
//
// Every layer is then checked against the cluster and model (placement::ValidateLayer).
#ifndef HECATE_CLIENTS_CTL_PLACEMENT_FILE_H_
#define HECATE_CLIENTS_CTL_PLACEMENT_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "placement/cluster.h"
#include "placement/plan.h"

namespace hecate::ctl {

// NOT_FOUND for a missing file; INVALID_ARGUMENT naming the line (CSV) or the layer and slot
// (JSON) of anything malformed, out of range, missing or repeated.
absl::StatusOr<std::vector<placement::LayerPlan>> ReadPlacement(const std::string& path,
                                                                const placement::Cluster& cluster,
                                                                const placement::ModelSpec& model);
// The same from the file's contents (`name` only labels errors).
absl::StatusOr<std::vector<placement::LayerPlan>> ParsePlacement(const std::string& contents,
                                                                 const std::string& name,
                                                                 const placement::Cluster& cluster,
                                                                 const placement::ModelSpec& model);

}  // namespace hecate::ctl

#endif  // HECATE_CLIENTS_CTL_PLACEMENT_FILE_H_
