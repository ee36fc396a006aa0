#include "controller/metrics/controller_metrics.h"

#include <gtest/gtest.h>

#include <set>

#include "prometheus/registry.h"

namespace hecate::controller {
namespace {

placement::ModelLoad Load(int layers, int experts) {
  placement::ModelLoad load;
  for (int l = 0; l < layers; ++l) {
    placement::LoadMatrix m(2, experts);
    m.at(0, 0) = 5;
    load.push_back(m);
  }
  return load;
}

// Series of `family` whose `job_id` label is `job`.
int Series(prometheus::Registry& registry, const std::string& family, const std::string& job) {
  int n = 0;
  for (const prometheus::MetricFamily& f : registry.Collect()) {
    if (f.name != family) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      for (const prometheus::ClientMetric::Label& l : m.label) {
        if (l.name == "job_id" && l.value == job) ++n;
      }
    }
  }
  return n;
}

TEST(ControllerMetricsTest, PerExpertSeriesFollowTheDetailMode) {
  auto registry = std::make_shared<prometheus::Registry>();
  ControllerMetrics auto_metrics(registry, ExpertDetail::kAuto, "test");
  auto_metrics.ExpertTokens("small", Load(4, 16));    // 64 cells: exported
  auto_metrics.ExpertTokens("large", Load(80, 256));  // 20,480 cells: over the cap
  EXPECT_EQ(Series(*registry, "hecate_expert_tokens_total", "small"), 64);
  EXPECT_EQ(Series(*registry, "hecate_expert_tokens_total", "large"), 0);

  auto on_registry = std::make_shared<prometheus::Registry>();
  ControllerMetrics on(on_registry, ExpertDetail::kOn, "test");
  on.ExpertTokens("large", Load(80, 256));
  EXPECT_EQ(Series(*on_registry, "hecate_expert_tokens_total", "large"), 80 * 256);

  auto off_registry = std::make_shared<prometheus::Registry>();
  ControllerMetrics off(off_registry, ExpertDetail::kOff, "test");
  off.ExpertTokens("small", Load(4, 16));
  EXPECT_EQ(Series(*off_registry, "hecate_expert_tokens_total", "small"), 0);
}

TEST(ControllerMetricsTest, ParsesTheDetailFlag) {
  ExpertDetail d = ExpertDetail::kOff;
  EXPECT_TRUE(ParseExpertDetail("auto", &d));
  EXPECT_EQ(d, ExpertDetail::kAuto);
  EXPECT_TRUE(ParseExpertDetail("on", &d));
  EXPECT_EQ(d, ExpertDetail::kOn);
  EXPECT_FALSE(ParseExpertDetail("yes", &d));
  EXPECT_EQ(d, ExpertDetail::kOn) << "unchanged on bad input";
}

// Prometheus attaches `job` and `instance` to every scraped series; a metric label of the same
// name would be renamed `exported_job` and every documented query would match nothing.
TEST(ControllerMetricsTest, NoLabelCollidesWithPrometheusTargetLabels) {
  auto registry = std::make_shared<prometheus::Registry>();
  ControllerMetrics metrics(registry, ExpertDetail::kOn, "test");
  placement::Plan plan;
  metrics.PlanPublished("j", plan, 1.0, true);
  metrics.Observed("j", {LayerObservation{}});
  metrics.ExpertTokens("j", Load(1, 2));
  metrics.Workers(1, 0, 0);
  metrics.Report(ReportResult::kAccepted);
  const std::set<std::string> reserved = {"job", "instance", "__name__"};
  int labels = 0;
  for (const prometheus::MetricFamily& f : registry->Collect()) {
    for (const prometheus::ClientMetric& m : f.metric) {
      for (const prometheus::ClientMetric::Label& l : m.label) {
        ++labels;
        EXPECT_EQ(reserved.count(l.name), 0u) << f.name << " has label " << l.name;
      }
    }
  }
  EXPECT_GT(labels, 10);
}

}  // namespace
}  // namespace hecate::controller
