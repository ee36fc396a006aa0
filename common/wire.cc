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
bool IsCompact(const v1::LayerPlan& layer) { return !layer.holders_coded().empty(); }

// Bits needed to write x (0 for 0).
int BitWidth(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

// The bit stream of LayerPlan.holders_coded: least significant bit of each byte first.
class BitWriter {
 public:
  // The bytes written, the last one padded with zero bits.
  std::string Finish() && {
    if (used_ > 0) out_.push_back(static_cast<char>(acc_));
    return std::move(out_);
  }
  // The low `count` bits of `bits`, count <= 32.
  void Put(uint64_t bits, int count) {
    acc_ |= (bits & ((uint64_t{1} << count) - 1)) << used_;
    used_ += count;
    while (used_ >= 8) {
      out_.push_back(static_cast<char>(acc_ & 0xff));
      acc_ >>= 8;
      used_ -= 8;
    }
  }
  // Elias gamma of x >= 1: floor(log2 x) zero bits, then x's bits from the most significant.
  void Gamma(uint64_t x) {
    const int width = BitWidth(x);
    Put(0, width - 1);
    for (int b = width - 1; b >= 0; --b) Put((x >> b) & 1, 1);
  }
  // Golomb-Rice with parameter k: x >> k in unary (1-bits ended by a 0), then the k low bits.
  void Rice(uint64_t x, int k) {
    for (uint64_t q = x >> k; q > 0; q -= std::min<uint64_t>(q, 32)) {
      const int ones = static_cast<int>(std::min<uint64_t>(q, 32));
      Put((uint64_t{1} << ones) - 1, ones);
    }
    Put(0, 1);
    Put(x, k);
  }

 private:
  std::string out_;
  uint64_t acc_ = 0;
  int used_ = 0;
};

class BitReader {
 public:
  explicit BitReader(const std::string& in) : in_(in) {}
  size_t bits_left() const { return in_.size() * 8 - pos_; }
  bool Bit(uint32_t* b) {
    if (pos_ >= in_.size() * 8) return false;
    *b = (static_cast<uint8_t>(in_[pos_ / 8]) >> (pos_ % 8)) & 1;
    ++pos_;
    return true;
  }
  bool Get(int count, uint64_t* v) {
    *v = 0;
    for (int i = 0; i < count; ++i) {
      uint32_t b;
      if (!Bit(&b)) return false;
      *v |= uint64_t{b} << i;
    }
    return true;
  }
  // Values above 2^31 fail (no id or count is that large).
  bool Gamma(uint64_t* x) {
    int zeros = 0;
    uint32_t b = 0;
    while (true) {
      if (!Bit(&b)) return false;
      if (b == 1) break;
      if (++zeros > 31) return false;
    }
    *x = 1;
    for (int i = 0; i < zeros; ++i) {
      if (!Bit(&b)) return false;
      *x = (*x << 1) | b;
    }
    return true;
  }
  // Fails past `max`.
  bool Rice(int k, uint64_t max, uint64_t* x) {
    uint64_t q = 0;
    uint32_t b = 0;
    while (true) {
      if (!Bit(&b)) return false;
      if (b == 0) break;
      if ((++q << k) > max) return false;
    }
    uint64_t low;
    if (!Get(k, &low)) return false;
    *x = (q << k) | low;
    return *x <= max;
  }

 private:
  const std::string& in_;
  size_t pos_ = 0;
};

// The Rice parameter for n holders among u devices: floor(log2(u / n)).
int RiceParameter(uint64_t u, uint64_t n) { return n == 0 || u <= n ? 0 : BitWidth(u / n) - 1; }

// Codes the holder lists of `layer.replicas()` without their owners (owner of entry i:
// owners[experts[i]], experts = null: expert i) into holders_coded; false when a list is not
// strictly ascending, lacks its owner, or names an expert without an owner.
bool EncodeLayer(const google::protobuf::RepeatedField<uint32_t>& owners,
                 const google::protobuf::RepeatedField<uint32_t>* experts, v1::LayerPlan* layer) {
  if (layer->replicas_size() == 0) return true;
  uint64_t universe = 1;
  for (int i = 0; i < layer->replicas_size(); ++i) {
    const uint32_t e = experts != nullptr ? experts->Get(i) : static_cast<uint32_t>(i);
    if (e >= static_cast<uint32_t>(owners.size())) return false;
    const v1::ExpertReplicas& holders = layer->replicas(i);
    bool has_owner = false;
    for (int j = 0; j < holders.devices_size(); ++j) {
      if (j > 0 && holders.devices(j) <= holders.devices(j - 1)) return false;
      has_owner = has_owner || holders.devices(j) == owners.Get(static_cast<int>(e));
    }
    if (!has_owner) return false;
    if (holders.devices_size() > 0) {
      universe =
          std::max<uint64_t>(universe, uint64_t{holders.devices(holders.devices_size() - 1)} + 1);
    }
  }
  BitWriter out;
  out.Gamma(universe);
  for (int i = 0; i < layer->replicas_size(); ++i) {
    const uint32_t e = experts != nullptr ? experts->Get(i) : static_cast<uint32_t>(i);
    const uint32_t owner = owners.Get(static_cast<int>(e));
    const v1::ExpertReplicas& holders = layer->replicas(i);
    const uint64_t n = static_cast<uint64_t>(holders.devices_size()) - 1;
    out.Gamma(n + 1);
    const int k = RiceParameter(universe, n);
    bool first = true;
    uint64_t prev = 0;
    for (uint32_t d : holders.devices()) {
      if (d == owner) continue;
      out.Rice(first ? d : d - prev - 1, k);
      prev = d;
      first = false;
    }
  }
  layer->clear_replicas();
  layer->set_holders_coded(std::move(out).Finish());
  return true;
}

// Restores `replicas` of a compact layer: one list per expert named (experts = null: every
// expert), the owner of entry i being owners[experts[i]].
absl::Status ExpandLayer(const google::protobuf::RepeatedField<uint32_t>& owners,
                         const google::protobuf::RepeatedField<uint32_t>* experts,
                         v1::LayerPlan* layer) {
  const auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer->layer(), ": ", what));
  };
  if (layer->replicas_size() != 0) return fail("both replicas and compact holder lists");
  const int entries = experts != nullptr ? experts->size() : owners.size();
  BitReader in(layer->holders_coded());
  uint64_t universe = 0;
  if (!in.Gamma(&universe)) return fail("holder code ends early");
  if (universe > (uint64_t{1} << 31)) return fail("holder code names more than 2^31 devices");
  google::protobuf::RepeatedPtrField<v1::ExpertReplicas> lists;
  lists.Reserve(entries);
  for (int i = 0; i < entries; ++i) {
    const uint32_t e = experts != nullptr ? experts->Get(i) : static_cast<uint32_t>(i);
    if (e >= static_cast<uint32_t>(owners.size())) {
      return fail(absl::StrCat("expert ", e, " out of range"));
    }
    const uint32_t owner = owners.Get(static_cast<int>(e));
    uint64_t n = 0;
    if (!in.Gamma(&n)) return fail("holder code ends early");
    --n;
    // Every holder takes at least one bit, and no more holders than devices.
    if (n > universe || n > in.bits_left()) {
      return fail(absl::StrCat("expert ", e, ": ", n, " holders among ", universe, " devices"));
    }
    const int k = RiceParameter(universe, n);
    v1::ExpertReplicas* out = lists.Add();
    out->mutable_devices()->Reserve(static_cast<int>(n) + 1);
    uint64_t id = 0;
    bool owner_placed = false;
    for (uint64_t j = 0; j < n; ++j) {
      uint64_t x = 0;
      const uint64_t room = j == 0 ? universe - 1 : universe - 2 - id;
      if ((j > 0 && id + 1 >= universe) || !in.Rice(k, room, &x)) {
        return fail(absl::StrCat("expert ", e, ": holder code ends early or leaves the ", universe,
                                 " devices"));
      }
      id = j == 0 ? x : id + 1 + x;
      if (id == owner) return fail(absl::StrCat("expert ", e, ": the owner is listed"));
      if (!owner_placed && owner < id) {
        out->add_devices(owner);
        owner_placed = true;
      }
      out->add_devices(static_cast<uint32_t>(id));
    }
    if (!owner_placed) out->add_devices(owner);
  }
  // Only the zero bits that pad the last byte may remain.
  uint64_t rest = 0;
  if (in.bits_left() >= 8 || !in.Get(static_cast<int>(in.bits_left()), &rest) || rest != 0) {
    return fail("holder code left over");
  }
  layer->clear_holders_coded();
  *layer->mutable_replicas() = std::move(lists);
  return absl::OkStatus();
}

// Replaces `owner` by owner_runs.
void CompactOwners(v1::LayerPlan* layer) {
  int64_t prev = 0, step = 0, run = 0;
  for (uint32_t o : layer->owner()) {
    const int64_t d = static_cast<int64_t>(o) - prev;
    if (run > 0 && d != step) {
      layer->add_owner_runs(static_cast<int32_t>(step));
      layer->add_owner_runs(static_cast<int32_t>(run));
      run = 0;
    }
    step = d;
    ++run;
    prev = o;
  }
  if (run > 0) {
    layer->add_owner_runs(static_cast<int32_t>(step));
    layer->add_owner_runs(static_cast<int32_t>(run));
  }
  layer->clear_owner();
}

// Restores `owner` from owner_runs (a layer without them is left as it is).
absl::Status ExpandOwners(v1::LayerPlan* layer) {
  if (layer->owner_runs_size() == 0) return absl::OkStatus();
  const auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer->layer(), ": ", what));
  };
  if (layer->owner_size() != 0) return fail("both owner and owner_runs");
  if (layer->owner_runs_size() % 2 != 0) return fail("owner_runs is not (step, count) pairs");
  // A plan names at most one owner per expert; bound the total before allocating.
  constexpr int64_t kMaxOwners = int64_t{1} << 24;
  int64_t total = 0;
  for (int i = 1; i < layer->owner_runs_size(); i += 2) {
    const int32_t n = layer->owner_runs(i);
    if (n <= 0) return fail("owner_runs has a run of no owners");
    total += n;
    if (total > kMaxOwners) return fail("owner_runs names more than 2^24 owners");
  }
  layer->mutable_owner()->Reserve(static_cast<int>(total));
  int64_t owner = 0;
  for (int i = 0; i < layer->owner_runs_size(); i += 2) {
    const int64_t step = layer->owner_runs(i);
    for (int32_t k = 0; k < layer->owner_runs(i + 1); ++k) {
      owner += step;
      if (owner < 0 || owner > 0x7fffffff) return fail("owner_runs leave the device range");
      layer->add_owner(static_cast<uint32_t>(owner));
    }
  }
  layer->clear_owner_runs();
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
    if (full_layer >= full.layers_size() || IsCompact(layer) || layer.owner_runs_size() != 0) {
      return original;
    }
    const auto& owners = full.layers(full_layer).owner();
    const bool delta = plan.has_delta_base();
    if (!delta && layer.replicas_size() != owners.size()) return original;
    if (delta && layer.replicas_size() != layer.changed_experts_size()) return original;
    if (!EncodeLayer(owners, delta ? &layer.changed_experts() : nullptr, &layer)) return original;
    CompactOwners(&layer);
  }
  return plan;
}

absl::StatusOr<v1::Plan> ApplyDelta(const v1::Plan& base, const v1::Plan& compact_delta) {
  bool compact_owners = false;
  for (const v1::LayerPlan& layer : compact_delta.layers()) {
    compact_owners = compact_owners || layer.owner_runs_size() != 0;
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
    for (v1::LayerPlan& layer : *out.mutable_layers()) {
      if (compact && IsCompact(layer)) {
        const google::protobuf::RepeatedField<uint32_t> owners = layer.owner();
        if (absl::Status s = ExpandLayer(owners, nullptr, &layer); !s.ok()) return s;
      }
      // A whole plan has a holder list for every expert.
      if (layer.replicas_size() != layer.owner_size()) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", layer.layer(), ": ",
                                                       layer.replicas_size(), " holder lists for ",
                                                       layer.owner_size(), " experts"));
      }
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
      expanded.set_holders_coded(d.holders_coded());
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
