#include "sim/workloads.h"

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "sim/configs.h"

namespace hecate::sim {
namespace {

namespace pl = placement;

std::string Config(const std::string& name) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/hecate/sim/configs/" + name;
}

// The solved workloads hit their EP imbalance at two expert and device counts.
TEST(WorkloadsTest, SkewIsSolvedAtTheSimulatedExpertCount) {
  for (const auto& [cluster_file, model_file] :
       {std::pair<std::string, std::string>{"cluster_a_32.json", "gpt_moe_s_64.json"},
        {"cluster_b_16.json", "bert_moe_32.json"}}) {
    absl::StatusOr<pl::Cluster> c = LoadCluster(Config(cluster_file));
    absl::StatusOr<pl::ModelSpec> m = LoadModel(Config(model_file));
    ASSERT_TRUE(c.ok() && m.ok());
    const std::vector<Workload> all = NamedWorkloads(*c, *m, nullptr);
    ASSERT_EQ(all.size(), 5u);
    for (const Workload& w : all) {
      SCOPED_TRACE(cluster_file + " " + w.name);
      EXPECT_FALSE(w.source.empty());
      if (w.name == "balanced") {
        EXPECT_LT(w.ep_max_mean, 1.25);
      } else if (w.name == "mild") {
        EXPECT_NEAR(w.ep_max_mean, 1.30, 0.03);
      } else if (w.name == "heavy") {
        EXPECT_NEAR(w.ep_max_mean, 4.01, 0.08);
      }
      if (w.name == "rotating") {
        EXPECT_NEAR(w.ep_max_mean, 2.28, 0.05);
        EXPECT_GT(w.options.drift_per_iteration, 0);
      }
    }
  }
}

TEST(WorkloadsTest, BurstsGiveOneExpertTheirShareOnlyDuringABurst) {
  const pl::Cluster c = pl::Cluster::Uniform(1, 4, int64_t{1} << 30, 1e12, 1e11, 1e10);
  const pl::ModelSpec m = pl::UniformModel("toy", 1, 16, 2, 64, 128, 4, 256, 1e-3);
  pl::SkewOptions o;
  o.zipf_s = 0;
  o.source_noise = 0;
  o.burst_period = 10;
  o.burst_length = 2;
  o.burst_share = 0.5;
  auto max_share = [&](uint64_t i) {
    const std::vector<int64_t> t = pl::SkewedLoad(c, m, o, i)[0].ExpertTotals();
    int64_t all = 0, top = 0;
    for (int64_t x : t) {
      all += x;
      top = std::max(top, x);
    }
    return static_cast<double>(top) / all;
  };
  for (uint64_t i : {0, 1, 10, 11}) EXPECT_GT(max_share(i), 0.5) << i;
  for (uint64_t i : {2, 9, 12}) EXPECT_LT(max_share(i), 0.1) << i;
}

TEST(WorkloadsTest, TrainerOnlyWithAFitAndUnknownNamesAreNotFound) {
  const pl::Cluster c = pl::Cluster::Uniform(1, 4, int64_t{1} << 30, 1e12, 1e11, 1e10);
  const pl::ModelSpec m = pl::UniformModel("toy", 1, 16, 2, 64, 128, 4, 256, 1e-3);
  GeneratorFit fit;
  fit.zipf_s = 1.3;
  fit.drift_per_iteration = 0.1;
  absl::StatusOr<Workload> w = FindWorkload("trainer", c, m, &fit);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_DOUBLE_EQ(w->options.zipf_s, 1.3);
  EXPECT_EQ(FindWorkload("trainer", c, m, nullptr).status().code(), absl::StatusCode::kNotFound);
  absl::Status s = FindWorkload("spiky", c, m, &fit).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("balanced, mild, heavy, rotating, bursts, trainer"), std::string::npos)
      << s;
}

}  // namespace
}  // namespace hecate::sim
