// The cost model shared by planning, the simulator and the predictions shown to operators.
//
// Every parameter is explicit: link bandwidths and latency and device FLOP rates come from the
// Cluster; expert sizes, FLOPs per token, token bytes and attention time from the ModelSpec. Per
// layer and iteration (docs/cost-model.md derives each term):
//
//   compute   = max_d(3 * tokens_d * flops_per_token / flops_d           forward + 2x backward
//                       + copies held by d (not owned) * copy_seconds)
//   a2a       = 4 * (slowest link + latency), dispatch and combine, forward and backward;
//               links: each device's intra-node in/out bytes / intra bandwidth, each device's
//               cross-node in/out bytes / its NIC cap, each node's cross-node in/out / node NIC
//   spAG      = two phases of the relay tree (placement/sparse_tree.h), one after the other, each
//               its slowest link (same links) + latency: owner -> holders on its node and one
//               relay per other node, then relays -> the other holders on their node; param bytes
//   spRS      = the same bytes in reverse (holders -> relays -> owner)
//   exposed   = ephemeral (FSSDP):  max(0, spAG - T_attn) + max(0, spRS [+ spAG if re-gather] - 2
//   T_attn)
//               shadow (FasterMoE): spAG (after the gate, not overlappable) + max(0, spRS - 2
//               T_attn) persistent (FlexMoE, SmartMoE, EPLB): max(0, AllReduce - 2 T_attn), where
//               each member of a replica group moves 2(n-1)/n parameter bytes (ring AllReduce)
//   total     = compute + a2a + exposed
//
// Migration (owner changes, or new persistent copies) moves parameters + optimizer state:
//   migration = max_d max(bytes in/out per link class / bandwidth) + latency, fully exposed.
//
// Thread-compatible: const methods may run concurrently given separate Dispatchers.
#ifndef HECATE_PLACEMENT_COST_MODEL_H_
#define HECATE_PLACEMENT_COST_MODEL_H_

#include <vector>

#include "placement/cluster.h"
#include "placement/dispatch.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

// Bytes moved by one pattern of point-to-point transfers: per device and link class, and per
// node across its NIC.
struct TrafficMatrix {
  std::vector<double> in_intra, out_intra, in_inter, out_inter;  // per device, bytes
  std::vector<double> node_in, node_out;                         // per node, cross-node bytes
  explicit TrafficMatrix(const Cluster& c)
      : in_intra(c.num_devices(), 0),
        out_intra(c.num_devices(), 0),
        in_inter(c.num_devices(), 0),
        out_inter(c.num_devices(), 0),
        node_in(c.num_nodes(), 0),
        node_out(c.num_nodes(), 0) {}
  void Add(const Cluster& c, DeviceId from, DeviceId to, double bytes);
  // The slowest link's time: max of each device's intra bytes / intra bandwidth, each device's
  // cross-node bytes / its NIC cap, and each node's cross-node bytes / the node NIC (+ latency
  // when anything moves), seconds.
  double Seconds(const Cluster& c) const;
  double TotalBytes() const;
};

// The data plane runs four All-to-Alls per MoE layer and iteration: dispatch and combine, in
// forward and in backward.
inline constexpr double kAllToAllsPerLayer = 4.0;
// Expert compute per token: forward plus a backward that costs twice the forward.
inline constexpr double kComputePasses = 3.0;

class CostModel {
 public:
  // `attention_forward_seconds` < 0 means: take it from the model spec.
  CostModel(const Cluster& cluster, const ModelSpec& model, double attention_forward_seconds = -1);

  const Cluster& cluster() const { return cluster_; }
  const ModelSpec& model() const { return model_; }
  double attention_forward_seconds() const { return attention_s_; }

  // One layer under a load matrix (tokens per source device and expert). `aggregate`, when given,
  // must be LoadAggregate::Of(load) (saves the pass over the matrix).
  LayerPrediction EvaluateLayer(LayerId l, const LayerPlan& layer, const LoadMatrix& load,
                                DispatchRule rule, ReplicaSemantics semantics,
                                Dispatcher* dispatcher,
                                const LoadAggregate* aggregate = nullptr) const;
  // Fills plan->prediction for `load` (one matrix per layer), including migration time and memory.
  // `aggregates`, when given, holds LoadAggregate::Of of every layer's matrix.
  // `reuse`, when given, names per layer a prediction to copy instead of evaluating (null:
  // evaluate; the aggregate of a reused layer is not read).
  void Evaluate(Plan* plan, const ModelLoad& load,
                const std::vector<LoadAggregate>* aggregates = nullptr,
                const std::vector<const LayerPrediction*>* reuse = nullptr) const;

  // The terms of EvaluateLayer, for planners that estimate a layer incrementally (the greedy):
  // Expert compute seconds per token that device d computes in layer l.
  double ExpertSecondsPerToken(LayerId l, DeviceId d) const;
  // All-to-All seconds per token crossing the node NIC (all four All-to-Alls, no latency).
  double AllToAllSecondsPerCrossNodeToken() const;
  // The replica communication of one layer not hidden by attention (docs/cost-model.md
  // "Overlap"), given one spAG and one spRS of `spag_seconds` / `sprs_seconds` and
  // `attention_forward_seconds` of attention forward per block (backward: twice that):
  //   ephemeral:  max(0, spAG - T_attn) + ExposedBackward
  //   shadow:     spAG + max(0, spRS - 2 T_attn)
  //   persistent: max(0, spRS - 2 T_attn)   (spRS is the replica AllReduce)
  static double ExposedSeconds(ReplicaSemantics semantics, RematMode remat, double spag_seconds,
                               double sprs_seconds, double attention_forward_seconds);
  // The backward part for ephemeral copies: max(0, spRS [+ the re-gather's spAG] - 2 T_attn).
  static double ExposedBackwardSeconds(double sprs_seconds, double regather_seconds,
                                       double attention_forward_seconds);

  // Time of the sparse collective of one layer: the relay tree's two phases, parameter bytes.
  double SparseCollectiveSeconds(LayerId l, const LayerPlan& layer, int64_t* bytes) const;
  // Exposed time of parameter + optimizer migrations.
  double MigrationSeconds(const std::vector<Migration>& migrations) const;

 private:
  const Cluster& cluster_;
  const ModelSpec& model_;
  double attention_s_;
};

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_COST_MODEL_H_
