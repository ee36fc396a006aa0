// The world the planner reasons about: the cluster topology and the model's MoE layers.
//
// Plain, immutable value types. A Cluster is built once from a ClusterSpec (validated) and then
// shared read-only; it precomputes the device <-> node maps every algorithm needs. Devices are
// ranks numbered in node order. Thread-safe for concurrent reads.
#ifndef HECATE_PLACEMENT_CLUSTER_H_
#define HECATE_PLACEMENT_CLUSTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace hecate::placement {

// Index of a device (rank), 0..num_devices-1.
using DeviceId = int;
// Index of a node, 0..num_nodes-1.
using NodeId = int;
// Index of an expert within its layer, 0..num_experts-1.
using ExpertId = int;
// Index of an MoE layer in model order.
using LayerId = int;

struct NodeSpec {
  std::string name;
  int num_devices = 0;
  // Memory per device for MoE parameters, gradients and optimizer state, bytes.
  int64_t device_memory_bytes = 0;
  // Sustained expert-GEMM rate of one device, FLOP/s.
  double device_flops_per_second = 0;
};

struct ClusterSpec {
  std::string name;
  std::vector<NodeSpec> nodes;
  // Device-to-device bandwidth inside a node, bytes/s.
  double intra_node_bandwidth_bytes_per_second = 0;
  // Aggregate NIC bandwidth of one node to the other nodes (each direction), bytes/s.
  double inter_node_bandwidth_bytes_per_second = 0;
  // Most one device can send or receive across nodes (its NIC or PCIe path), bytes/s;
  // 0 = the node's whole NIC.
  double device_nic_bandwidth_bytes_per_second = 0;
  // Fixed cost of one collective step, seconds.
  double link_latency_seconds = 0;
  // Whether the workers move data beside their compute (the asynchronous lane: GPUs' copy engines
  // and NICs, CPU workers' second set of connections), so the schedule hides transfers behind
  // compute; false for workers run blocking (--overlap=false), whose transfers take the step's
  // time (docs/cost-model.md "Schedule").
  bool transfers_overlap_compute = true;
};

// A validated cluster with precomputed topology maps.
class Cluster {
 public:
  // INVALID_ARGUMENT when there are no devices, a node has no devices, or a bandwidth, memory or
  // FLOP rate is not positive.
  static absl::StatusOr<Cluster> Create(ClusterSpec spec);

  // A single node of `num_devices` identical devices (tests and small runs).
  // `inter_bw` is the node's aggregate NIC bandwidth; `device_nic_bw` (0: inter_bw) caps one
  // device's cross-node traffic.
  static Cluster Uniform(int num_nodes, int devices_per_node, int64_t device_memory_bytes,
                         double device_flops_per_second, double intra_bw, double inter_bw,
                         double latency_seconds = 0, double device_nic_bw = 0);

  const ClusterSpec& spec() const { return spec_; }
  int num_devices() const { return static_cast<int>(node_of_.size()); }
  int num_nodes() const { return static_cast<int>(spec_.nodes.size()); }
  NodeId node_of(DeviceId d) const { return node_of_[d]; }
  // Devices of node n, ascending.
  const std::vector<DeviceId>& devices_of(NodeId n) const { return devices_of_[n]; }
  bool same_node(DeviceId a, DeviceId b) const { return node_of_[a] == node_of_[b]; }
  int64_t memory_bytes(DeviceId d) const { return spec_.nodes[node_of_[d]].device_memory_bytes; }
  double flops(DeviceId d) const { return spec_.nodes[node_of_[d]].device_flops_per_second; }
  double intra_bw() const { return spec_.intra_node_bandwidth_bytes_per_second; }
  // A node's aggregate NIC bandwidth, bytes/s.
  double inter_bw() const { return spec_.inter_node_bandwidth_bytes_per_second; }
  // One device's cross-node bandwidth cap, bytes/s.
  double device_nic_bw() const {
    const double cap = spec_.device_nic_bandwidth_bytes_per_second;
    return cap > 0 && cap < inter_bw() ? cap : inter_bw();
  }
  double latency() const { return spec_.link_latency_seconds; }
  bool transfers_overlap_compute() const { return spec_.transfers_overlap_compute; }
  // The bandwidth the paper's overlap degree uses: inter-node (one device's cap) on a multi-node
  // cluster whose inter-node links are slower, otherwise intra-node.
  double overlap_bw() const;

 private:
  explicit Cluster(ClusterSpec spec);
  ClusterSpec spec_;
  std::vector<NodeId> node_of_;
  std::vector<std::vector<DeviceId>> devices_of_;
};

struct LayerSpec {
  int num_experts = 0;
  // One expert's parameters in the compute dtype (what spAG/spRS move), bytes.
  int64_t expert_param_bytes = 0;
  // One expert's optimizer state (fp32 master + Adam m, v), bytes.
  int64_t expert_optimizer_bytes = 0;
  // Forward FLOPs per token through one expert; backward costs 2x.
  double expert_flops_per_token = 0;
  // Fixed compute a non-owner copy adds to its holder per iteration, forward + backward, seconds:
  // what splitting an expert's tokens over one more device costs beyond the FLOPs (the replica's
  // parameter and gradient buffers, one more and smaller GEMM per pass). 0 = none (the paper's
  // model); //bench:calibration fits it for the CPU workers.
  double copy_seconds = 0;
};

struct ModelSpec {
  std::string name;
  int top_k = 1;
  // Activation bytes of one token in the All-to-All.
  int64_t token_bytes = 0;
  // Tokens each device feeds into each MoE layer per iteration (before top-k).
  int64_t tokens_per_device = 0;
  // Forward time of the non-MoE part of one block, seconds (backward = 2x).
  double attention_forward_seconds = 0;
  // Forward FLOPs of the non-MoE part of one block per token; when attention_forward_seconds is
  // 0, tools derive it as tokens_per_device x this / device FLOP rate.
  double attention_flops_per_token = 0;
  std::vector<LayerSpec> layers;

  int num_layers() const { return static_cast<int>(layers.size()); }
  int total_experts() const;
  // INVALID_ARGUMENT when a layer has no experts, sizes are not positive, or top_k is out of range.
  absl::Status Validate() const;
};

// A model of `num_layers` identical layers with `num_experts` FFN experts of width d_model and
// hidden size d_ffn (no biases), `param_dtype_bytes` per parameter, Adam in fp32 with an fp32
// master copy when the compute dtype is narrower (12 bytes/param), otherwise 8 bytes/param.
ModelSpec UniformModel(std::string name, int num_layers, int num_experts, int top_k, int d_model,
                       int d_ffn, int param_dtype_bytes, int64_t tokens_per_device,
                       double attention_forward_seconds);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_CLUSTER_H_
