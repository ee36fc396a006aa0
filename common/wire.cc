#include "common/wire.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace hecate::wire {

namespace pl = placement;

pl::ClusterSpec FromProto(const v1::ClusterSpec& p) {
  pl::ClusterSpec c;
  c.name = p.name();
  for (const v1::NodeSpec& n : p.nodes()) {
    c.nodes.push_back(pl::NodeSpec{n.name(), static_cast<int>(n.num_devices()),
                                   static_cast<int64_t>(n.device_memory_bytes()),
                                   n.device_flops_per_second()});
  }
  c.intra_node_bandwidth_bytes_per_second = p.intra_node_bandwidth_bytes_per_second();
  c.inter_node_bandwidth_bytes_per_second = p.inter_node_bandwidth_bytes_per_second();
  c.device_nic_bandwidth_bytes_per_second = p.device_nic_bandwidth_bytes_per_second();
  c.link_latency_seconds = p.link_latency_seconds();
  return c;
}

v1::ClusterSpec ToProto(const pl::ClusterSpec& c) {
  v1::ClusterSpec p;
  p.set_name(c.name);
  for (const pl::NodeSpec& n : c.nodes) {
    v1::NodeSpec* np = p.add_nodes();
    np->set_name(n.name);
    np->set_num_devices(n.num_devices);
    np->set_device_memory_bytes(n.device_memory_bytes);
    np->set_device_flops_per_second(n.device_flops_per_second);
  }
  p.set_intra_node_bandwidth_bytes_per_second(c.intra_node_bandwidth_bytes_per_second);
  p.set_inter_node_bandwidth_bytes_per_second(c.inter_node_bandwidth_bytes_per_second);
  p.set_device_nic_bandwidth_bytes_per_second(c.device_nic_bandwidth_bytes_per_second);
  p.set_link_latency_seconds(c.link_latency_seconds);
  return p;
}

pl::ModelSpec FromProto(const v1::ModelSpec& p) {
  pl::ModelSpec m;
  m.name = p.name();
  m.top_k = static_cast<int>(p.top_k());
  m.token_bytes = static_cast<int64_t>(p.token_bytes());
  m.tokens_per_device = static_cast<int64_t>(p.tokens_per_device());
  m.attention_forward_seconds = p.attention_forward_seconds();
  m.attention_flops_per_token = p.attention_flops_per_token();
  for (const v1::LayerSpec& l : p.layers()) {
    m.layers.push_back(pl::LayerSpec{static_cast<int>(l.num_experts()),
                                     static_cast<int64_t>(l.expert_param_bytes()),
                                     static_cast<int64_t>(l.expert_optimizer_bytes()),
                                     l.expert_flops_per_token(), l.copy_seconds()});
  }
  return m;
}

v1::ModelSpec ToProto(const pl::ModelSpec& m) {
  v1::ModelSpec p;
  p.set_name(m.name);
  p.set_top_k(m.top_k);
  p.set_token_bytes(m.token_bytes);
  p.set_tokens_per_device(m.tokens_per_device);
  p.set_attention_forward_seconds(m.attention_forward_seconds);
  p.set_attention_flops_per_token(m.attention_flops_per_token);
  for (const pl::LayerSpec& l : m.layers) {
    v1::LayerSpec* lp = p.add_layers();
    lp->set_num_experts(l.num_experts);
    lp->set_expert_param_bytes(l.expert_param_bytes);
    lp->set_expert_optimizer_bytes(l.expert_optimizer_bytes);
    lp->set_expert_flops_per_token(l.expert_flops_per_token);
    lp->set_copy_seconds(l.copy_seconds);
  }
  return p;
}

pl::PlanId FromProto(const v1::PlanId& p) { return pl::PlanId{p.epoch(), p.version()}; }

v1::PlanId ToProto(const pl::PlanId& id) {
  v1::PlanId p;
  p.set_epoch(id.epoch);
  p.set_version(id.version);
  return p;
}

namespace {

v1::RematMode ToProto(pl::RematMode m) {
  return m == pl::RematMode::kRegather ? v1::REMAT_MODE_REGATHER : v1::REMAT_MODE_KEEP;
}
v1::DispatchRule ToProto(pl::DispatchRule r) {
  return r == pl::DispatchRule::kEven ? v1::DISPATCH_RULE_EVEN : v1::DISPATCH_RULE_LOAD_AWARE;
}
v1::ReplicaSemantics ToProto(pl::ReplicaSemantics s) {
  switch (s) {
    case pl::ReplicaSemantics::kShadow:
      return v1::REPLICA_SEMANTICS_SHADOW;
    case pl::ReplicaSemantics::kPersistent:
      return v1::REPLICA_SEMANTICS_PERSISTENT;
    default:
      return v1::REPLICA_SEMANTICS_EPHEMERAL;
  }
}

}  // namespace

pl::Plan FromProto(const v1::Plan& p) {
  pl::Plan plan;
  plan.job_id = p.job_id();
  plan.id = FromProto(p.id());
  plan.effective_iteration = p.effective_iteration();
  plan.computed_from_iteration = p.computed_from_iteration();
  plan.policy = p.policy();
  plan.sharding_version = p.sharding_version();
  plan.dispatch_rule = p.dispatch_rule() == v1::DISPATCH_RULE_EVEN ? pl::DispatchRule::kEven
                                                                   : pl::DispatchRule::kLoadAware;
  switch (p.semantics()) {
    case v1::REPLICA_SEMANTICS_SHADOW:
      plan.semantics = pl::ReplicaSemantics::kShadow;
      break;
    case v1::REPLICA_SEMANTICS_PERSISTENT:
      plan.semantics = pl::ReplicaSemantics::kPersistent;
      break;
    default:
      plan.semantics = pl::ReplicaSemantics::kEphemeral;
  }
  for (const v1::LayerPlan& lp : p.layers()) {
    pl::LayerPlan layer;
    layer.owner.assign(lp.owner().begin(), lp.owner().end());
    for (const v1::ExpertReplicas& r : lp.replicas()) {
      layer.replicas.emplace_back(r.devices().begin(), r.devices().end());
    }
    layer.remat =
        lp.remat() == v1::REMAT_MODE_REGATHER ? pl::RematMode::kRegather : pl::RematMode::kKeep;
    plan.layers.push_back(std::move(layer));
    pl::LayerPrediction pred;
    pred.device_tokens.assign(lp.prediction().device_tokens().begin(),
                              lp.prediction().device_tokens().end());
    pred.balancedness = lp.prediction().balancedness();
    pred.total_seconds = lp.prediction().moe_seconds();
    pred.spag_bytes = static_cast<int64_t>(lp.prediction().spag_bytes());
    pred.sprs_bytes = static_cast<int64_t>(lp.prediction().sprs_bytes());
    pred.compute_seconds = lp.prediction().compute_seconds();
    pred.all_to_all_seconds = lp.prediction().all_to_all_seconds();
    pred.exposed_comm_seconds = lp.prediction().exposed_comm_seconds();
    plan.prediction.layers.push_back(std::move(pred));
  }
  for (const v1::Migration& m : p.migrations()) {
    plan.migrations.push_back(
        pl::Migration{static_cast<int>(m.layer()), static_cast<int>(m.expert()),
                      static_cast<int>(m.from_device()), static_cast<int>(m.to_device()),
                      static_cast<int64_t>(m.bytes())});
  }
  plan.prediction.moe_seconds = p.predicted_moe_seconds();
  plan.prediction.balancedness = p.predicted_balancedness();
  plan.prediction.sparse_bytes = static_cast<int64_t>(p.predicted_sparse_bytes());
  plan.prediction.migration_seconds = p.predicted_migration_seconds();
  plan.prediction.device_memory_bytes.assign(p.predicted_device_memory_bytes().begin(),
                                             p.predicted_device_memory_bytes().end());
  return plan;
}

v1::Plan ToProto(const pl::Plan& plan) {
  v1::Plan p;
  p.set_job_id(plan.job_id);
  *p.mutable_id() = ToProto(plan.id);
  p.set_effective_iteration(plan.effective_iteration);
  p.set_computed_from_iteration(plan.computed_from_iteration);
  p.set_policy(plan.policy);
  p.set_sharding_version(plan.sharding_version);
  p.set_dispatch_rule(ToProto(plan.dispatch_rule));
  p.set_semantics(ToProto(plan.semantics));
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const pl::LayerPlan& layer = plan.layers[l];
    v1::LayerPlan* lp = p.add_layers();
    lp->set_layer(static_cast<uint32_t>(l));
    for (pl::DeviceId d : layer.owner) lp->add_owner(d);
    for (const auto& r : layer.replicas) {
      v1::ExpertReplicas* er = lp->add_replicas();
      for (pl::DeviceId d : r) er->add_devices(d);
    }
    lp->set_remat(ToProto(layer.remat));
    if (l < plan.prediction.layers.size()) {
      const pl::LayerPrediction& pred = plan.prediction.layers[l];
      v1::LayerPrediction* pp = lp->mutable_prediction();
      for (double t : pred.device_tokens) pp->add_device_tokens(t);
      pp->set_balancedness(pred.balancedness);
      pp->set_moe_seconds(pred.total_seconds);
      pp->set_spag_bytes(pred.spag_bytes);
      pp->set_sprs_bytes(pred.sprs_bytes);
      pp->set_compute_seconds(pred.compute_seconds);
      pp->set_all_to_all_seconds(pred.all_to_all_seconds);
      pp->set_exposed_comm_seconds(pred.exposed_comm_seconds);
    }
  }
  for (const pl::Migration& m : plan.migrations) {
    v1::Migration* mp = p.add_migrations();
    mp->set_layer(m.layer);
    mp->set_expert(m.expert);
    mp->set_from_device(m.from);
    mp->set_to_device(m.to);
    mp->set_bytes(m.bytes);
  }
  p.set_predicted_moe_seconds(plan.prediction.moe_seconds);
  p.set_predicted_balancedness(plan.prediction.balancedness);
  p.set_predicted_sparse_bytes(plan.prediction.sparse_bytes);
  p.set_migration_bytes(plan.migration_bytes());
  p.set_predicted_migration_seconds(plan.prediction.migration_seconds);
  for (int64_t b : plan.prediction.device_memory_bytes) p.add_predicted_device_memory_bytes(b);
  return p;
}

std::string ToJson(const google::protobuf::Message& m, bool pretty) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = pretty;
  opts.preserve_proto_field_names = false;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

absl::Status FromJson(const std::string& json, google::protobuf::Message* m) {
  google::protobuf::util::JsonParseOptions opts;
  auto s = google::protobuf::util::JsonStringToMessage(json, m, opts);
  if (!s.ok()) return absl::InvalidArgumentError(std::string(s.message()));
  return absl::OkStatus();
}

absl::Status ReadJsonFile(const std::string& path, google::protobuf::Message* m) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  absl::Status s = FromJson(ss.str(), m);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  return absl::OkStatus();
}

namespace {

bool SameIds(const google::protobuf::RepeatedField<uint32_t>& a,
             const google::protobuf::RepeatedField<uint32_t>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

bool SamePrediction(const v1::LayerPrediction& a, const v1::LayerPrediction& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

}  // namespace

v1::Plan Lean(v1::Plan plan) {
  for (v1::LayerPlan& layer : *plan.mutable_layers()) {
    layer.mutable_prediction()->clear_device_tokens();
  }
  plan.clear_predicted_device_memory_bytes();
  return plan;
}

v1::Plan MakeDelta(const v1::Plan& base, const v1::Plan& next) {
  if (base.layers_size() != next.layers_size()) return next;
  for (int l = 0; l < next.layers_size(); ++l) {
    if (base.layers(l).replicas_size() != next.layers(l).replicas_size() ||
        base.layers(l).layer() != next.layers(l).layer()) {
      return next;
    }
  }
  v1::Plan delta = next;
  delta.clear_layers();
  *delta.mutable_delta_base() = base.id();
  for (int l = 0; l < next.layers_size(); ++l) {
    const v1::LayerPlan& a = base.layers(l);
    const v1::LayerPlan& b = next.layers(l);
    v1::LayerPlan out;
    bool changed = a.remat() != b.remat() || !SamePrediction(a.prediction(), b.prediction()) ||
                   !SameIds(a.owner(), b.owner());
    for (int e = 0; e < b.replicas_size(); ++e) {
      if (!SameIds(a.replicas(e).devices(), b.replicas(e).devices())) {
        out.add_changed_experts(static_cast<uint32_t>(e));
        *out.add_replicas() = b.replicas(e);
        changed = true;
      }
    }
    if (!changed) continue;
    out.set_layer(b.layer());
    out.set_remat(b.remat());
    *out.mutable_prediction() = b.prediction();
    if (!SameIds(a.owner(), b.owner())) *out.mutable_owner() = b.owner();
    *delta.add_layers() = std::move(out);
  }
  return delta;
}

namespace {

// Whether the layer carries compact holder lists.
bool IsCompact(const v1::LayerPlan& layer) {
  return layer.holder_counts_size() != 0 || layer.holder_gaps_size() != 0;
}

// Appends `holders` without `owner` to the layer's compact lists; false when `holders` is not
// strictly ascending or does not contain `owner`.
bool AppendCompact(const v1::ExpertReplicas& holders, uint32_t owner, v1::LayerPlan* out) {
  uint32_t count = 0, prev = 0;
  bool first = true, has_owner = false;
  for (int i = 0; i < holders.devices_size(); ++i) {
    const uint32_t d = holders.devices(i);
    if (i > 0 && d <= holders.devices(i - 1)) return false;
    if (d == owner) {
      has_owner = true;
      continue;
    }
    out->add_holder_gaps(first ? d : d - prev);
    prev = d;
    first = false;
    ++count;
  }
  out->add_holder_counts(count);
  return has_owner;
}

// Restores `replicas` of a compact layer: one list per entry of holder_counts, the owner of entry i
// being owners[experts[i]] (experts = null: entry i is expert i).
absl::Status ExpandLayer(const google::protobuf::RepeatedField<uint32_t>& owners,
                         const google::protobuf::RepeatedField<uint32_t>* experts,
                         v1::LayerPlan* layer) {
  const auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer->layer(), ": ", what));
  };
  if (layer->replicas_size() != 0) return fail("both replicas and compact holder lists");
  const int entries = experts != nullptr ? experts->size() : owners.size();
  if (layer->holder_counts_size() != entries) {
    return fail(
        absl::StrCat(layer->holder_counts_size(), " holder counts for ", entries, " experts"));
  }
  int next = 0;
  for (int i = 0; i < entries; ++i) {
    const uint32_t e = experts != nullptr ? experts->Get(i) : static_cast<uint32_t>(i);
    if (e >= static_cast<uint32_t>(owners.size())) {
      return fail(absl::StrCat("expert ", e, " out of range"));
    }
    const uint32_t owner = owners.Get(static_cast<int>(e));
    const uint32_t count = layer->holder_counts(i);
    if (count > static_cast<uint32_t>(layer->holder_gaps_size() - next)) {
      return fail("holder counts exceed the holder gaps");
    }
    v1::ExpertReplicas* out = layer->add_replicas();
    out->mutable_devices()->Reserve(static_cast<int>(count) + 1);
    uint64_t id = 0;
    bool owner_placed = false;
    for (uint32_t k = 0; k < count; ++k) {
      const uint32_t gap = layer->holder_gaps(next++);
      if (k > 0 && gap == 0) return fail(absl::StrCat("expert ", e, ": a repeated holder"));
      id += gap;
      if (id > 0x7fffffffu) return fail(absl::StrCat("expert ", e, ": holder out of range"));
      if (id == owner) return fail(absl::StrCat("expert ", e, ": the owner is listed"));
      if (!owner_placed && owner < id) {
        out->add_devices(owner);
        owner_placed = true;
      }
      out->add_devices(static_cast<uint32_t>(id));
    }
    if (!owner_placed) out->add_devices(owner);
  }
  if (next != layer->holder_gaps_size()) return fail("holder gaps left over");
  layer->clear_holder_counts();
  layer->clear_holder_gaps();
  return absl::OkStatus();
}

// Replaces `owner` by owner_deltas.
void CompactOwners(v1::LayerPlan* layer) {
  int64_t prev = 0;
  for (uint32_t o : layer->owner()) {
    layer->add_owner_deltas(static_cast<int32_t>(static_cast<int64_t>(o) - prev));
    prev = o;
  }
  layer->clear_owner();
}

// Restores `owner` from owner_deltas (a layer without them is left as it is).
absl::Status ExpandOwners(v1::LayerPlan* layer) {
  if (layer->owner_deltas_size() == 0) return absl::OkStatus();
  if (layer->owner_size() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer->layer(), ": both owner and owner_deltas"));
  }
  int64_t owner = 0;
  layer->mutable_owner()->Reserve(layer->owner_deltas_size());
  for (int32_t d : layer->owner_deltas()) {
    owner += d;
    if (owner < 0 || owner > 0x7fffffff) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", layer->layer(), ": owner_deltas leave the device range"));
    }
    layer->add_owner(static_cast<uint32_t>(owner));
  }
  layer->clear_owner_deltas();
  return absl::OkStatus();
}

}  // namespace

v1::Plan CompactHolders(v1::Plan plan, const v1::Plan& full) {
  const v1::Plan original = plan;
  int full_layer = 0;
  for (v1::LayerPlan& layer : *plan.mutable_layers()) {
    while (full_layer < full.layers_size() && full.layers(full_layer).layer() != layer.layer()) {
      ++full_layer;
    }
    if (full_layer >= full.layers_size() || IsCompact(layer) || layer.owner_deltas_size() != 0) {
      return original;
    }
    const auto& owners = full.layers(full_layer).owner();
    const bool delta = plan.has_delta_base();
    if (!delta && layer.replicas_size() != owners.size()) return original;
    if (delta && layer.replicas_size() != layer.changed_experts_size()) return original;
    for (int i = 0; i < layer.replicas_size(); ++i) {
      const uint32_t e = delta ? layer.changed_experts(i) : static_cast<uint32_t>(i);
      if (e >= static_cast<uint32_t>(owners.size()) ||
          !AppendCompact(layer.replicas(i), owners.Get(static_cast<int>(e)), &layer)) {
        return original;
      }
    }
    layer.clear_replicas();
    CompactOwners(&layer);
  }
  return plan;
}

absl::StatusOr<v1::Plan> ApplyDelta(const v1::Plan& base, const v1::Plan& compact_delta) {
  bool compact_owners = false;
  for (const v1::LayerPlan& layer : compact_delta.layers()) {
    compact_owners = compact_owners || layer.owner_deltas_size() != 0;
  }
  v1::Plan owners_restored;
  if (compact_owners) {
    owners_restored = compact_delta;
    for (v1::LayerPlan& layer : *owners_restored.mutable_layers()) {
      if (absl::Status s = ExpandOwners(&layer); !s.ok()) return s;
    }
  }
  const v1::Plan& delta = compact_owners ? owners_restored : compact_delta;
  if (!delta.has_delta_base()) {
    bool compact = false;
    for (const v1::LayerPlan& layer : delta.layers()) compact = compact || IsCompact(layer);
    // The owners' copy (when there is one) becomes the result instead of being copied again.
    v1::Plan out = compact_owners ? std::move(owners_restored) : compact_delta;
    if (!compact) return out;
    for (v1::LayerPlan& layer : *out.mutable_layers()) {
      if (!IsCompact(layer)) continue;
      const google::protobuf::RepeatedField<uint32_t> owners = layer.owner();
      if (absl::Status s = ExpandLayer(owners, nullptr, &layer); !s.ok()) return s;
    }
    return out;
  }
  if (!(FromProto(delta.delta_base()) == FromProto(base.id()))) {
    return absl::FailedPreconditionError(absl::StrCat(
        "delta is against plan ", delta.delta_base().epoch(), ".", delta.delta_base().version(),
        ", have ", base.id().epoch(), ".", base.id().version()));
  }
  v1::Plan out = delta;
  out.clear_delta_base();
  *out.mutable_layers() = base.layers();
  int next_layer = 0;  // delta layers are in layer order
  for (const v1::LayerPlan& d : delta.layers()) {
    while (next_layer < out.layers_size() && out.layers(next_layer).layer() != d.layer()) {
      ++next_layer;
    }
    if (next_layer >= out.layers_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("delta names layer ", d.layer(), ", absent or out of order in the base"));
    }
    v1::LayerPlan& target = *out.mutable_layers(next_layer);
    if (d.owner_size() != 0 && d.owner_size() != target.owner_size()) {
      return absl::InvalidArgumentError(absl::StrCat("delta layer ", d.layer(), ": ",
                                                     d.owner_size(), " owners, base has ",
                                                     target.owner_size()));
    }
    v1::LayerPlan expanded;
    if (IsCompact(d)) {
      if (d.replicas_size() != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("delta layer ", d.layer(), ": both replicas and compact holder lists"));
      }
      // The holders exclude the owners of the plan being rebuilt: the delta's if it carries
      // them, else the base's (unchanged).
      expanded.set_layer(d.layer());
      *expanded.mutable_holder_counts() = d.holder_counts();
      *expanded.mutable_holder_gaps() = d.holder_gaps();
      if (absl::Status s = ExpandLayer(d.owner_size() != 0 ? d.owner() : target.owner(),
                                       &d.changed_experts(), &expanded);
          !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("delta ", s.message()));
      }
    }
    const auto& replicas = IsCompact(d) ? expanded.replicas() : d.replicas();
    if (d.changed_experts_size() != replicas.size()) {
      return absl::InvalidArgumentError(absl::StrCat("delta layer ", d.layer(), ": ",
                                                     d.changed_experts_size(), " experts but ",
                                                     replicas.size(), " holder lists"));
    }
    for (int i = 0; i < d.changed_experts_size(); ++i) {
      const uint32_t e = d.changed_experts(i);
      if (e >= static_cast<uint32_t>(target.replicas_size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("delta layer ", d.layer(), ": expert ", e, " out of range"));
      }
      *target.mutable_replicas(static_cast<int>(e)) = replicas.Get(i);
    }
    if (d.owner_size() != 0) *target.mutable_owner() = d.owner();
    target.set_remat(d.remat());
    *target.mutable_prediction() = d.prediction();
  }
  return out;
}

}  // namespace hecate::wire
