#include "placement/cluster.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hecate::placement {

Cluster::Cluster(ClusterSpec spec) : spec_(std::move(spec)) {
  devices_of_.resize(spec_.nodes.size());
  for (NodeId n = 0; n < static_cast<int>(spec_.nodes.size()); ++n) {
    for (int i = 0; i < spec_.nodes[n].num_devices; ++i) {
      devices_of_[n].push_back(static_cast<DeviceId>(node_of_.size()));
      node_of_.push_back(n);
    }
  }
}

absl::StatusOr<Cluster> Cluster::Create(ClusterSpec spec) {
  if (spec.nodes.empty()) return absl::InvalidArgumentError("cluster has no nodes");
  for (size_t n = 0; n < spec.nodes.size(); ++n) {
    const NodeSpec& node = spec.nodes[n];
    if (node.num_devices <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("node ", n, " has no devices"));
    }
    if (node.device_memory_bytes <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("node ", n, ": device memory must be > 0"));
    }
    if (!(node.device_flops_per_second > 0)) {
      return absl::InvalidArgumentError(absl::StrCat("node ", n, ": device FLOP rate must be > 0"));
    }
  }
  if (!(spec.intra_node_bandwidth_bytes_per_second > 0) ||
      !(spec.inter_node_bandwidth_bytes_per_second > 0)) {
    return absl::InvalidArgumentError("link bandwidths must be > 0");
  }
  if (!(spec.device_nic_bandwidth_bytes_per_second >= 0)) {
    return absl::InvalidArgumentError("device NIC bandwidth must be >= 0");
  }
  if (!(spec.link_latency_seconds >= 0)) {
    return absl::InvalidArgumentError("link latency must be >= 0");
  }
  return Cluster(std::move(spec));
}

Cluster Cluster::Uniform(int num_nodes, int devices_per_node, int64_t device_memory_bytes,
                         double device_flops_per_second, double intra_bw, double inter_bw,
                         double latency_seconds, double device_nic_bw) {
  ClusterSpec spec;
  spec.name = absl::StrCat(num_nodes, "x", devices_per_node);
  for (int n = 0; n < num_nodes; ++n) {
    spec.nodes.push_back(NodeSpec{absl::StrCat("node", n), devices_per_node, device_memory_bytes,
                                  device_flops_per_second});
  }
  spec.intra_node_bandwidth_bytes_per_second = intra_bw;
  spec.inter_node_bandwidth_bytes_per_second = inter_bw;
  spec.link_latency_seconds = latency_seconds;
  spec.device_nic_bandwidth_bytes_per_second = device_nic_bw;
  return Cluster(std::move(spec));
}

double Cluster::overlap_bw() const {
  if (num_nodes() > 1 && device_nic_bw() < intra_bw()) return device_nic_bw();
  return intra_bw();
}

int ModelSpec::total_experts() const {
  int total = 0;
  for (const LayerSpec& l : layers) total += l.num_experts;
  return total;
}

absl::Status ModelSpec::Validate() const {
  if (layers.empty()) return absl::InvalidArgumentError("model has no MoE layers");
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec& layer = layers[l];
    if (layer.num_experts <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " has no experts"));
    }
    if (layer.expert_param_bytes <= 0 || layer.expert_optimizer_bytes < 0) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": expert sizes must be > 0"));
    }
    if (!(layer.expert_flops_per_token >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": FLOPs per token < 0"));
    }
    if (top_k < 1 || top_k > layer.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("top_k ", top_k, " out of range for layer ", l,
                                                     " with ", layer.num_experts, " experts"));
    }
  }
  if (token_bytes < 0 || tokens_per_device < 0 || !(attention_forward_seconds >= 0)) {
    return absl::InvalidArgumentError(
        "token bytes, tokens per device and attention time must be >= 0");
  }
  return absl::OkStatus();
}

ModelSpec UniformModel(std::string name, int num_layers, int num_experts, int top_k, int d_model,
                       int d_ffn, int param_dtype_bytes, int64_t tokens_per_device,
                       double attention_forward_seconds) {
  ModelSpec model;
  model.name = std::move(name);
  model.top_k = top_k;
  model.token_bytes = int64_t{d_model} * param_dtype_bytes;
  model.tokens_per_device = tokens_per_device;
  model.attention_forward_seconds = attention_forward_seconds;
  const int64_t params = 2 * int64_t{d_model} * d_ffn;
  const int64_t optimizer_bytes_per_param = param_dtype_bytes < 4 ? 12 : 8;
  for (int l = 0; l < num_layers; ++l) {
    model.layers.push_back(LayerSpec{num_experts, params * param_dtype_bytes,
                                     params * optimizer_bytes_per_param,
                                     2.0 * static_cast<double>(params)});
  }
  return model;
}

}  // namespace hecate::placement
