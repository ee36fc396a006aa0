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
// Exposure above is one layer's own estimate (EvaluateLayer: what planners compare). A plan's
// prediction (Evaluate) charges the schedule the workers run instead (docs/cost-model.md
// "Schedule"): a timeline over the layers in which spAG of layer l starts kPrefetchLayers layers
// ahead on the lane and is waited before l's experts, spRS (or the replica AllReduce) starts when
// l's backward is done, a re-materialized layer is re-gathered one layer early, and the optimizer
// waits for the lane; each wait is the layer's exposed time.
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
  // Whether transfers run beside compute (the schedule's timeline) or take the step's own time
  // (workers run blocking: every transfer charged in full). The cluster's
  // (ClusterSpec::transfers_overlap_compute) unless set.
  void set_overlap(bool overlap) { overlap_ = overlap; }
  bool overlap() const { return overlap_; }

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
  // What hides one layer's replica communication in the workers' schedule (docs/cost-model.md
  // "Schedule"): the lane runs spAG during the compute of the forward cycle before the layer's
  // experts, and a re-gather and spRS during the compute of backward cycles; the All-to-Alls use
  // the same links and hide nothing. In steady state (an interior layer) the re-gather and spRS
  // share one backward cycle; at the edges they do not: layer 0's spAG has only its own attention,
  // its spRS only its attention backward before the optimizer waits, and the top layer's
  // re-gather starts as backward does.
  struct HidingWindows {
    double forward = 0;   // spAG
    double regather = 0;  // a re-gather of a re-materialized layer
    double reduce = 0;    // spRS (or the replica AllReduce)
    bool shared = true;   // the re-gather and spRS share one window (`reduce`)
  };
  HidingWindows Windows(LayerId l, double compute_seconds) const;
  // The layer's exposed replica communication under those windows:
  //   ephemeral:  max(0, spAG - forward) + backward part (shared: max(0, spRS [+ re-gather] -
  //               reduce); else max(0, re-gather - regather) + max(0, spRS - reduce))
  //   shadow:     spAG + max(0, spRS - reduce)   (broadcast after the gate: nothing hides it)
  //   persistent: max(0, spRS - reduce)           (spRS is the replica AllReduce)
  static double ExposedSeconds(ReplicaSemantics semantics, RematMode remat, double spag_seconds,
                               double sprs_seconds, const HidingWindows& windows);

  // Time of the sparse collective of one layer: the relay tree's two phases, parameter bytes.
  double SparseCollectiveSeconds(LayerId l, const LayerPlan& layer, int64_t* bytes) const;
  // Exposed time of parameter + optimizer migrations.
  double MigrationSeconds(const std::vector<Migration>& migrations) const;
  // Re-charges each layer's exposed communication for the plan's schedule (the timeline above,
  // or everything in full without overlap), and its total; `plan.layers` and `layers` agree.
  void ChargeSchedule(const Plan& plan, std::vector<LayerPrediction>* layers) const;

 private:
  const Cluster& cluster_;
  const ModelSpec& model_;
  double attention_s_;
  bool overlap_ = true;
};

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_COST_MODEL_H_
