#include "wire/convert.h"
#include "wire/plan_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "placement/policy.h"
#include "placement/synthetic.h"

namespace hecate::wire {
namespace {

using ::testing::ElementsAre;

// Consecutive hecate plans (ids 1.1, 1.2, ...), each from the previous one under loads that move
// every iteration; `edit` may change plan i >= 1 before it becomes the next one's base.
std::vector<placement::Plan> PlanSequence(
    const placement::Cluster& c, const placement::ModelSpec& m, const placement::SkewOptions& opt,
    int count, const std::function<void(uint64_t, placement::Plan*)>& edit) {
  auto policy = *placement::MakePolicy("hecate");
  std::vector<placement::Plan> plans;
  for (uint64_t i = 0; i < static_cast<uint64_t>(count); ++i) {
    const placement::ModelLoad load = placement::SkewedLoad(c, m, opt, i);
    placement::PlanRequest r{&c, &m, &load, plans.empty() ? nullptr : &plans.back()};
    r.iteration = i;
    placement::Plan next = policy->Compute(r);
    next.id = {1, i + 1};
    if (i > 0) edit(i, &next);
    plans.push_back(std::move(next));
  }
  return plans;
}

TEST(WireTest, PlanRoundTripIsExact) {
  placement::Cluster c = placement::Cluster::Uniform(2, 2, int64_t{1} << 30, 1e12, 1e11, 1e10);
  placement::ModelSpec m = placement::UniformModel("m", 2, 8, 2, 64, 128, 4, 256, 1e-3);
  placement::ModelLoad load = placement::SkewedLoad(c, m, placement::SkewOptions{}, 0);
  placement::Plan plan = (*placement::MakePolicy("hecate"))->Compute({&c, &m, &load});
  plan.job_id = "j";
  plan.id = {3, 9};
  plan.effective_iteration = 12;
  plan.migrations.push_back({0, 1, 3, plan.layers[0].owner[1], 77});
  placement::Plan back = FromProto(ToProto(plan));
  back.migrations = plan.migrations;  // migrations round-trip checked below
  EXPECT_EQ(back.layers.size(), plan.layers.size());
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    EXPECT_EQ(back.layers[l].owner, plan.layers[l].owner);
    EXPECT_EQ(back.layers[l].replicas, plan.layers[l].replicas);
    EXPECT_EQ(back.layers[l].remat, plan.layers[l].remat);
    EXPECT_EQ(back.prediction.layers[l].device_tokens, plan.prediction.layers[l].device_tokens);
  }
  EXPECT_EQ(back.id, plan.id);
  EXPECT_EQ(back.dispatch_rule, plan.dispatch_rule);
  EXPECT_EQ(FromProto(ToProto(plan)).migrations, plan.migrations);
  EXPECT_TRUE(placement::Validate(back, c, m).ok());
}

// Consecutive hecate plans under moving loads: the delta rebuilds the next plan byte for byte, is
// smaller, and refuses a base it was not made against.
TEST(WireTest, PlanDeltaRebuildsTheNextPlanExactly) {
  placement::Cluster c = placement::Cluster::Uniform(4, 4, int64_t{1} << 30, 1e13, 1e11, 1e10);
  placement::ModelSpec m = placement::UniformModel("m", 4, 16, 2, 64, 128, 4, 512, 1e-3);
  placement::SkewOptions opt;
  opt.zipf_s = 1.2;
  const std::vector<placement::Plan> plans =
      PlanSequence(c, m, opt, 13, [](uint64_t i, placement::Plan* next) {
        if (i % 5 == 0) std::swap(next->layers[1].owner[0], next->layers[1].owner[1]);  // re-shard
      });
  for (size_t i = 1; i < plans.size(); ++i) {
    const v1::Plan base_proto = ToProto(plans[i - 1]), next_proto = ToProto(plans[i]);
    const v1::Plan delta = MakeDelta(base_proto, next_proto);
    ASSERT_TRUE(delta.has_delta_base());
    absl::StatusOr<v1::Plan> rebuilt = ApplyDelta(base_proto, delta);
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ(rebuilt->SerializeAsString(), next_proto.SerializeAsString()) << "iteration " << i;
    EXPECT_LT(delta.ByteSizeLong(), next_proto.ByteSizeLong());
    // Against any other base: refused.
    EXPECT_EQ(ApplyDelta(next_proto, delta).status().code(), absl::StatusCode::kFailedPrecondition);
  }
  // A plan without a base applies as itself; a delta that does not fit is INVALID_ARGUMENT.
  const v1::Plan full = ToProto(plans.back());
  EXPECT_EQ(ApplyDelta(full, full)->SerializeAsString(), full.SerializeAsString());
  v1::Plan bad = MakeDelta(full, full);
  v1::LayerPlan* layer = bad.add_layers();
  layer->set_layer(0);
  layer->add_changed_experts(999);
  layer->add_replicas()->add_devices(0);
  EXPECT_EQ(ApplyDelta(full, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// Compact holder lists: full plans and deltas decode to exactly the replicas form, in fewer bytes
// (many devices, many holders per expert: the case they are for).
TEST(WireTest, CompactHoldersRebuildPlansAndDeltasExactly) {
  placement::Cluster c = placement::Cluster::Uniform(32, 8, int64_t{80} << 30, 4e14, 4.5e11, 4e11);
  placement::ModelSpec m = placement::UniformModel("m", 3, 16, 8, 1024, 2048, 2, 4096, 2e-3);
  placement::SkewOptions opt;
  opt.zipf_s = 1.0;
  opt.drift_per_iteration = 0.5;
  const std::vector<placement::Plan> plans =
      PlanSequence(c, m, opt, 9, [](uint64_t i, placement::Plan* next) {
        if (i % 3 != 0) return;
        // A re-shard: experts 0 and 5 swap owners, each new owner becoming a holder.
        placement::LayerPlan& lp = next->layers[2];
        std::swap(lp.owner[0], lp.owner[5]);
        for (int e : {0, 5}) {
          std::vector<placement::DeviceId>& h = lp.replicas[e];
          if (!std::binary_search(h.begin(), h.end(), lp.owner[e])) {
            h.insert(std::lower_bound(h.begin(), h.end(), lp.owner[e]), lp.owner[e]);
          }
        }
      });
  v1::Plan base = Lean(ToProto(plans[0]));
  const v1::Plan compact = CompactHolders(base, base);
  for (const v1::LayerPlan& layer : compact.layers()) {
    EXPECT_EQ(layer.replicas_size(), 0);
    EXPECT_EQ(layer.owner_size(), 0);
    EXPECT_FALSE(layer.holders_coded().empty());
    EXPECT_GT(layer.owner_runs_size(), 0);
  }
  EXPECT_LT(compact.ByteSizeLong(), base.ByteSizeLong() * 3 / 4);
  absl::StatusOr<v1::Plan> expanded = ApplyDelta(v1::Plan(), compact);
  ASSERT_TRUE(expanded.ok()) << expanded.status();
  EXPECT_EQ(expanded->SerializeAsString(), base.SerializeAsString());
  int compact_deltas = 0, owner_changes = 0;
  for (size_t i = 1; i < plans.size(); ++i) {
    const v1::Plan next_proto = Lean(ToProto(plans[i]));
    const v1::Plan delta = MakeDelta(base, next_proto);
    const v1::Plan compact_delta = CompactHolders(delta, next_proto);
    for (const v1::LayerPlan& layer : compact_delta.layers()) {
      EXPECT_EQ(layer.replicas_size(), 0);
      EXPECT_EQ(layer.holders_coded().empty(), layer.changed_experts_size() == 0);
      compact_deltas += !layer.holders_coded().empty();
      EXPECT_EQ(layer.owner_size(), 0);  // a re-shard's owners go as deltas too
      owner_changes += layer.owner_runs_size() > 0;
    }
    absl::StatusOr<v1::Plan> rebuilt = ApplyDelta(base, compact_delta);
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ(rebuilt->SerializeAsString(), next_proto.SerializeAsString()) << "iteration " << i;
    base = next_proto;
  }
  EXPECT_GT(compact_deltas, 0) << "the drifting loads should change some holders";
  EXPECT_EQ(owner_changes, 2) << "the re-shards of iterations 3 and 6";
}

// The code of a small layer, bit by bit; malformed codes are INVALID_ARGUMENT; a holder list that
// CompactHolders cannot code (owner missing) leaves the plan as it was.
TEST(WireTest, MalformedCompactHoldersAreRejected) {
  v1::Plan plan;
  plan.mutable_id()->set_version(1);
  v1::LayerPlan* layer = plan.add_layers();
  layer->add_owner(2);
  layer->add_owner(0);
  layer->mutable_prediction()->set_compute_seconds(0.5);
  for (const std::vector<uint32_t>& holders : {std::vector<uint32_t>{1, 2, 5}, {0}}) {
    v1::ExpertReplicas* r = layer->add_replicas();
    for (uint32_t d : holders) r->add_devices(d);
  }
  const v1::Plan good = CompactHolders(plan, plan);
  // U = 6: gamma 00110. Expert 0, holders 1 and 5 besides owner 2: gamma(3) 011, k = 1, Rice(1)
  // 01, Rice(5 - 1 - 1 = 3) 101. Expert 1, none besides owner 0: gamma(1) 1. Least significant bit
  // first: 0011 0011 | 0110 11(00).
  EXPECT_EQ(good.layers(0).holders_coded(), std::string("\xCC\x36", 2));
  EXPECT_EQ(good.layers(0).replicas_size(), 0);
  EXPECT_EQ(good.layers(0).owner_size(), 0);
  EXPECT_THAT(good.layers(0).owner_runs(), ElementsAre(2, 1, -2, 1));  // owners 2, 0
  EXPECT_EQ(ApplyDelta(plan, good)->SerializeAsString(), plan.SerializeAsString());
  auto rejected = [&](const std::function<void(v1::LayerPlan*)>& edit) {
    v1::Plan bad = good;
    edit(bad.mutable_layers(0));
    return ApplyDelta(plan, bad).status().code() == absl::StatusCode::kInvalidArgument;
  };
  const auto code = [](const char* bytes, size_t n) {
    return [=](v1::LayerPlan* l) { l->set_holders_coded(std::string(bytes, n)); };
  };
  EXPECT_TRUE(rejected(code("\xCC", 1)));                  // ends early
  EXPECT_TRUE(rejected(code("\xCC\x36\x00", 3)));          // a byte left over
  EXPECT_TRUE(rejected(code("\xCC\xB6", 2)));              // a pad bit set
  EXPECT_TRUE(rejected(code("\x0D", 1)));                  // U = 1, then 2 holders
  EXPECT_TRUE(rejected(code("\x52\x01", 2)));              // U = 2, holder 3
  EXPECT_TRUE(rejected(code("\x00\x00\x00\x00\x01", 5)));  // U = 2^32
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) {              // owners 1, 0: holder 1 is the owner
    l->set_owner_runs(0, 1);
    l->set_owner_runs(2, -1);
  }));
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_replicas()->add_devices(0); }));  // both forms
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_owner(2); }));           // both owner forms
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_owner_runs(2, -3); }));  // owner -1
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_owner_runs(1, 2); }));   // 3 owners, 2 lists
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_owner_runs(1); }));      // not pairs
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_owner_runs(1, 0); }));   // an empty run
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_owner_runs(1, 1 << 30); }));  // too many
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->clear_holders_coded(); }));  // no holder lists
  // A delta whose code lists more experts than it changed.
  v1::Plan next = plan;
  next.mutable_id()->set_version(2);
  next.mutable_layers(0)->mutable_replicas(1)->add_devices(4);
  const v1::Plan delta = CompactHolders(MakeDelta(plan, next), next);
  ASSERT_THAT(delta.layers(0).changed_experts(), ElementsAre(1));
  EXPECT_EQ(ApplyDelta(plan, delta)->SerializeAsString(), next.SerializeAsString());
  v1::Plan bad_delta = delta;
  bad_delta.mutable_layers(0)->set_holders_coded(good.layers(0).holders_coded());
  EXPECT_EQ(ApplyDelta(plan, bad_delta).status().code(), absl::StatusCode::kInvalidArgument);
  // Not codable: expert 1's list lacks its owner (0).
  v1::Plan no_owner = plan;
  no_owner.mutable_layers(0)->mutable_replicas(1)->set_devices(0, 3);
  EXPECT_EQ(CompactHolders(no_owner, no_owner).SerializeAsString(), no_owner.SerializeAsString());
}

// Corrupted codes (a flipped bit, a cut, a byte appended) of real plans either decode into
// well-formed holder lists (ascending, each with its owner, within the coded device range) or are
// INVALID_ARGUMENT; nothing else.
TEST(WireTest, CorruptedHolderCodesDecodeWellFormedOrFail) {
  placement::Cluster c = placement::Cluster::Uniform(64, 8, int64_t{80} << 30, 4e14, 4.5e11, 4e11);
  placement::ModelSpec m = placement::UniformModel("m", 2, 16, 4, 1024, 2048, 2, 4096, 2e-3);
  placement::SkewOptions opt;
  opt.zipf_s = 1.2;
  const std::vector<placement::Plan> plans = PlanSequence(c, m, opt, 1, [](uint64_t, auto*) {});
  const v1::Plan proto = Lean(ToProto(plans[0]));
  const v1::Plan compact = CompactHolders(proto, proto);
  std::mt19937 rng(7);
  int rejected = 0, decoded = 0;
  for (int trial = 0; trial < 600; ++trial) {
    v1::Plan bad = compact;
    std::string& bits = *bad.mutable_layers(trial % 2)->mutable_holders_coded();
    ASSERT_FALSE(bits.empty());
    switch (trial % 3) {
      case 0:
        bits[rng() % bits.size()] ^= static_cast<char>(1 << (rng() % 8));
        break;
      case 1:
        bits.resize(rng() % bits.size());
        break;
      default:
        bits.push_back(static_cast<char>(rng() % 256));
        break;
    }
    absl::StatusOr<v1::Plan> out = ApplyDelta(v1::Plan(), bad);
    if (!out.ok()) {
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
      ++rejected;
      continue;
    }
    ++decoded;
    for (const v1::LayerPlan& layer : out->layers()) {
      ASSERT_EQ(layer.replicas_size(), layer.owner_size());
      for (int e = 0; e < layer.replicas_size(); ++e) {
        const auto& devices = layer.replicas(e).devices();
        EXPECT_TRUE(std::is_sorted(devices.begin(), devices.end()));
        EXPECT_EQ(std::adjacent_find(devices.begin(), devices.end()), devices.end());
        EXPECT_NE(std::find(devices.begin(), devices.end(), layer.owner(e)), devices.end());
      }
    }
  }
  EXPECT_GT(rejected, 300) << "most corruptions should not decode";
  EXPECT_GT(decoded, 0) << "a flipped low bit of an id still decodes";
}

TEST(WireTest, SpecsRoundTripAndJson) {
  placement::ModelSpec m = placement::UniformModel("gpt", 3, 16, 2, 64, 128, 4, 256, 2e-3);
  m.layers[2].copy_seconds = 4e-3;
  placement::ModelSpec back = FromProto(ToProto(m));
  EXPECT_EQ(back.layers.size(), 3u);
  EXPECT_EQ(back.layers[1].expert_param_bytes, m.layers[1].expert_param_bytes);
  EXPECT_EQ(back.layers[1].copy_seconds, 0);
  EXPECT_EQ(back.layers[2].copy_seconds, 4e-3);
  EXPECT_EQ(back.attention_forward_seconds, 2e-3);
  v1::ModelSpec parsed;
  ASSERT_TRUE(FromJson(ToJson(ToProto(m)), &parsed).ok());
  EXPECT_EQ(parsed.layers_size(), 3);
  EXPECT_EQ(FromJson("{nope", &parsed).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadJsonFile("/nonexistent/x.json", &parsed).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace hecate::wire
