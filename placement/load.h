// Expert load: per layer, the [source device x expert] matrix of routed tokens (after top-k), and
// the sliding-window estimator the planner predicts the next iterations from (paper: w = 5).
//
// Value types; not thread-safe for concurrent mutation.
#ifndef HECATE_PLACEMENT_LOAD_H_
#define HECATE_PLACEMENT_LOAD_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "placement/cluster.h"

namespace hecate::placement {

// Tokens routed from each source device to each expert of one layer, row-major [device][expert].
class LoadMatrix {
 public:
  LoadMatrix() = default;
  LoadMatrix(int num_devices, int num_experts)
      : devices_(num_devices),
        experts_(num_experts),
        tokens_(static_cast<size_t>(num_devices) * num_experts, 0) {}

  int num_devices() const { return devices_; }
  int num_experts() const { return experts_; }
  int64_t at(DeviceId d, ExpertId e) const {
    return tokens_[static_cast<size_t>(d) * experts_ + e];
  }
  int64_t& at(DeviceId d, ExpertId e) { return tokens_[static_cast<size_t>(d) * experts_ + e]; }
  const int64_t* row(DeviceId d) const {
    return tokens_.data() + static_cast<size_t>(d) * experts_;
  }
  int64_t* row(DeviceId d) { return tokens_.data() + static_cast<size_t>(d) * experts_; }

  // Global tokens per expert (column sums).
  std::vector<int64_t> ExpertTotals() const;
  int64_t Total() const;

  bool operator==(const LoadMatrix& o) const {
    return devices_ == o.devices_ && experts_ == o.experts_ && tokens_ == o.tokens_;
  }

 private:
  int devices_ = 0;
  int experts_ = 0;
  std::vector<int64_t> tokens_;
};

// One matrix per MoE layer.
using ModelLoad = std::vector<LoadMatrix>;

// Node-level totals of one layer's matrix, from one row-wise pass: what the greedy and the
// dispatch summary need instead of the whole matrix (at DeepSeek-V3 scale, 32 x 256 numbers per
// layer instead of 256 x 256).
struct LoadAggregate {
  int num_nodes = 0;
  int num_experts = 0;
  std::vector<int64_t> node_mass;     // [node * num_experts + expert]: tokens of the node's sources
  std::vector<int64_t> expert_total;  // per expert, all sources
  std::vector<int64_t> source_total;  // per source device, all experts

  int64_t mass(NodeId n, ExpertId e) const {
    return node_mass[static_cast<size_t>(n) * num_experts + e];
  }
  // Precondition: the matrix has the cluster's device count.
  static LoadAggregate Of(const LoadMatrix& load, const Cluster& cluster);
};

// A matrix of `num_devices` x experts where every device routes its tokens with the same global
// shares (uniform sources); used when only global per-expert counts are known.
LoadMatrix SpreadOverSources(const std::vector<int64_t>& expert_totals, int num_devices);

// Checks a ModelLoad's shape against the cluster and model: INVALID_ARGUMENT on mismatch or a
// negative count.
absl::Status CheckShape(const ModelLoad& load, const Cluster& cluster, const ModelSpec& model);

// Sliding-window mean of the last `window` iterations' matrices, per layer. Push is O(size of
// one ModelLoad); Estimate rounds the mean to whole tokens.
// An immutable view of a window's sums: taken in O(1) (under a caller's lock), turned into the
// estimate later (off it).
struct WindowSnapshot {
  std::shared_ptr<const ModelLoad> sum;  // null when the window was empty
  int64_t count = 0;
  // Rounded mean per layer; empty for an empty window.
  ModelLoad Estimate() const;
};

class LoadWindow {
 public:
  explicit LoadWindow(int window) : window_(window < 1 ? 1 : window) {}

  // Adds one iteration's loads (oldest dropped beyond the window). All pushes must share a shape;
  // INVALID_ARGUMENT (and no change) otherwise.
  absl::Status Push(const ModelLoad& load);
  // The same without copying: the window keeps a reference to `load`. `evicted`, when given,
  // receives the iteration that left the window (null if none), for the caller to recycle.
  absl::Status Push(std::shared_ptr<const ModelLoad> load,
                    std::shared_ptr<const ModelLoad>* evicted = nullptr);
  // Rounded window mean per layer; empty when nothing was pushed.
  ModelLoad Estimate() const { return Snapshot().Estimate(); }
  // O(1); the next Push copies the sums if a snapshot still holds them.
  WindowSnapshot Snapshot() const;
  // Window mean of global tokens per expert for one layer (fractional).
  std::vector<double> ExpertMeans(LayerId layer) const;
  int size() const { return static_cast<int>(history_.size()); }
  int window() const { return window_; }
  void Clear();

 private:
  int window_;
  std::deque<std::shared_ptr<const ModelLoad>> history_;
  // Running per-layer sums over history_, same shape as one ModelLoad (shared with snapshots).
  std::shared_ptr<ModelLoad> sum_ = std::make_shared<ModelLoad>();
};

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_LOAD_H_
