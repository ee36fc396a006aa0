#include "sim/configs.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "wire/convert.h"

namespace hecate::sim {

absl::StatusOr<placement::Cluster> LoadCluster(const std::string& path) {
  v1::ClusterSpec spec;
  if (absl::Status s = wire::ReadJsonFile(path, &spec); !s.ok()) return s;
  absl::StatusOr<placement::Cluster> c = placement::Cluster::Create(wire::FromProto(spec));
  if (!c.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", c.status().message()));
  return c;
}

absl::StatusOr<placement::ModelSpec> LoadModel(const std::string& path) {
  v1::ModelSpec spec;
  if (absl::Status s = wire::ReadJsonFile(path, &spec); !s.ok()) return s;
  placement::ModelSpec m = wire::FromProto(spec);
  if (absl::Status s = m.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return m;
}

double AttentionSeconds(const placement::ModelSpec& model, const placement::Cluster& cluster) {
  if (model.attention_forward_seconds > 0) return model.attention_forward_seconds;
  double flops = cluster.flops(0);
  for (int d = 1; d < cluster.num_devices(); ++d) flops = std::min(flops, cluster.flops(d));
  return model.attention_flops_per_token * static_cast<double>(model.tokens_per_device) / flops;
}

}  // namespace hecate::sim
