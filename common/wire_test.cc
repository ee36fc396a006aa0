#include "common/wire.h"

#include <gtest/gtest.h>

#include "placement/policy.h"
#include "placement/synthetic.h"

namespace hecate::wire {
namespace {

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
  auto policy = *placement::MakePolicy("hecate");
  placement::SkewOptions opt;
  opt.zipf_s = 1.2;
  placement::ModelLoad load = placement::SkewedLoad(c, m, opt, 0);
  placement::Plan previous = policy->Compute({&c, &m, &load});
  previous.id = {1, 1};
  for (uint64_t i = 1; i <= 12; ++i) {
    load = placement::SkewedLoad(c, m, opt, i);
    placement::PlanRequest r{&c, &m, &load, &previous};
    r.iteration = i;
    placement::Plan next = policy->Compute(r);
    next.id = {1, i + 1};
    if (i % 5 == 0) std::swap(next.layers[1].owner[0], next.layers[1].owner[1]);  // a re-shard
    const v1::Plan base_proto = ToProto(previous), next_proto = ToProto(next);
    const v1::Plan delta = MakeDelta(base_proto, next_proto);
    ASSERT_TRUE(delta.has_delta_base());
    absl::StatusOr<v1::Plan> rebuilt = ApplyDelta(base_proto, delta);
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ(rebuilt->SerializeAsString(), next_proto.SerializeAsString()) << "iteration " << i;
    EXPECT_LT(delta.ByteSizeLong(), next_proto.ByteSizeLong());
    // Against any other base: refused.
    EXPECT_EQ(ApplyDelta(next_proto, delta).status().code(), absl::StatusCode::kFailedPrecondition);
    previous = std::move(next);
  }
  // A plan without a base applies as itself; a delta that does not fit is INVALID_ARGUMENT.
  const v1::Plan full = ToProto(previous);
  EXPECT_EQ(ApplyDelta(full, full)->SerializeAsString(), full.SerializeAsString());
  v1::Plan bad = MakeDelta(full, full);
  v1::LayerPlan* layer = bad.add_layers();
  layer->set_layer(0);
  layer->add_changed_experts(999);
  layer->add_replicas()->add_devices(0);
  EXPECT_EQ(ApplyDelta(full, bad).status().code(), absl::StatusCode::kInvalidArgument);
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
