#include "placement/plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/load.h"

namespace hecate::placement {
namespace {

using ::testing::HasSubstr;

Cluster Four() { return Cluster::Uniform(2, 2, 1 << 30, 1e12, 1e11, 1e10); }

ModelSpec TwoExperts() {
  ModelSpec m;
  m.top_k = 1;
  m.layers.push_back(LayerSpec{2, 100, 600, 1});
  return m;
}

Plan Good() {
  Plan p;
  LayerPlan l;
  l.owner = {0, 3};
  l.replicas = {{0, 2}, {3}};
  p.layers.push_back(l);
  return p;
}

TEST(ValidateTest, AcceptsAGoodPlan) { EXPECT_TRUE(Validate(Good(), Four(), TwoExperts()).ok()); }

TEST(ValidateTest, NamesEachViolation) {
  struct Case {
    std::string what;
    std::function<void(Plan&)> mutate;
    std::string message;
  };
  std::vector<Case> cases = {
      {"layer count", [](Plan& p) { p.layers.push_back(p.layers[0]); }, "layers"},
      {"owner count", [](Plan& p) { p.layers[0].owner.push_back(1); }, "owners"},
      {"owner range", [](Plan& p) { p.layers[0].owner[1] = 4; }, "not a device"},
      {"holder range",
       [](Plan& p) {
         p.layers[0].replicas[0] = {0, 7};
       },
       "not a device"},
      {"two copies",
       [](Plan& p) {
         p.layers[0].replicas[0] = {0, 0};
       },
       "two copies"},
      {"unsorted",
       [](Plan& p) {
         p.layers[0].replicas[0] = {2, 0};
       },
       "ascending"},
      {"owner missing", [](Plan& p) { p.layers[0].replicas[1] = {2}; }, "holds no copy"},
      {"bad migration",
       [](Plan& p) {
         p.migrations.push_back(Migration{0, 1, 0, 1, 700});
       },
       "holder"},
  };
  for (const Case& c : cases) {
    Plan p = Good();
    c.mutate(p);
    absl::Status s = Validate(p, Four(), TwoExperts());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.message)) << c.what;
  }
}

TEST(DiffTest, ListsOwnerMovesAndReplicaChanges) {
  Plan a = Good();
  Plan b = Good();
  b.layers[0].owner = {1, 3};
  b.layers[0].replicas = {{1}, {0, 3}};
  PlanDiff d;
  ASSERT_TRUE(Diff(a, b, TwoExperts(), &d).ok());
  ASSERT_EQ(d.owner_changes.size(), 1u);
  EXPECT_EQ(d.owner_changes[0], (Migration{0, 0, 0, 1, 700}));
  EXPECT_EQ(d.migration_bytes, 700);
  // Expert 0: +1 -0 -2; expert 1: +0.
  EXPECT_EQ(d.replica_changes.size(), 4u);
  EXPECT_EQ(d.added_replica_bytes, 100);  // only expert 1's new copy on device 0 is a gather
  EXPECT_EQ(d.layers_changed, 1);

  Plan c = Good();
  c.layers.push_back(c.layers[0]);
  EXPECT_EQ(Diff(a, c, TwoExperts(), &d).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PlanIdTest, OrdersByEpochThenVersion) {
  EXPECT_LT((PlanId{1, 9}), (PlanId{2, 1}));
  EXPECT_LT((PlanId{2, 1}), (PlanId{2, 2}));
  EXPECT_EQ((PlanId{2, 2}), (PlanId{2, 2}));
  EXPECT_TRUE((PlanId{}).is_zero());
}

TEST(LoadWindowTest, SlidingMeanAndShapeChecks) {
  LoadWindow w(2);
  ModelLoad a = {LoadMatrix(2, 2)};
  a[0].at(0, 0) = 10;
  ModelLoad b = a;
  b[0].at(0, 0) = 20;
  ModelLoad c = a;
  c[0].at(0, 0) = 40;
  ASSERT_TRUE(w.Push(a).ok());
  ASSERT_TRUE(w.Push(b).ok());
  EXPECT_EQ(w.Estimate()[0].at(0, 0), 15);
  ASSERT_TRUE(w.Push(c).ok());  // a falls out
  EXPECT_EQ(w.Estimate()[0].at(0, 0), 30);
  EXPECT_EQ(w.ExpertMeans(0)[0], 30.0);
  ModelLoad wrong = {LoadMatrix(3, 2)};
  EXPECT_EQ(w.Push(wrong).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.size(), 2);
  EXPECT_EQ(w.Estimate()[0].at(0, 0), 30);  // unchanged by the rejected push
}

// One layer, two experts, one device: expert 0 gets `hot`, expert 1 a steady 10.
ModelLoad TwoExperts(int64_t hot) {
  LoadMatrix m(1, 2);
  m.at(0, 0) = hot;
  m.at(0, 1) = 10;
  return {m};
}

TEST(LoadWindowTest, HorizonKeepsTheWholeWindowForAStationaryLoad) {
  LoadWindow w(5);
  for (int64_t hot : {10, 30, 10, 30}) ASSERT_TRUE(w.Push(TwoExperts(hot)).ok());
  // 4 iterations: k = 1, 2 are backtested on iterations 2 and 3. The mean of the 2 before is off
  // by 10 on each (20 against 10, then 30), the last value alone by 20: k = 2, the longest
  // tested, stands for the whole window.
  EXPECT_EQ(w.Snapshot().Horizon(0), 4);
  EXPECT_EQ(w.Estimate()[0].at(0, 0), 20);
  // A constant load ties every k: the whole window.
  LoadWindow flat(5);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(flat.Push(TwoExperts(40)).ok());
  EXPECT_EQ(flat.Snapshot().Horizon(0), 5);
}

TEST(LoadWindowTest, HorizonFollowsAMovedHotSet) {
  LoadWindow w(5);
  for (int64_t hot : {10, 10, 10, 50, 50}) ASSERT_TRUE(w.Push(TwoExperts(hot)).ok());
  // Backtest errors on iterations 3 and 4: k = 3: 40 + 26.7; k = 2: 40 + 20; k = 1: 40 + 0.
  EXPECT_EQ(w.Snapshot().Horizon(0), 1);
  EXPECT_EQ(w.Estimate()[0].at(0, 0), 50);  // the window mean would say 26
  EXPECT_EQ(w.Estimate()[0].at(0, 1), 10);
  // Fewer than 3 iterations: nothing to backtest, the plain mean.
  LoadWindow two(5);
  for (int64_t hot : {10, 50}) ASSERT_TRUE(two.Push(TwoExperts(hot)).ok());
  EXPECT_EQ(two.Snapshot().Horizon(0), 2);
  EXPECT_EQ(two.Estimate()[0].at(0, 0), 30);
}

TEST(LoadWindowTest, GivenTotalsMustMatchTheLoad) {
  LoadWindow w(5);
  ASSERT_TRUE(w.Push(TwoExperts(10)).ok());
  auto load = std::make_shared<const ModelLoad>(TwoExperts(50));
  auto wrong = std::make_shared<const LayerTotals>(LayerTotals{{50, 10, 0}});
  EXPECT_EQ(w.Push(load, nullptr, wrong).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.size(), 1);
  auto right = std::make_shared<const LayerTotals>(TotalsOf(*load));
  ASSERT_TRUE(w.Push(load, nullptr, right).ok());
  EXPECT_EQ(w.size(), 2);
  EXPECT_EQ(w.ExpertMeans(0), (std::vector<double>{30, 10}));
}

TEST(LoadWindowTest, SnapshotsStayFixedAndEvictionsComeBack) {
  LoadWindow w(2);
  auto make = [](int64_t v) {
    auto m = std::make_shared<ModelLoad>(ModelLoad{LoadMatrix(2, 2)});
    (*m)[0].at(1, 1) = v;
    return std::shared_ptr<const ModelLoad>(std::move(m));
  };
  EXPECT_TRUE(w.Snapshot().Estimate().empty());
  std::shared_ptr<const ModelLoad> evicted;
  std::shared_ptr<const ModelLoad> first = make(10);
  ASSERT_TRUE(w.Push(first, &evicted).ok());
  EXPECT_EQ(evicted, nullptr);
  ASSERT_TRUE(w.Push(make(20), &evicted).ok());
  EXPECT_EQ(evicted, nullptr);
  const WindowSnapshot snap = w.Snapshot();
  ASSERT_TRUE(w.Push(make(40), &evicted).ok());
  EXPECT_EQ(evicted, first);                   // the oldest came back, for recycling
  EXPECT_EQ(snap.Estimate()[0].at(1, 1), 15);  // taken before the push: unchanged
  EXPECT_EQ(w.Estimate()[0].at(1, 1), 30);
  EXPECT_EQ(w.Snapshot().Estimate()[0].at(1, 1), 30);
  // A rejected push changes nothing and evicts nothing.
  ASSERT_FALSE(
      w.Push(std::make_shared<const ModelLoad>(ModelLoad{LoadMatrix(3, 2)}), &evicted).ok());
  EXPECT_EQ(evicted, nullptr);
  EXPECT_EQ(w.Estimate()[0].at(1, 1), 30);
}

TEST(LoadTest, SpreadOverSourcesKeepsTotals) {
  LoadMatrix m = SpreadOverSources({10, 3, 0}, 4);
  EXPECT_EQ(m.ExpertTotals(), (std::vector<int64_t>{10, 3, 0}));
  for (DeviceId d = 0; d < 4; ++d) EXPECT_LE(m.at(d, 0), 3);
}

TEST(ClusterTest, CreateValidates) {
  ClusterSpec spec;
  EXPECT_EQ(Cluster::Create(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.nodes = {{"a", 2, 1 << 20, 1e12}, {"b", 3, 1 << 20, 1e12}};
  spec.intra_node_bandwidth_bytes_per_second = 1e11;
  spec.inter_node_bandwidth_bytes_per_second = 0;
  EXPECT_EQ(Cluster::Create(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.inter_node_bandwidth_bytes_per_second = 1e10;
  auto c = Cluster::Create(spec);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->num_devices(), 5);
  EXPECT_EQ(c->node_of(2), 1);
  EXPECT_EQ(c->devices_of(1), (std::vector<DeviceId>{2, 3, 4}));
  EXPECT_EQ(c->overlap_bw(), 1e10);
  spec.nodes[1].num_devices = 0;
  EXPECT_EQ(Cluster::Create(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelTest, ValidateAndUniformModel) {
  ModelSpec m = UniformModel("s", 12, 64, 2, 768, 1536, 2, 4096, 1e-3);
  EXPECT_TRUE(m.Validate().ok());
  EXPECT_EQ(m.total_experts(), 768);
  EXPECT_EQ(m.layers[0].expert_param_bytes, 2 * 768 * 1536 * 2);
  EXPECT_EQ(m.layers[0].expert_optimizer_bytes, 2 * 768 * 1536 * 12);
  m.top_k = 65;
  EXPECT_EQ(m.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace hecate::placement
