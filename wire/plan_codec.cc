#include "wire/plan_codec.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace hecate::wire {

namespace {

bool SameIds(const google::protobuf::RepeatedField<uint32_t>& a,
             const google::protobuf::RepeatedField<uint32_t>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

bool SamePrediction(const v1::LayerPrediction& a, const v1::LayerPrediction& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

}  // namespace

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
  if (delta.delta_base().epoch() != base.id().epoch() ||
      delta.delta_base().version() != base.id().version()) {
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
