// Expert load: per layer, the [source device x expert] matrix of routed tokens (after top-k), and
// the sliding-window estimator the planner predicts the next iterations from (paper: w = 5).
//
// Value types; not thread-safe for concurrent mutation.
#ifndef HECATE_PLACEMENT_LOAD_H_
#define HECATE_PLACEMENT_LOAD_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
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
  // Counts left unwritten (not zeroed), for a buffer whose every row is written before it is read:
  // the controller's per-iteration accumulation, where zeroing a fresh one (8 bytes x ranks x
  // experts, 121 MB at 1,024 x 58 x 256) faulted every page in at once under its lock. The pages
  // are then touched row by row as the rows are written.
  struct Unset {};
  LoadMatrix(int num_devices, int num_experts, Unset)
      : devices_(num_devices), experts_(num_experts) {
    tokens_.resize(static_cast<size_t>(num_devices) * num_experts);  // default-initialized
  }

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
  // std::allocator, except that a value-less construct default-initializes (so resize() leaves
  // integers unwritten).
  template <typename T>
  struct DefaultInit : std::allocator<T> {
    template <typename U>
    struct rebind {
      using other = DefaultInit<U>;
    };
    DefaultInit() = default;
    template <typename U>
    DefaultInit(const DefaultInit<U>&) noexcept {}
    template <typename U>
    void construct(U* p) noexcept {
      ::new (static_cast<void*>(p)) U;
    }
    template <typename U, typename... Args>
    void construct(U* p, Args&&... args) {
      ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
  };
  std::vector<int64_t, DefaultInit<int64_t>> tokens_;
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

// Per layer, the global token count of each expert in one iteration (LoadMatrix::ExpertTotals of
// every layer).
using LayerTotals = std::vector<std::vector<int64_t>>;
LayerTotals TotalsOf(const ModelLoad& load);

// An immutable view of a window: the iterations in it, shared. Taken in O(window) (under a
// caller's lock), turned into the estimate later (off it).
struct WindowSnapshot {
  std::vector<std::shared_ptr<const ModelLoad>> history;   // oldest first; empty when empty
  std::vector<std::shared_ptr<const LayerTotals>> totals;  // of each iteration in `history`
  // Per layer, the rounded mean of the newest Horizon(l) iterations; empty for an empty window.
  // O(window x size of one ModelLoad).
  ModelLoad Estimate() const;
  // How many of the newest iterations layer l's estimate averages: with at least 3 iterations,
  // each k in 1..n-2 is backtested on the last two iterations (the mean of the k before each,
  // against its expert totals, L1); the best k wins, ties to the longer, and the longest tested
  // (n - 2) stands for the whole window. A stationary load keeps the whole window (the paper's
  // w-iteration mean); a load whose hot set moves follows its newest iterations. O(window^2 x
  // experts), on the cached totals (without them, e.g. a hand-built snapshot: the whole window).
  int Horizon(LayerId l) const;
};

// Sliding window of the last `window` iterations' matrices (and their expert totals). Push is O(1)
// given the totals (it keeps references, no sums); the estimate is computed from a snapshot, off
// any caller's lock, and rounds to whole tokens.
class LoadWindow {
 public:
  explicit LoadWindow(int window) : window_(window < 1 ? 1 : window) {}

  // Adds one iteration's loads (oldest dropped beyond the window). All pushes must share a shape;
  // INVALID_ARGUMENT (and no change) otherwise.
  absl::Status Push(const ModelLoad& load);
  // The same without copying: the window keeps a reference to `load`. `evicted`, when given,
  // receives the iteration that left the window (null if none), for the caller to recycle.
  // `totals`, when given, must be TotalsOf(*load) (a caller that accumulates them as the rows
  // arrive saves the pass over the matrices); computed here otherwise.
  absl::Status Push(std::shared_ptr<const ModelLoad> load,
                    std::shared_ptr<const ModelLoad>* evicted = nullptr,
                    std::shared_ptr<const LayerTotals> totals = nullptr);
  // The load estimate (WindowSnapshot::Estimate); empty when nothing was pushed.
  ModelLoad Estimate() const { return Snapshot().Estimate(); }
  // O(window): shares the iterations, copies nothing.
  WindowSnapshot Snapshot() const;
  // Window mean of global tokens per expert for one layer (fractional).
  std::vector<double> ExpertMeans(LayerId layer) const;
  int size() const { return static_cast<int>(history_.size()); }
  int window() const { return window_; }
  void Clear();

 private:
  int window_;
  std::deque<std::shared_ptr<const ModelLoad>> history_;
  std::deque<std::shared_ptr<const LayerTotals>> totals_;
};

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_LOAD_H_
