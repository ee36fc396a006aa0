#include "worker/planner_assumptions.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace hecate::worker {
namespace {

namespace pl = placement;

TEST(PlannerAssumptionsTest, EachOutOfRangeFieldIsNamed) {
  EXPECT_TRUE(ValidateAssumptions(PlannerAssumptions{}).ok());
  const double nan = std::nan("");
  struct Case {
    PlannerAssumptions a;
    const char* field;
  };
  for (const Case& c :
       {Case{{-1, 20, 2, 0}, "attention_ms"}, Case{{nan, 20, 2, 0}, "attention_ms"},
        Case{{0.5, 0, 2, 0}, "device_gflops"}, Case{{0.5, 20, -2, 0}, "link_gbytes"},
        Case{{0.5, 20, nan, 0}, "link_gbytes"}, Case{{0.5, 20, 2, -0.1}, "copy_overhead_ms"}}) {
    const absl::Status s = ValidateAssumptions(c.a);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(s.message()), ::testing::StartsWith(c.field));
  }
}

TEST(PlannerAssumptionsTest, ClusterCarriesTheAssumedRates) {
  const PlannerAssumptions a{0.5, 90, 2.4, 4};
  const pl::ClusterSpec spec = AssumedClusterSpec(a, {2, 3}, int64_t{1} << 30, false);
  ASSERT_EQ(spec.nodes.size(), 2u);
  EXPECT_EQ(spec.nodes[0].num_devices, 2);
  EXPECT_EQ(spec.nodes[1].num_devices, 3);
  EXPECT_EQ(spec.nodes[1].name, "node1");
  EXPECT_EQ(spec.nodes[0].device_memory_bytes, int64_t{1} << 30);
  EXPECT_DOUBLE_EQ(spec.nodes[0].device_flops_per_second, 90e9);
  EXPECT_DOUBLE_EQ(spec.intra_node_bandwidth_bytes_per_second, 2.4e9);
  EXPECT_DOUBLE_EQ(spec.inter_node_bandwidth_bytes_per_second, 1.2e9);
  EXPECT_DOUBLE_EQ(spec.link_latency_seconds, kAssumedLinkLatencySeconds);
  EXPECT_FALSE(spec.transfers_overlap_compute);
  EXPECT_TRUE(AssumedClusterSpec(a, {1}, 1, true).transfers_overlap_compute);
  EXPECT_TRUE(pl::Cluster::Create(spec).ok());
}

TEST(PlannerAssumptionsTest, ModelTakesAttentionAndCopyOverhead) {
  pl::ModelSpec model = pl::UniformModel("m", 3, 8, 2, 64, 128, 4, 256, 0.1);
  ApplyAssumptions(PlannerAssumptions{0.25, 20, 2, 4}, model);
  EXPECT_DOUBLE_EQ(model.attention_forward_seconds, 0.25e-3);
  ASSERT_EQ(model.layers.size(), 3u);
  for (const pl::LayerSpec& l : model.layers) EXPECT_DOUBLE_EQ(l.copy_seconds, 4e-3);
}

}  // namespace
}  // namespace hecate::worker
