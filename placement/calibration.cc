#include "placement/calibration.h"

#include <algorithm>
#include <utility>

#include "placement/greedy.h"
#include "placement/local_search.h"

namespace hecate::placement {

namespace {

// The busiest devices over the target a swap round starts from (busiest first).
constexpr size_t kSwapSources = 4;
// Experts of each such device a swap moves (the heaviest per holder).
constexpr size_t kSwapExperts = 2;

// LateCopies into `late` (reusing its buffers); returns whether there is any.
bool FillLateCopies(const LayerPlan& planned, const LayerPlan& calibrated, LayerPlan* late) {
  bool any = false;
  late->owner = calibrated.owner;
  late->replicas.resize(calibrated.num_experts());
  for (ExpertId e = 0; e < calibrated.num_experts(); ++e) {
    late->replicas[e].assign(1, calibrated.owner[e]);
    for (DeviceId d : calibrated.replicas[e]) {
      if (!planned.Holds(e, d)) {
        late->AddHolder(e, d);
        any = true;
      }
    }
  }
  return any;
}

}  // namespace

LayerPlan LateCopies(const LayerPlan& planned, const LayerPlan& calibrated) {
  LayerPlan late;
  FillLateCopies(planned, calibrated, &late);
  return late;
}

std::vector<int> CalibrationRule::FreeCopies(const LayerPlan& layer, int num_devices) const {
  if (copy_cap < 0) return std::vector<int>(num_devices, free_copies);
  std::vector<int> free = layer.ExtraCopies(num_devices);
  for (int& f : free) f = std::max(0, copy_cap - f);
  return free;
}

CalibrationResult CalibrateLayer(const CostModel& cost, LayerId l, const LayerPlan& current,
                                 const LoadMatrix& actual, DispatchRule rule,
                                 const CalibrationRule& calibration) {
  return Calibrate(cost, l, current, actual,
                   calibration.FreeCopies(current, cost.cluster().num_devices()), rule,
                   calibration.options);
}

CalibrationResult Calibrate(const CostModel& cost, LayerId l, const LayerPlan& current,
                            const LoadMatrix& actual, const std::vector<int>& remaining_copies,
                            DispatchRule rule, const CalibrationOptions& options) {
  const Cluster& cluster = cost.cluster();
  const int devices = cluster.num_devices();
  const int experts = current.num_experts();
  CalibrationResult result;
  result.layer = current;
  // The plan's copies plus the free slots calibration may fill, per device.
  std::vector<int> max_copies = current.ExtraCopies(devices);
  bool free_memory = false;
  for (DeviceId d = 0; d < devices && d < static_cast<int>(remaining_copies.size()); ++d) {
    max_copies[d] += remaining_copies[d];
    free_memory |= remaining_copies[d] > 0;
  }
  const int64_t cells = static_cast<int64_t>(devices) * std::max(experts, 1);
  const bool swaps = options.swap_cell_budget / cells >= kMinCalibrationEvaluations;
  if (!free_memory && !swaps) return result;  // nothing it could change: no evaluation spent
  const LoadAggregate aggregate = LoadAggregate::Of(actual, cluster);
  LayerPlan candidate = current;
  LayerSearch search(cost, l, actual, aggregate, rule, max_copies, &candidate);
  // The copies the candidate holds that `current` does not travel after the gate, on the
  // critical path: nothing hides their gather.
  LayerPlan extra;
  auto late_seconds = [&](const LayerPlan& layer, int64_t* bytes = nullptr) {
    return FillLateCopies(current, layer, &extra) ? cost.SparseCollectiveSeconds(l, extra, bytes)
                                                  : 0.0;
  };
  const LayerPrediction before = search.Evaluate();
  result.before_seconds = before.total_seconds;
  result.after_seconds = before.total_seconds;

  // The paper's stage: the greedy into free memory.
  GreedyBudget budget;
  budget.max_copies = max_copies;
  // The extra gather runs after the gate, on the critical path: nothing hides it.
  budget.attention_forward_seconds = 0;
  budget.hide_behind_compute = false;
  int added = 0;
  if (free_memory) {
    candidate = MaterializeGreedy(cost, l, current, actual, budget, &added, &aggregate);
    search.Recount();
  }
  LayerPrediction now = added > 0 ? search.Evaluate() : before;
  double now_seconds = now.total_seconds + late_seconds(candidate);
  if (now_seconds >= before.total_seconds) {
    candidate = current;
    search.Recount();
    now = before;
    now_seconds = before.total_seconds;
  }

  // Swaps, first improvement: the first move (in the order below) that takes tokens off the
  // devices over the target without making the layer, its late gather included, slower than it
  // was before calibration. For the busiest devices over the target, their heaviest experts per
  // holder go to the least loaded devices of their node, then elsewhere (`candidates` each): into
  // a free slot, or in place of the receiver's least useful copy (fewest tokens per holder,
  // lighter than the arriving expert; never an owner's).
  if (swaps) {
    std::vector<DeviceId> sources, near, far;
    std::vector<std::pair<double, ExpertId>> heavy;
    double excess_now = 0;
    auto generate = [&](const LayerPrediction& now, LayerSearch::TryMove try_move) {
      excess_now = ExcessOver(now, options.target);
      if (excess_now <= 0) return;
      const double bound = options.target * now.mean_tokens;
      auto busier = [&](DeviceId a, DeviceId b) {
        return now.device_tokens[a] != now.device_tokens[b]
                   ? now.device_tokens[a] > now.device_tokens[b]
                   : a < b;
      };
      auto lighter = [&](DeviceId a, DeviceId b) {
        return now.device_tokens[a] != now.device_tokens[b]
                   ? now.device_tokens[a] < now.device_tokens[b]
                   : a < b;
      };
      sources.clear();
      for (DeviceId d = 0; d < devices; ++d) {
        if (now.device_tokens[d] > bound) sources.push_back(d);
      }
      std::sort(sources.begin(), sources.end(), busier);
      if (sources.size() > kSwapSources) sources.resize(kSwapSources);
      for (const DeviceId src : sources) {
        search.HeaviestPerHolder(src, kSwapExperts, &heavy);
        for (const auto& [per_holder, e] : heavy) {
          near.clear();
          far.clear();
          for (DeviceId d = 0; d < devices; ++d) {
            if (search.Holds(e, d) || now.device_tokens[d] >= bound) continue;
            (cluster.same_node(d, src) ? near : far).push_back(d);
          }
          for (std::vector<DeviceId>* group : {&near, &far}) {
            const size_t k = std::min<size_t>(group->size(), options.candidates);
            std::partial_sort(group->begin(), group->begin() + k, group->end(), lighter);
            for (size_t i = 0; i < k; ++i) {
              const DeviceId d = (*group)[i];
              ExpertId out = -1;
              if (!search.HasFreeSlot(d)) {
                const std::vector<ExpertId> least = search.LeastUseful(d, e, 1);
                if (least.empty() ||
                    !(search.TokensPerHolder(least[0]) < search.TokensPerHolder(e)))
                  continue;
                out = least[0];
              }
              if (!try_move(Move{e, d, out})) return;
            }
          }
        }
      }
    };
    // The late gather is only costed for a move that could be kept without it.
    double kept_seconds = now_seconds;
    auto judge = [&](const LayerPrediction&, const LayerPrediction& p) -> std::optional<MoveScore> {
      const double gain = excess_now - ExcessOver(p, options.target);
      if (!(gain > 1e-9 && p.total_seconds <= before.total_seconds)) return std::nullopt;
      const double seconds = p.total_seconds + late_seconds(candidate);
      if (!(seconds <= before.total_seconds)) return std::nullopt;
      kept_seconds = seconds;
      return MoveScore{0, 0};
    };
    SearchOptions swap_options;
    swap_options.max_evaluations = search.evaluations() + options.swap_cell_budget / cells;
    swap_options.first_improvement = true;
    swap_options.evaluate_each_round = false;
    search.Search(swap_options, generate, judge, &now);
    now_seconds = kept_seconds;
  }

  for (ExpertId e = 0; e < experts; ++e) {
    for (DeviceId d : candidate.replicas[e]) result.copies_added += current.Holds(e, d) ? 0 : 1;
    for (DeviceId d : current.replicas[e]) result.copies_dropped += candidate.Holds(e, d) ? 0 : 1;
  }
  result.evaluations = search.evaluations();
  if (result.copies_added == 0 && result.copies_dropped == 0) return result;
  result.extra_spag_seconds = late_seconds(candidate, &result.extra_spag_bytes);
  result.after_seconds = now_seconds;
  if (now_seconds < before.total_seconds) {
    result.accepted = true;
    result.layer = std::move(candidate);
  } else {
    result.copies_added = 0;
    result.copies_dropped = 0;
    result.extra_spag_seconds = 0;
    result.extra_spag_bytes = 0;
  }
  return result;
}

}  // namespace hecate::placement
