#include "placement/cost_model.h"

#include <algorithm>

#include "placement/sparse_tree.h"

namespace hecate::placement {

void TrafficMatrix::Add(const Cluster& c, DeviceId from, DeviceId to, double bytes) {
  if (from == to || bytes <= 0) return;
  if (c.same_node(from, to)) {
    out_intra[from] += bytes;
    in_intra[to] += bytes;
  } else {
    out_inter[from] += bytes;
    in_inter[to] += bytes;
    node_out[c.node_of(from)] += bytes;
    node_in[c.node_of(to)] += bytes;
  }
}

double TrafficMatrix::Seconds(const Cluster& c) const {
  double worst = 0;
  bool any = false;
  for (size_t d = 0; d < in_intra.size(); ++d) {
    const double intra = std::max(in_intra[d], out_intra[d]);
    const double inter = std::max(in_inter[d], out_inter[d]);
    if (intra > 0 || inter > 0) any = true;
    worst = std::max(worst, std::max(intra / c.intra_bw(), inter / c.device_nic_bw()));
  }
  for (size_t n = 0; n < node_in.size(); ++n) {
    worst = std::max(worst, std::max(node_in[n], node_out[n]) / c.inter_bw());
  }
  return any ? worst + c.latency() : 0.0;
}

double TrafficMatrix::TotalBytes() const {
  double total = 0;
  for (size_t d = 0; d < in_intra.size(); ++d) total += in_intra[d] + in_inter[d];
  return total;
}

CostModel::CostModel(const Cluster& cluster, const ModelSpec& model,
                     double attention_forward_seconds)
    : cluster_(cluster),
      model_(model),
      attention_s_(attention_forward_seconds >= 0 ? attention_forward_seconds
                                                  : model.attention_forward_seconds),
      overlap_(cluster.transfers_overlap_compute()) {}

double CostModel::ExpertSecondsPerToken(LayerId l, DeviceId d) const {
  return kComputePasses * model_.layers[l].expert_flops_per_token / cluster_.flops(d);
}

double CostModel::AllToAllSecondsPerCrossNodeToken() const {
  return kAllToAllsPerLayer * static_cast<double>(model_.token_bytes) / cluster_.inter_bw();
}

CostModel::HidingWindows CostModel::Windows(LayerId l, double compute_seconds) const {
  HidingWindows w;
  if (!overlap_) return w;  // nothing hides a transfer that takes compute's time
  // Only compute hides the lane's transfers: the All-to-Alls use the same links, so the network
  // carries them one after the other (ChargeSchedule pauses the lane while they run).
  const double pass = compute_seconds / kComputePasses;
  const double forward_cycle = attention_s_ + pass;
  const double backward_cycle = 2 * attention_s_ + 2 * pass;
  w.forward = l == 0 ? attention_s_ : forward_cycle;
  const bool top = l + 1 == model_.num_layers();
  if (l == 0 || top) {
    w.shared = false;
    w.regather = top ? 0.0 : backward_cycle;
    w.reduce = l == 0 ? 2 * attention_s_ : backward_cycle;
  } else {
    w.regather = w.reduce = backward_cycle;
  }
  return w;
}

double CostModel::ExposedSeconds(ReplicaSemantics semantics, RematMode remat, double spag_seconds,
                                 double sprs_seconds, const HidingWindows& w) {
  switch (semantics) {
    case ReplicaSemantics::kPersistent:
      return std::max(0.0, sprs_seconds - w.reduce);
    case ReplicaSemantics::kShadow:
      return spag_seconds + std::max(0.0, sprs_seconds - w.reduce);
    case ReplicaSemantics::kEphemeral:
      break;
  }
  const double regather = remat == RematMode::kRegather ? spag_seconds : 0.0;
  const double backward =
      w.shared ? std::max(0.0, sprs_seconds + regather - w.reduce)
               : std::max(0.0, regather - w.regather) + std::max(0.0, sprs_seconds - w.reduce);
  return std::max(0.0, spag_seconds - w.forward) + backward;
}

double CostModel::SparseCollectiveSeconds(LayerId l, const LayerPlan& layer, int64_t* bytes) const {
  const double pb = static_cast<double>(model_.layers[l].expert_param_bytes);
  // The two phases of the relay tree (placement/sparse_tree.h) run one after the other.
  TrafficMatrix phase0(cluster_), phase1(cluster_);
  int64_t moved = 0;
  std::vector<SparseEdge> edges;
  for (ExpertId e = 0; e < layer.num_experts(); ++e) {
    edges.clear();
    AppendSparseEdges(&cluster_, layer, e, &edges);
    for (const SparseEdge& edge : edges) {
      (edge.phase == 0 ? phase0 : phase1).Add(cluster_, edge.from, edge.to, pb);
      moved += model_.layers[l].expert_param_bytes;
    }
  }
  if (bytes != nullptr) *bytes = moved;
  return phase0.Seconds(cluster_) + phase1.Seconds(cluster_);
}

LayerPrediction CostModel::EvaluateLayer(LayerId l, const LayerPlan& layer, const LoadMatrix& load,
                                         DispatchRule rule, ReplicaSemantics semantics,
                                         Dispatcher* dispatcher,
                                         const LoadAggregate* aggregate) const {
  const int devices = cluster_.num_devices();
  const LayerSpec& spec = model_.layers[l];
  LayerPrediction p;
  DispatchSummary summary;
  dispatcher->Summarize(layer, load, rule, &summary, aggregate);

  p.device_tokens.resize(devices);
  std::vector<int> copies;
  if (spec.copy_seconds > 0) copies = layer.ExtraCopies(devices);
  double sum = 0;
  for (DeviceId d = 0; d < devices; ++d) {
    const double t = static_cast<double>(summary.device_tokens[d]);
    p.device_tokens[d] = t;
    sum += t;
    p.max_tokens = std::max(p.max_tokens, t);
    double compute = kComputePasses * (t * spec.expert_flops_per_token / cluster_.flops(d));
    if (!copies.empty()) compute += copies[d] * spec.copy_seconds;
    p.compute_seconds = std::max(p.compute_seconds, compute);
  }
  p.mean_tokens = sum / devices;
  p.balancedness = p.max_tokens > 0 ? p.mean_tokens / p.max_tokens : 1.0;

  const double tb = static_cast<double>(model_.token_bytes);
  double worst_a2a = 0;
  std::vector<double> node_in(cluster_.num_nodes(), 0), node_out(cluster_.num_nodes(), 0);
  for (DeviceId d = 0; d < devices; ++d) {
    const double intra = tb * std::max(summary.out_intra[d], summary.in_intra[d]);
    const double inter = tb * std::max(summary.out_inter[d], summary.in_inter[d]);
    worst_a2a = std::max(worst_a2a,
                         std::max(intra / cluster_.intra_bw(), inter / cluster_.device_nic_bw()));
    node_in[cluster_.node_of(d)] += tb * summary.in_inter[d];
    node_out[cluster_.node_of(d)] += tb * summary.out_inter[d];
  }
  for (NodeId n = 0; n < cluster_.num_nodes(); ++n) {
    worst_a2a = std::max(worst_a2a, std::max(node_in[n], node_out[n]) / cluster_.inter_bw());
  }
  // The data plane runs the four All-to-Alls whenever there is more than one device, even when
  // every token stays local (the collective still synchronizes): latency is always charged.
  p.all_to_all_seconds = devices > 1 ? kAllToAllsPerLayer * (worst_a2a + cluster_.latency()) : 0.0;

  if (semantics == ReplicaSemantics::kPersistent) {
    // Ring AllReduce per replica group: every member moves 2(n-1)/n parameter bytes in and out.
    TrafficMatrix traffic(cluster_);
    int64_t moved = 0;
    for (ExpertId e = 0; e < layer.num_experts(); ++e) {
      const std::vector<DeviceId>& r = layer.replicas[e];
      const int n = static_cast<int>(r.size());
      if (n < 2) continue;
      const double per_member = 2.0 * (n - 1) / n * static_cast<double>(spec.expert_param_bytes);
      for (int i = 0; i < n; ++i) traffic.Add(cluster_, r[i], r[(i + 1) % n], per_member);
      moved += static_cast<int64_t>(per_member * n);
    }
    const double allreduce = traffic.Seconds(cluster_);
    p.spag_seconds = 0;
    p.sprs_seconds = allreduce;
    p.sprs_bytes = moved;
    p.exposed_comm_seconds =
        ExposedSeconds(semantics, layer.remat, 0.0, allreduce, Windows(l, p.compute_seconds));
  } else {
    int64_t bytes = 0;
    const double t = SparseCollectiveSeconds(l, layer, &bytes);
    p.spag_seconds = t;
    p.sprs_seconds = t;
    p.spag_bytes = bytes;
    p.sprs_bytes = bytes;
    p.exposed_comm_seconds =
        ExposedSeconds(semantics, layer.remat, t, t, Windows(l, p.compute_seconds));
  }
  p.total_seconds = p.compute_seconds + p.all_to_all_seconds + p.exposed_comm_seconds;
  return p;
}

void CostModel::ChargeSchedule(const Plan& plan, std::vector<LayerPrediction>* layers) const {
  const int n = static_cast<int>(layers->size());
  std::vector<double> exposed(n, 0.0);
  const bool ephemeral = plan.semantics == ReplicaSemantics::kEphemeral;
  const bool shadow = plan.semantics == ReplicaSemantics::kShadow;
  auto regathered = [&](int l) {
    return ephemeral && plan.layers[l].remat == RematMode::kRegather;
  };
  if (!overlap_) {
    // Every transfer takes compute's time: spAG (twice when re-gathered) and spRS in full.
    for (int l = 0; l < n; ++l) {
      const LayerPrediction& p = (*layers)[l];
      exposed[l] = p.spag_seconds * (regathered(l) ? 2 : 1) + p.sprs_seconds;
    }
  } else {
    // The lane runs its work in submission order, and only while the training thread computes or
    // waits: during an All-to-All the links are busy, and the lane pauses. `done` is the lane's
    // cumulative work, `submitted` the work submitted so far; a transfer is finished when `done`
    // reaches its mark.
    double done = 0, submitted = 0;
    auto submit = [&](double seconds) { return submitted += seconds; };
    auto compute = [&](double seconds) { done = std::min(submitted, done + seconds); };
    auto wait = [&](double mark) {
      const double w = std::max(0.0, mark - done);
      done = std::max(done, mark);
      return w;
    };
    const double attention = attention_s_;
    auto pass = [&](int l) { return (*layers)[l].compute_seconds / kComputePasses; };
    // Forward: spAG(l) joins the lane at the start of layer (l - kPrefetchLayers)'s attention;
    // layer l waits for it before its experts. The All-to-Alls (dispatch, combine) pause the lane.
    std::vector<double> gathered(n, 0.0);
    int queued = 0;
    for (int l = 0; l < n; ++l) {
      for (; queued < n && queued <= l + kPrefetchLayers; ++queued) {
        if (ephemeral) gathered[queued] = submit((*layers)[queued].spag_seconds);
      }
      compute(attention);  // attention, gate; then the dispatch All-to-All
      if (ephemeral) {
        exposed[l] += wait(gathered[l]);
      } else if (shadow) {
        // The shadows are broadcast after the gate, on the training thread: nothing hides them.
        exposed[l] += (*layers)[l].spag_seconds;
      }
      compute(pass(l));  // experts; then the combine All-to-All
    }
    // Backward: the top layer's re-gather joins the lane as forward ends, each other one when the
    // layer above starts its backward; spRS (or the replica AllReduce) when a layer's backward is
    // done; the optimizer waits for the lane.
    std::vector<double> regather_done(n, 0.0);
    if (n > 0 && regathered(n - 1)) regather_done[n - 1] = submit((*layers)[n - 1].spag_seconds);
    for (int l = n - 1; l >= 0; --l) {
      if (l > 0 && regathered(l - 1)) regather_done[l - 1] = submit((*layers)[l - 1].spag_seconds);
      if (regathered(l)) exposed[l] += wait(regather_done[l]);
      compute(2 * pass(l));  // expert backward, between the two backward All-to-Alls
      submit((*layers)[l].sprs_seconds);
      compute(2 * attention);
    }
    if (n > 0) exposed[0] += wait(submitted);
  }
  for (int l = 0; l < n; ++l) {
    LayerPrediction& p = (*layers)[l];
    p.exposed_comm_seconds = exposed[l];
    p.total_seconds = p.compute_seconds + p.all_to_all_seconds + p.exposed_comm_seconds;
  }
}

double CostModel::MigrationSeconds(const std::vector<Migration>& migrations) const {
  TrafficMatrix traffic(cluster_);
  for (const Migration& m : migrations) {
    traffic.Add(cluster_, m.from, m.to, static_cast<double>(m.bytes));
  }
  return traffic.Seconds(cluster_);
}

void CostModel::Evaluate(Plan* plan, const ModelLoad& load,
                         const std::vector<LoadAggregate>* aggregates,
                         const std::vector<const LayerPrediction*>* reuse) const {
  Dispatcher dispatcher(cluster_);
  Prediction& pred = plan->prediction;
  pred = Prediction();
  double balance_sum = 0;
  for (LayerId l = 0; l < static_cast<int>(plan->layers.size()); ++l) {
    if (reuse != nullptr && (*reuse)[l] != nullptr) {
      pred.layers.push_back(*(*reuse)[l]);
    } else {
      pred.layers.push_back(EvaluateLayer(l, plan->layers[l], load[l], plan->dispatch_rule,
                                          plan->semantics, &dispatcher,
                                          aggregates != nullptr ? &(*aggregates)[l] : nullptr));
    }
  }
  ChargeSchedule(*plan, &pred.layers);
  for (const LayerPrediction& lp : pred.layers) {
    pred.moe_seconds += lp.total_seconds;
    pred.sparse_bytes += lp.spag_bytes + lp.sprs_bytes;
    balance_sum += lp.balancedness;
  }
  pred.balancedness = plan->layers.empty() ? 1.0 : balance_sum / plan->layers.size();
  pred.migration_seconds = MigrationSeconds(plan->migrations);
  pred.device_memory_bytes = MemoryPerDevice(*plan, cluster_, model_);
}

}  // namespace hecate::placement
