#include "worker/fssdp/apply_plan.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "placement/policy.h"
#include "placement/sharding.h"
#include "worker/comm/fake_communicator.h"
#include "worker/fssdp/moe_layer.h"

namespace hecate::worker {
namespace {

namespace pl = placement;

constexpr int kExperts = 8;

// Experts 0..5 on device 0, 6 and 7 on devices 1 and 2, none on device 3: device 0 has the least
// memory left for copies.
pl::Plan UnevenPlan(int layers, pl::ReplicaSemantics semantics) {
  pl::Plan plan;
  plan.policy = semantics == pl::ReplicaSemantics::kShadow ? "fastermoe" : "hecate";
  plan.semantics = semantics;
  for (int l = 0; l < layers; ++l) {
    pl::LayerPlan layer;
    for (int e = 0; e < kExperts; ++e) {
      const int owner = e < 6 ? 0 : e - 5;
      layer.owner.push_back(owner);
      layer.replicas.push_back({owner});
    }
    plan.layers.push_back(layer);
  }
  return plan;
}

pl::ModelSpec Model(int layers) {
  return pl::UniformModel("test", layers, kExperts, 2, 16, 32, 4, 64, 0);
}

TEST(ShadowBudgetTest, TheTightestDevicesCopiesUnderShadowsAndNoneOtherwise) {
  const pl::ModelSpec model = Model(2);
  const int64_t expert_bytes =
      model.layers[0].expert_param_bytes + model.layers[0].expert_optimizer_bytes;
  const pl::Cluster cluster = pl::Cluster::Uniform(1, 4, 40 * expert_bytes, 1e9, 1e9, 1e9);
  const pl::Plan shadow = UnevenPlan(2, pl::ReplicaSemantics::kShadow);
  const std::vector<int> budget =
      pl::CopyBudget(cluster, model, pl::OwnersOf(shadow), shadow.semantics, pl::RematMode::kKeep,
                     /*cap=*/-1);
  ASSERT_EQ(budget.size(), 4u);
  ASSERT_LT(budget[0], budget[3]);  // the owners' memory differs, so does the room for copies
  EXPECT_EQ(ShadowBudget(shadow, cluster, model), budget[0]);
  EXPECT_GT(ShadowBudget(shadow, cluster, model), 0);
  EXPECT_EQ(ShadowBudget(UnevenPlan(2, pl::ReplicaSemantics::kEphemeral), cluster, model), 0);
  EXPECT_EQ(ShadowBudget(UnevenPlan(2, pl::ReplicaSemantics::kPersistent), cluster, model), 0);
}

class ApplyPlanTest : public ::testing::Test {
 protected:
  ApplyPlanTest()
      : group_(1), cluster_(pl::Cluster::Uniform(1, 1, int64_t{1} << 30, 1e9, 1e9, 1e9)) {
    MoEConfig c;
    c.d_model = 16;
    c.d_ffn = 32;
    c.num_experts = kExperts;
    c.top_k = 2;
    for (int l = 0; l < 2; ++l) {
      owned_.push_back(std::make_unique<MoELayer>(l, c, group_.rank(0), &cluster_, nullptr, 1));
      layers_.push_back(owned_.back().get());
    }
  }

  static pl::Plan OneDevicePlan(int layers) {
    pl::Plan plan;
    plan.policy = "hecate";
    for (int l = 0; l < layers; ++l) {
      pl::LayerPlan layer;
      layer.owner.assign(kExperts, 0);
      for (int e = 0; e < kExperts; ++e) layer.replicas.push_back({0});
      plan.layers.push_back(layer);
    }
    return plan;
  }

  InProcessGroup group_;
  pl::Cluster cluster_;
  std::vector<std::unique_ptr<MoELayer>> owned_;
  std::vector<MoELayer*> layers_;
};

TEST_F(ApplyPlanTest, EveryLayerAdoptsItsLayerPlan) {
  pl::Plan plan = OneDevicePlan(2);
  plan.layers[1].remat = pl::RematMode::kRegather;
  ASSERT_TRUE(ApplyPlanToLayers(plan, cluster_, Model(2), layers_).ok());
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(layers_[l]->plan(), plan.layers[l]) << l;
    EXPECT_EQ(layers_[l]->OwnedExperts().size(), size_t{kExperts}) << l;
  }
  EXPECT_FALSE(layers_[0]->rematerialized());
  EXPECT_TRUE(layers_[1]->rematerialized());
}

TEST_F(ApplyPlanTest, ALayerCountOtherThanTheModelsIsRefusedWithNoLayerTouched) {
  const absl::Status s = ApplyPlanToLayers(OneDevicePlan(3), cluster_, Model(3), layers_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("plan has 3 layers, model has 2"), std::string::npos) << s;
  for (MoELayer* layer : layers_) {
    EXPECT_TRUE(layer->plan().owner.empty());
    EXPECT_TRUE(layer->OwnedExperts().empty());
  }
}

}  // namespace
}  // namespace hecate::worker
