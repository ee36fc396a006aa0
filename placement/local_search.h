// Local search over one layer's holders, judged by the cost model with the real dispatch: the one
// engine behind the exact repair and the balance pass (placement/refine.h) and calibration's swap
// stage (placement/calibration.h). Each of them configures it with SearchOptions, a generator of
// candidate moves and a judge; the engine owns the try / undo / accept loop, the layer's copy
// counts and the evaluation budget.
//
// A round: the generator is handed the layer's prediction and tries its candidates in order; each
// tried move is applied, the layer evaluated (CostModel::EvaluateLayer), the judge asked while the
// move is still applied, and the move undone. Best improvement keeps the highest-scoring
// acceptable move of the round (ties: the first tried); first improvement keeps the first
// acceptable one and ends the round. The kept move is applied; rounds continue until one keeps
// nothing, or the moves or evaluations are spent.
//
// Not thread-safe; one search per LayerSearch at a time. The layer it changes is the caller's.
#ifndef HECATE_PLACEMENT_LOCAL_SEARCH_H_
#define HECATE_PLACEMENT_LOCAL_SEARCH_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "placement/cost_model.h"
#include "placement/dispatch.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

// One change of a layer's holders: `to` gains a copy of `expert`, into a free slot
// (`swap_out` < 0) or in place of its copy of `swap_out`. An exchange (`from` >= 0): `expert`
// leaves `from` and `swap_out` moves from `to` to `from`, so both keep their copy counts.
struct Move {
  ExpertId expert = -1;
  DeviceId to = -1;
  ExpertId swap_out = -1;
  DeviceId from = -1;
};

struct SearchOptions {
  // Moves to make at most; <= 0: until a round keeps nothing.
  int max_moves = 0;
  // Layer evaluations to spend at most, counted since the LayerSearch was made (every Evaluate
  // and every tried move); 0: no cap. A candidate is not tried once it is spent.
  int64_t max_evaluations = 0;
  // Keep the first acceptable move of a round (in the generator's order) rather than the best.
  bool first_improvement = false;
  // Start each round from a fresh evaluation of the layer (it counts against max_evaluations), or
  // from the prediction of the move just kept (and, for the first round, the caller's).
  bool evaluate_each_round = true;
};

// A tried move's score, higher is better (compared lexicographically); nullopt: not acceptable.
using MoveScore = std::pair<double, double>;

class LayerSearch {
 public:
  // `layer` is changed in place and must outlive the search; `max_copies` caps the non-owner
  // copies per device (missing entries: 0). `aggregate` must be LoadAggregate::Of(load).
  LayerSearch(const CostModel& cost, LayerId l, const LoadMatrix& load,
              const LoadAggregate& aggregate, DispatchRule rule, std::vector<int> max_copies,
              LayerPlan* layer);

  const LayerPlan& layer() const { return *layer_; }
  const LoadAggregate& aggregate() const { return aggregate_; }
  const Cluster& cluster() const { return cost_.cluster(); }

  // The layer as it stands, with the real dispatch (counts one evaluation).
  LayerPrediction Evaluate();
  int64_t evaluations() const { return evaluations_; }
  // The layer changed outside the search (e.g. calibration's greedy): recounts its copies.
  void Recount();

  bool Holds(ExpertId e, DeviceId d) const { return layer_->Holds(e, d); }
  // Whether d holds fewer non-owner copies than it may.
  bool HasFreeSlot(DeviceId d) const { return copies_[d] < Slots(d); }
  int Slots(DeviceId d) const {
    return d < static_cast<int>(max_copies_.size()) ? max_copies_[d] : 0;
  }

  // Applies `m` for good.
  void Apply(const Move& m);

  // The `k` experts d holds with the most tokens per holder, as (-tokens per holder, expert),
  // heaviest first (ties: lower id).
  void HeaviestPerHolder(DeviceId d, size_t k, std::vector<std::pair<double, ExpertId>>* out) const;
  // d's (at most `k`) non-owner copies with the fewest tokens per holder other than `keep`,
  // fewest first (ties: lower id).
  std::vector<ExpertId> LeastUseful(DeviceId d, ExpertId keep, size_t k) const;
  // Tokens of expert e per holder.
  double TokensPerHolder(ExpertId e) const {
    return static_cast<double>(aggregate_.expert_total[e]) /
           static_cast<double>(layer_->replicas[e].size());
  }

  // Calls `try_move` with each candidate move in order; stops early when it returns false.
  using TryMove = absl::FunctionRef<bool(const Move&)>;
  using Generator = absl::FunctionRef<void(const LayerPrediction& now, TryMove try_move)>;
  // Judges a tried move while it is applied: `now` is the round's prediction, `tried` the
  // layer's with the move.
  using Judge = absl::FunctionRef<std::optional<MoveScore>(const LayerPrediction& now,
                                                           const LayerPrediction& tried)>;
  // Runs rounds as the header describes; returns the moves made. `now` (may be null) holds the
  // starting prediction when options.evaluate_each_round is false, and receives the prediction
  // of the layer as the search leaves it.
  int Search(const SearchOptions& options, Generator generate, Judge judge,
             LayerPrediction* now = nullptr);

 private:
  void Undo(const Move& m);
  bool Spent(const SearchOptions& options) const {
    return options.max_evaluations > 0 && evaluations_ >= options.max_evaluations;
  }

  const CostModel& cost_;
  const LayerId l_;
  const LoadMatrix& load_;
  const LoadAggregate& aggregate_;
  const DispatchRule rule_;
  const std::vector<int> max_copies_;
  LayerPlan* const layer_;
  Dispatcher dispatcher_;
  std::vector<int> copies_;  // non-owner copies per device
  int64_t evaluations_ = 0;
};

// Tokens above target x mean, summed over devices, as a fraction of all tokens.
double ExcessOver(const LayerPrediction& p, double target);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_LOCAL_SEARCH_H_
