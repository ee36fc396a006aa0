#include "placement/load.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace hecate::placement {

std::vector<int64_t> LoadMatrix::ExpertTotals() const {
  std::vector<int64_t> totals(experts_, 0);
  for (int d = 0; d < devices_; ++d) {
    const int64_t* r = row(d);
    for (int e = 0; e < experts_; ++e) totals[e] += r[e];
  }
  return totals;
}

LoadAggregate LoadAggregate::Of(const LoadMatrix& load, const Cluster& cluster) {
  LoadAggregate a;
  a.num_nodes = cluster.num_nodes();
  a.num_experts = load.num_experts();
  const int experts = a.num_experts;
  a.node_mass.assign(static_cast<size_t>(a.num_nodes) * experts, 0);
  a.expert_total.assign(experts, 0);
  a.source_total.assign(load.num_devices(), 0);
  // Streams the matrix once (memory-bound at scale: 30 MB at DeepSeek-V3 size); four independent
  // sums and no aliasing let the compiler keep the loop tight.
  for (DeviceId s = 0; s < load.num_devices(); ++s) {
    const int64_t* __restrict r = load.row(s);
    int64_t* __restrict mass =
        a.node_mass.data() + static_cast<size_t>(cluster.node_of(s)) * experts;
    int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int e = 0;
    for (; e + 4 <= experts; e += 4) {
      const int64_t t0 = r[e], t1 = r[e + 1], t2 = r[e + 2], t3 = r[e + 3];
      mass[e] += t0;
      mass[e + 1] += t1;
      mass[e + 2] += t2;
      mass[e + 3] += t3;
      s0 += t0;
      s1 += t1;
      s2 += t2;
      s3 += t3;
    }
    for (; e < experts; ++e) {
      mass[e] += r[e];
      s0 += r[e];
    }
    a.source_total[s] = s0 + s1 + s2 + s3;
  }
  for (NodeId n = 0; n < a.num_nodes; ++n) {
    const int64_t* mass = a.node_mass.data() + static_cast<size_t>(n) * experts;
    for (int e = 0; e < experts; ++e) a.expert_total[e] += mass[e];
  }
  return a;
}

int64_t LoadMatrix::Total() const {
  int64_t total = 0;
  for (int64_t t : tokens_) total += t;
  return total;
}

LoadMatrix SpreadOverSources(const std::vector<int64_t>& expert_totals, int num_devices) {
  const int experts = static_cast<int>(expert_totals.size());
  LoadMatrix m(num_devices, experts);
  for (int e = 0; e < experts; ++e) {
    const int64_t base = expert_totals[e] / num_devices;
    const int64_t rest = expert_totals[e] % num_devices;
    for (int d = 0; d < num_devices; ++d) {
      // Rotate the remainder by expert so no device always gets the extra tokens.
      const int slot = (d - e % num_devices + num_devices) % num_devices;
      m.at(d, e) = base + (slot < rest ? 1 : 0);
    }
  }
  return m;
}

absl::Status CheckShape(const ModelLoad& load, const Cluster& cluster, const ModelSpec& model) {
  if (static_cast<int>(load.size()) != model.num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("load has ", load.size(), " layers, model has ", model.num_layers()));
  }
  for (int l = 0; l < model.num_layers(); ++l) {
    const LoadMatrix& m = load[l];
    if (m.num_devices() != cluster.num_devices() ||
        m.num_experts() != model.layers[l].num_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, ": load is ", m.num_devices(), "x", m.num_experts(),
                       ", expected ", cluster.num_devices(), "x", model.layers[l].num_experts));
    }
    for (int d = 0; d < m.num_devices(); ++d) {
      for (int e = 0; e < m.num_experts(); ++e) {
        if (m.at(d, e) < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("layer ", l, ": negative count at device ", d, " expert ", e));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status LoadWindow::Push(const ModelLoad& load) {
  return Push(std::make_shared<const ModelLoad>(load));
}

LayerTotals TotalsOf(const ModelLoad& load) {
  LayerTotals out;
  out.reserve(load.size());
  for (const LoadMatrix& m : load) out.push_back(m.ExpertTotals());
  return out;
}

absl::Status LoadWindow::Push(std::shared_ptr<const ModelLoad> shared,
                              std::shared_ptr<const ModelLoad>* evicted,
                              std::shared_ptr<const LayerTotals> totals) {
  if (evicted != nullptr) evicted->reset();
  const ModelLoad& load = *shared;
  if (!history_.empty()) {
    const ModelLoad& last = *history_.back();
    if (load.size() != last.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("load has ", load.size(), " layers, window has ", last.size()));
    }
    for (size_t l = 0; l < load.size(); ++l) {
      if (load[l].num_devices() != last[l].num_devices() ||
          load[l].num_experts() != last[l].num_experts()) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": shape changed"));
      }
    }
  }
  if (totals == nullptr) {
    totals = std::make_shared<const LayerTotals>(TotalsOf(load));
  } else {
    bool fits = totals->size() == load.size();
    for (size_t l = 0; fits && l < load.size(); ++l) {
      fits = static_cast<int>((*totals)[l].size()) == load[l].num_experts();
    }
    if (!fits) return absl::InvalidArgumentError("expert totals do not match the load's shape");
  }
  history_.push_back(std::move(shared));
  totals_.push_back(std::move(totals));
  if (static_cast<int>(history_.size()) > window_) {
    if (evicted != nullptr) *evicted = std::move(history_.front());
    history_.pop_front();
    totals_.pop_front();
  }
  return absl::OkStatus();
}

WindowSnapshot LoadWindow::Snapshot() const {
  return WindowSnapshot{{history_.begin(), history_.end()}, {totals_.begin(), totals_.end()}};
}

ModelLoad WindowSnapshot::Estimate() const {
  ModelLoad out;
  if (history.empty()) return out;
  const int n = static_cast<int>(history.size());
  const ModelLoad& first = *history.front();
  for (size_t l = 0; l < first.size(); ++l) {
    const int from = n - Horizon(static_cast<LayerId>(l));
    const int64_t k = n - from;
    LoadMatrix m(first[l].num_devices(), first[l].num_experts());
    for (int d = 0; d < m.num_devices(); ++d) {
      int64_t* __restrict dst = m.row(d);
      for (int i = from; i < n; ++i) {
        const int64_t* __restrict src = (*history[i])[l].row(d);
        for (int e = 0; e < m.num_experts(); ++e) dst[e] += src[e];
      }
      for (int e = 0; e < m.num_experts(); ++e) dst[e] = (dst[e] + k / 2) / k;
    }
    out.push_back(std::move(m));
  }
  return out;
}

int WindowSnapshot::Horizon(LayerId l) const {
  const int n = static_cast<int>(history.size());
  if (n < 3 || totals.size() != history.size()) return n;
  auto at = [&](int i) -> const std::vector<int64_t>& { return (*totals[i])[l]; };
  const size_t experts = at(0).size();
  int best_k = n - 2;
  double best_err = -1;
  for (int k = n - 2; k >= 1; --k) {
    double err = 0;
    for (int t = n - 2; t < n; ++t) {
      for (size_t e = 0; e < experts; ++e) {
        int64_t sum = 0;
        for (int i = t - k; i < t; ++i) sum += at(i)[e];
        err += std::abs(static_cast<double>(sum) / k - static_cast<double>(at(t)[e]));
      }
    }
    // Ties go to the longer horizon (visited first): only a strictly better fit shortens it.
    if (best_err < 0 || err < best_err) {
      best_err = err;
      best_k = k;
    }
  }
  return best_k == n - 2 ? n : best_k;
}

std::vector<double> LoadWindow::ExpertMeans(LayerId layer) const {
  if (totals_.empty() || layer < 0 || layer >= static_cast<int>(totals_.front()->size())) {
    return {};
  }
  std::vector<double> means;
  for (const std::shared_ptr<const LayerTotals>& it : totals_) {
    const std::vector<int64_t>& totals = (*it)[layer];
    means.resize(totals.size(), 0.0);
    for (size_t e = 0; e < totals.size(); ++e) means[e] += static_cast<double>(totals[e]);
  }
  for (double& m : means) m /= static_cast<double>(totals_.size());
  return means;
}

void LoadWindow::Clear() {
  history_.clear();
  totals_.clear();
}

}  // namespace hecate::placement
