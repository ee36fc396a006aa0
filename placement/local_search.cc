#include "placement/local_search.h"

#include <algorithm>

namespace hecate::placement {

LayerSearch::LayerSearch(const CostModel& cost, LayerId l, const LoadMatrix& load,
                         const LoadAggregate& aggregate, DispatchRule rule,
                         std::vector<int> max_copies, LayerPlan* layer)
    : cost_(cost),
      l_(l),
      load_(load),
      aggregate_(aggregate),
      rule_(rule),
      max_copies_(std::move(max_copies)),
      layer_(layer),
      dispatcher_(cost.cluster()) {
  Recount();
}

void LayerSearch::Recount() { copies_ = layer_->ExtraCopies(cost_.cluster().num_devices()); }

LayerPrediction LayerSearch::Evaluate() {
  ++evaluations_;
  return cost_.EvaluateLayer(l_, *layer_, load_, rule_, ReplicaSemantics::kEphemeral, &dispatcher_,
                             &aggregate_);
}

namespace {

// Applies the holder changes of `m` (copy counts are the caller's).
void Change(const Move& m, LayerPlan* layer) {
  if (m.from >= 0) {
    layer->DropHolder(m.expert, m.from);
    layer->DropHolder(m.swap_out, m.to);
    layer->AddHolder(m.swap_out, m.from);
  } else if (m.swap_out >= 0) {
    layer->DropHolder(m.swap_out, m.to);
  }
  layer->AddHolder(m.expert, m.to);
}

}  // namespace

void LayerSearch::Apply(const Move& m) {
  Change(m, layer_);
  if (m.swap_out < 0) ++copies_[m.to];
}

void LayerSearch::Undo(const Move& m) {
  layer_->DropHolder(m.expert, m.to);
  if (m.from >= 0) {
    layer_->DropHolder(m.swap_out, m.from);
    layer_->AddHolder(m.expert, m.from);
    layer_->AddHolder(m.swap_out, m.to);
  } else if (m.swap_out >= 0) {
    layer_->AddHolder(m.swap_out, m.to);
  }
}

void LayerSearch::HeaviestPerHolder(DeviceId d, size_t k,
                                    std::vector<std::pair<double, ExpertId>>* out) const {
  out->clear();
  for (ExpertId e = 0; e < layer_->num_experts(); ++e) {
    if (layer_->Holds(e, d)) out->push_back({-TokensPerHolder(e), e});
  }
  const size_t keep = std::min(out->size(), k);
  std::partial_sort(out->begin(), out->begin() + keep, out->end());
  out->resize(keep);
}

std::vector<ExpertId> LayerSearch::LeastUseful(DeviceId d, ExpertId keep, size_t k) const {
  std::vector<std::pair<double, ExpertId>> useful;
  for (ExpertId x = 0; x < layer_->num_experts(); ++x) {
    if (x == keep || layer_->owner[x] == d || !layer_->Holds(x, d)) continue;
    useful.push_back({TokensPerHolder(x), x});
  }
  const size_t n = std::min(useful.size(), k);
  std::partial_sort(useful.begin(), useful.begin() + n, useful.end());
  std::vector<ExpertId> out;
  for (size_t i = 0; i < n; ++i) out.push_back(useful[i].second);
  return out;
}

int LayerSearch::Search(const SearchOptions& options, Generator generate, Judge judge,
                        LayerPrediction* now_io) {
  LayerPrediction now;
  bool have_now = false;
  if (!options.evaluate_each_round && now_io != nullptr) {
    now = *now_io;
    have_now = true;
  }
  int made = 0;
  for (; (options.max_moves <= 0 || made < options.max_moves) && !Spent(options); ++made) {
    if (options.evaluate_each_round || !have_now) {
      now = Evaluate();
      have_now = true;
    }
    bool found = false;
    Move best;
    MoveScore best_score;
    LayerPrediction best_prediction;
    generate(now, [&](const Move& m) {
      if (Spent(options)) return false;
      Change(m, layer_);
      LayerPrediction tried = Evaluate();
      const std::optional<MoveScore> score = judge(now, tried);
      Undo(m);
      if (!score.has_value()) return true;
      if (!found || *score > best_score) {
        found = true;
        best = m;
        best_score = *score;
        best_prediction = std::move(tried);
      }
      return !options.first_improvement;
    });
    if (!found) break;
    Apply(best);
    now = std::move(best_prediction);
  }
  if (now_io != nullptr && have_now) *now_io = std::move(now);
  return made;
}

double ExcessOver(const LayerPrediction& p, double target) {
  if (p.mean_tokens <= 0) return 0.0;
  const double bound = target * p.mean_tokens;
  double sum = 0;
  for (double t : p.device_tokens) sum += std::max(0.0, t - bound);
  return sum / (p.mean_tokens * static_cast<double>(p.device_tokens.size()));
}

}  // namespace hecate::placement
