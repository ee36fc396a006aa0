// Loading cluster and model description files (proto3 JSON) for the simulator and offline tools.
#ifndef HECATE_SIM_CONFIGS_H_
#define HECATE_SIM_CONFIGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "placement/cluster.h"

namespace hecate::sim {

// NOT_FOUND / INVALID_ARGUMENT with the path in the message.
absl::StatusOr<placement::Cluster> LoadCluster(const std::string& path);
absl::StatusOr<placement::ModelSpec> LoadModel(const std::string& path);

// The attention forward time of one block on `cluster`: the model's attention_forward_seconds,
// or attention_flops_per_token x tokens_per_device / the slowest device's FLOP rate.
double AttentionSeconds(const placement::ModelSpec& model, const placement::Cluster& cluster);

}  // namespace hecate::sim

#endif  // HECATE_SIM_CONFIGS_H_
