#include "wire/convert.h"

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
  c.transfers_overlap_compute = !p.transfers_share_compute();
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
  p.set_transfers_share_compute(!c.transfers_overlap_compute);
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

pl::CalibrationRule FromProto(const v1::CalibrationRule& p) {
  pl::CalibrationRule r;
  r.enabled = p.enabled();
  r.free_copies = static_cast<int>(p.free_copies());
  r.options.target = p.target();
  r.options.candidates = static_cast<int>(p.candidates());
  r.options.swap_cell_budget = static_cast<int64_t>(p.swap_cell_budget());
  return r;
}

v1::CalibrationRule ToProto(const pl::CalibrationRule& r) {
  v1::CalibrationRule p;
  p.set_enabled(r.enabled);
  p.set_free_copies(static_cast<uint32_t>(std::max(0, r.free_copies)));
  p.set_target(r.options.target);
  p.set_candidates(static_cast<uint32_t>(std::max(0, r.options.candidates)));
  p.set_swap_cell_budget(static_cast<uint64_t>(std::max<int64_t>(0, r.options.swap_cell_budget)));
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
  switch (r) {
    case pl::DispatchRule::kEven:
      return v1::DISPATCH_RULE_EVEN;
    case pl::DispatchRule::kReplicaEven:
      return v1::DISPATCH_RULE_REPLICA_EVEN;
    case pl::DispatchRule::kLoadAware:
      break;
  }
  return v1::DISPATCH_RULE_LOAD_AWARE;
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
  switch (p.dispatch_rule()) {
    case v1::DISPATCH_RULE_EVEN:
      plan.dispatch_rule = pl::DispatchRule::kEven;
      break;
    case v1::DISPATCH_RULE_REPLICA_EVEN:
      plan.dispatch_rule = pl::DispatchRule::kReplicaEven;
      break;
    default:
      plan.dispatch_rule = pl::DispatchRule::kLoadAware;
  }
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

v1::Plan Lean(v1::Plan plan) {
  for (v1::LayerPlan& layer : *plan.mutable_layers()) {
    layer.mutable_prediction()->clear_device_tokens();
  }
  plan.clear_predicted_device_memory_bytes();
  return plan;
}

v1::RegisterWorkerRequest ToProto(const WorkerRegistration& w) {
  v1::RegisterWorkerRequest p;
  p.set_job_id(w.job_id);
  p.set_rank(w.rank);
  p.set_world_size(w.world_size);
  p.set_node(w.node);
  p.set_local_rank(w.local_rank);
  p.set_device_kind(w.device_kind);
  p.set_device_memory_bytes(w.device_memory_bytes);
  p.set_incarnation(w.incarnation);
  *p.mutable_model() = ToProto(w.model);
  *p.mutable_links() = ToProto(w.links);
  *p.mutable_calibration() = ToProto(w.calibration);
  p.set_secret_sha256(w.secret_sha256);
  return p;
}

WorkerRegistration FromProto(const v1::RegisterWorkerRequest& p) {
  WorkerRegistration w;
  w.job_id = p.job_id();
  w.rank = static_cast<int>(p.rank());
  w.world_size = static_cast<int>(p.world_size());
  w.node = p.node();
  w.local_rank = static_cast<int>(p.local_rank());
  w.device_kind = p.device_kind();
  w.device_memory_bytes = static_cast<int64_t>(p.device_memory_bytes());
  w.incarnation = p.incarnation();
  w.model = FromProto(p.model());
  w.links = FromProto(p.links());
  if (p.has_calibration()) w.calibration = FromProto(p.calibration());
  w.secret_sha256 = p.secret_sha256();
  return w;
}

v1::LoadReport ToProto(const LoadReport& r) {
  v1::LoadReport p;
  p.set_job_id(r.job_id);
  p.set_rank(static_cast<uint32_t>(r.rank));
  p.set_incarnation(r.incarnation);
  p.set_iteration(r.iteration);
  *p.mutable_plan() = ToProto(r.plan);
  for (size_t l = 0; l < r.layers.size(); ++l) {
    v1::LayerLoad* layer = p.add_layers();
    layer->set_layer(static_cast<uint32_t>(l));
    for (int64_t c : r.layers[l]) layer->add_expert_tokens(static_cast<uint64_t>(c));
  }
  v1::PhaseTimings* t = p.mutable_timings();
  t->set_attention_seconds(r.timings.attention_seconds);
  t->set_gate_seconds(r.timings.gate_seconds);
  t->set_dispatch_seconds(r.timings.dispatch_seconds);
  t->set_expert_seconds(r.timings.expert_seconds);
  t->set_combine_seconds(r.timings.combine_seconds);
  t->set_spag_seconds(r.timings.spag_seconds);
  t->set_sprs_seconds(r.timings.sprs_seconds);
  t->set_optimizer_seconds(r.timings.optimizer_seconds);
  t->set_step_seconds(r.timings.step_seconds);
  p.set_free_memory_bytes(static_cast<uint64_t>(std::max<int64_t>(0, r.free_memory_bytes)));
  p.set_tokens(static_cast<uint64_t>(std::max<int64_t>(0, r.tokens)));
  return p;
}

absl::StatusOr<LoadReport> FromProto(const v1::LoadReport& p) {
  LoadReport r;
  r.job_id = p.job_id();
  r.rank = static_cast<int>(p.rank());
  r.incarnation = p.incarnation();
  r.iteration = p.iteration();
  r.plan = FromProto(p.plan());
  for (int l = 0; l < p.layers_size(); ++l) {
    if (p.layers(l).layer() != static_cast<uint32_t>(l)) {
      return absl::InvalidArgumentError("report layers must be listed in layer order 0, 1, ...");
    }
    std::vector<int64_t> row;
    row.reserve(p.layers(l).expert_tokens_size());
    for (uint64_t t : p.layers(l).expert_tokens()) {
      row.push_back(t > static_cast<uint64_t>(INT64_MAX) ? -1 : static_cast<int64_t>(t));
    }
    r.layers.push_back(std::move(row));
  }
  const v1::PhaseTimings& t = p.timings();
  r.timings.attention_seconds = t.attention_seconds();
  r.timings.gate_seconds = t.gate_seconds();
  r.timings.dispatch_seconds = t.dispatch_seconds();
  r.timings.expert_seconds = t.expert_seconds();
  r.timings.combine_seconds = t.combine_seconds();
  r.timings.spag_seconds = t.spag_seconds();
  r.timings.sprs_seconds = t.sprs_seconds();
  r.timings.optimizer_seconds = t.optimizer_seconds();
  r.timings.step_seconds = t.step_seconds();
  r.free_memory_bytes = static_cast<int64_t>(
      std::min<uint64_t>(p.free_memory_bytes(), static_cast<uint64_t>(INT64_MAX)));
  r.tokens = static_cast<int64_t>(std::min<uint64_t>(p.tokens(), static_cast<uint64_t>(INT64_MAX)));
  return r;
}

}  // namespace hecate::wire
