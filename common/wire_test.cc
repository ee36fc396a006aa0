#include "common/wire.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
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
    EXPECT_EQ(layer.holder_counts_size(), layer.owner_deltas_size());
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
      EXPECT_EQ(layer.holder_counts_size(), layer.changed_experts_size());
      compact_deltas += layer.holder_counts_size() > 0;
      EXPECT_EQ(layer.owner_size(), 0);  // a re-shard's owners go as deltas too
      owner_changes += layer.owner_deltas_size() > 0;
    }
    absl::StatusOr<v1::Plan> rebuilt = ApplyDelta(base, compact_delta);
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ(rebuilt->SerializeAsString(), next_proto.SerializeAsString()) << "iteration " << i;
    base = next_proto;
  }
  EXPECT_GT(compact_deltas, 0) << "the drifting loads should change some holders";
  EXPECT_EQ(owner_changes, 2) << "the re-shards of iterations 3 and 6";
}

// Malformed compact lists are INVALID_ARGUMENT; a holder list that CompactHolders cannot code
// (owner missing) leaves the plan as it was.
TEST(WireTest, MalformedCompactHoldersAreRejected) {
  v1::Plan plan;
  plan.mutable_id()->set_version(1);
  v1::LayerPlan* layer = plan.add_layers();
  layer->add_owner(2);
  layer->add_owner(0);
  for (const std::vector<uint32_t>& holders : {std::vector<uint32_t>{1, 2, 5}, {0}}) {
    v1::ExpertReplicas* r = layer->add_replicas();
    for (uint32_t d : holders) r->add_devices(d);
  }
  const v1::Plan good = CompactHolders(plan, plan);
  ASSERT_EQ(good.layers(0).holder_counts_size(), 2);
  EXPECT_EQ(good.layers(0).holder_counts(0), 2u);  // 1 and 5 besides owner 2
  EXPECT_EQ(good.layers(0).holder_gaps(1), 4u);    // 1, then +4 = 5
  EXPECT_EQ(good.layers(0).owner_size(), 0);
  EXPECT_THAT(good.layers(0).owner_deltas(), ElementsAre(2, -2));  // owners 2, 0
  EXPECT_EQ(ApplyDelta(plan, good)->SerializeAsString(), plan.SerializeAsString());
  auto rejected = [&](const std::function<void(v1::LayerPlan*)>& edit) {
    v1::Plan bad = good;
    edit(bad.mutable_layers(0));
    return ApplyDelta(plan, bad).status().code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_holder_counts(0); }));  // 3 counts, 2 experts
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_holder_counts(0, 3); }));  // past the gaps
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_holder_gaps(7); }));       // gaps left over
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_holder_gaps(1, 0); }));    // repeated holder
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_holder_gaps(0, 2); }));    // the owner listed
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_replicas()->add_devices(0); }));  // both forms
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_holder_gaps(1, 0xffffffffu); }));  // overflow
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_owner(2); }));             // both owner forms
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->set_owner_deltas(1, -3); }));  // owner -1
  EXPECT_TRUE(rejected([](v1::LayerPlan* l) { l->add_owner_deltas(0); }));      // 3 owners, 2 lists
  // A delta whose compact lists name more experts than it changed.
  v1::Plan delta = MakeDelta(plan, plan);
  v1::LayerPlan* d = delta.add_layers();
  d->set_layer(0);
  d->add_changed_experts(1);
  d->add_holder_counts(0);
  d->add_holder_counts(0);
  EXPECT_EQ(ApplyDelta(plan, delta).status().code(), absl::StatusCode::kInvalidArgument);
  d->mutable_holder_counts()->RemoveLast();
  EXPECT_TRUE(ApplyDelta(plan, delta).ok());
  // Not codable: expert 1's list lacks its owner (0).
  v1::Plan no_owner = plan;
  no_owner.mutable_layers(0)->mutable_replicas(1)->set_devices(0, 3);
  EXPECT_EQ(CompactHolders(no_owner, no_owner).SerializeAsString(), no_owner.SerializeAsString());
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
