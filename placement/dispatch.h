// Topology-aware token dispatch (paper §4.4, DESIGN.md §5 "Dispatch").
//
// Every expert with one holder gets all its tokens there. Otherwise, for each (source device s,
// expert e) with k tokens:
//   kReplicaEven (EPLB, FlexMoE): s splits its k tokens evenly over all holders of e, whatever
//                           their node (the first k mod h holders from (s + e) mod h on get one
//                           more): vLLM's EPLB picks a token's physical replica round-robin, and
//                           both planners assume each replica serves load / replicas.
//   kEven (the paper):      s holds e -> all k stay on s; else the node's holders of e share the
//                           node's pooled tokens evenly; the nodes without a holder pool theirs
//                           and share it evenly over all holders.
//   kLoadAware (default):   locality by node: if s's node holds e, all of the node's tokens for
//                           e (those of holders included) are pooled and water-filled over the
//                           node's holders, least loaded first; the nodes without a holder pool
//                           their tokens together, water-filled over all holders (one pool per
//                           expert, as the greedy estimates it). Pools are processed largest first,
//                           after every single-holder expert's tokens are placed, then re-levelled
//                           against each other (up to 3 sweeps). Each holder keeps its own tokens
//                           up to its share before anything moves. Then the spill: while the
//                           busiest device holds a node pool's tokens received from other sources,
//                           it passes some to a holder of that expert on another node, as many as
//                           levels the two and as every link they cross (the node NICs both ways,
//                           and the devices' NIC caps) carries without exceeding the slowest link
//                           of the All-to-All before the spill: balance the All-to-All does not pay
//                           for.
// Each holder's share is then apportioned back to the pooled sources in ascending order
// (north-west corner), so every token is dispatched exactly once and both the per-source totals and
// the per-holder totals are exact integers.
//
// Every rank computes the same dispatch from the same global count matrix: a pure function with a
// fixed processing order (pools by descending tokens, then expert id, then node). A Dispatcher
// holds scratch buffers only; use one per thread.
#ifndef HECATE_PLACEMENT_DISPATCH_H_
#define HECATE_PLACEMENT_DISPATCH_H_

#include <cstdint>
#include <vector>

#include "placement/cluster.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

// Aggregate effect of a layer's dispatch, in tokens, per device.
struct DispatchSummary {
  std::vector<int64_t> device_tokens;  // tokens each device computes
  std::vector<int64_t> out_intra;      // tokens a device sends to its own node
  std::vector<int64_t> out_inter;      // tokens a device sends to other nodes
  std::vector<int64_t> in_intra;       // tokens a device receives from its own node
  std::vector<int64_t> in_inter;       // tokens a device receives from other nodes
};

struct Flow {
  DeviceId src = 0;
  DeviceId dst = 0;
  int64_t tokens = 0;
  friend bool operator==(const Flow& a, const Flow& b) {
    return a.src == b.src && a.dst == b.dst && a.tokens == b.tokens;
  }
};

// The full dispatch of one layer: per expert, the (src, dst, tokens) flows with tokens > 0,
// sorted by (src, dst). Local tokens appear as flows with src == dst.
struct LayerDispatch {
  std::vector<std::vector<Flow>> by_expert;
  std::vector<int64_t> device_tokens;
};

class Dispatcher {
 public:
  explicit Dispatcher(const Cluster& cluster);

  // Fast path for the cost model: totals only, from node-level aggregates (`aggregate` when
  // given, computed from `load` otherwise) plus the few per-source counts of experts held on the
  // source's node. Precondition: plan, load and aggregate shapes match.
  void Summarize(const LayerPlan& layer, const LoadMatrix& load, DispatchRule rule,
                 DispatchSummary* out, const LoadAggregate* aggregate = nullptr);
  // Full per-flow dispatch (workers). Consistent with Summarize on the same input.
  LayerDispatch Compute(const LayerPlan& layer, const LoadMatrix& load, DispatchRule rule);
  // The load-aware rule's spill (on by default); off only for tests and ablations.
  void set_spill(bool on) { spill_on_ = on; }

 private:
  // The pool of the nodes that hold no copy of the expert (they water-fill over all holders).
  static constexpr NodeId kRemote = -1;
  struct Pool {
    ExpertId expert;
    NodeId node;  // or kRemote
    int64_t tokens;
  };
  // Turns pool_tokens_ (per node) of multi-holder expert e into pools.
  void AddPools(const LayerPlan& layer, ExpertId e);
  void SortPools();
  // Candidates and shares of one pool into candidates_ / shares_; adds the shares to load_.
  void Split(const LayerPlan& layer, const Pool& pool, bool even);
  // Splits every pool (in pools_ order) and keeps the results in pool_cands_ / pool_shares_;
  // the load-aware rule then re-levels each pool against all the others (kRelevelSweeps).
  void SplitAll(const LayerPlan& layer, bool even);
  // Pool i's stored split back into candidates_ / shares_: its own node's holders, then the
  // holders on other nodes its spill goes to (ascending).
  void LoadSplit(size_t i);
  // Load-aware only, after SplitAll: moves tokens off the busiest device to holders of the same
  // expert on other nodes wherever every link they cross has room under the All-to-All's
  // slowest link (`pre`, the summary without spill, is corrected in place). See the class
  // comment.
  void Spill(const LayerPlan& layer, const LoadMatrix& load, DispatchSummary* pre);
  // Runs the algorithm; calls sink.Local(s, e, k) for tokens that stay on s, sink.Send(s, e, dst,
  // k) for a single holder's tokens, and sink.Pool(node, e, sources, candidates, shares,
  // include_holders) for each pooled split.
  template <typename Sink>
  void Run(const LayerPlan& layer, const LoadMatrix& load, DispatchRule rule, Sink& sink);
  // Pass 2 of Run: every pool's split (LoadSplit) to sink.Pool with the pool's sources.
  // kReplicaEven: calls emit(s, e, h, k) for every piece, own tokens included (h == s).
  template <typename Emit>
  void RunReplicaEven(const LayerPlan& layer, const LoadMatrix& load, Emit emit);
  template <typename Sink>
  void EmitPools(const LayerPlan& layer, bool include_holders, Sink& sink);

  const Cluster& cluster_;
  bool spill_on_ = true;
  std::vector<int64_t> load_;  // running device loads
  std::vector<int> stamp_;     // stamp_[d] == e + 1 <=> d holds the current expert
  std::vector<Pool> pools_;
  std::vector<int64_t> pool_tokens_;  // per node, scratch
  std::vector<DeviceId> candidates_;
  std::vector<int64_t> shares_;
  // SplitAll's result: pool i's candidates and shares are
  // pool_cands_ / pool_shares_ [pool_begin_[i], pool_begin_[i + 1]).
  std::vector<size_t> pool_begin_;
  std::vector<DeviceId> pool_cands_;
  std::vector<int64_t> pool_shares_;
  struct SpillEntry {
    int pool;
    DeviceId to;
    int64_t tokens;
  };
  std::vector<SpillEntry> spills_;   // sorted by (pool, to) once Spill returns
  std::vector<size_t> spill_begin_;  // pool i's spills: [spill_begin_[i], spill_begin_[i + 1])
  // Spill scratch: the node-pool entries (indices into pool_cands_) of each device, grouped by
  // device ([holder_begin_[d], holder_begin_[d + 1]) of holder_k_); the pool of each entry.
  std::vector<int> holder_begin_, holder_k_, fill_, pool_at_;
  DispatchSummary scratch_;  // Compute's summary (the load-aware rule runs Summarize)
  std::vector<int> order_;
  std::vector<DeviceId> sources_;
  std::vector<char> node_flag_;
  std::vector<int64_t> kept_;                     // Summarize: tokens each source keeps
  std::vector<ExpertId> node_mark_;               // Summarize: last expert marked per node
  std::vector<std::vector<ExpertId>> node_held_;  // Summarize: experts with a holder per node
};

// Splits `tokens` over `candidates` (ascending device ids): evenly, rotating the remainder by
// `rotation`, or water-filling `device_load` (lowest load first, ties by id). Writes one share per
// candidate to `shares`. Exposed for tests.
void SplitEven(int64_t tokens, int num_candidates, int rotation, std::vector<int64_t>* shares);
void SplitWaterFill(int64_t tokens, const std::vector<DeviceId>& candidates,
                    const std::vector<int64_t>& device_load, std::vector<int>* order_scratch,
                    std::vector<int64_t>* shares);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_DISPATCH_H_
