// Round-trips a Plan and a LoadReport through the binary wire format and proto3 canonical JSON,
// checking field values survive both (the JSON form is what `hecatectl -o json` prints).
#include <string>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "hecate/v1/types.pb.h"

namespace hecate::v1 {
namespace {

Plan MakePlan() {
  Plan plan;
  plan.set_job_id("job-a");
  plan.mutable_id()->set_epoch(3);
  plan.mutable_id()->set_version(17);
  plan.set_effective_iteration(102);
  plan.set_computed_from_iteration(100);
  plan.set_policy("hecate");
  plan.set_sharding_version(2);
  plan.set_dispatch_rule(DISPATCH_RULE_LOAD_AWARE);
  LayerPlan* layer = plan.add_layers();
  layer->set_layer(0);
  for (uint32_t owner : {0u, 0u, 1u, 1u}) layer->add_owner(owner);
  for (int e = 0; e < 4; ++e) {
    ExpertReplicas* r = layer->add_replicas();
    r->add_devices(layer->owner(e));
    if (e == 2) r->add_devices(0);
  }
  layer->set_remat(REMAT_MODE_REGATHER);
  layer->mutable_prediction()->add_device_tokens(100.5);
  layer->mutable_prediction()->add_device_tokens(99.5);
  layer->mutable_prediction()->set_balancedness(0.995);
  layer->mutable_prediction()->set_spag_bytes(4718592);
  Migration* m = plan.add_migrations();
  m->set_layer(0);
  m->set_expert(3);
  m->set_from_device(0);
  m->set_to_device(1);
  m->set_bytes(33030144);
  plan.set_migration_bytes(33030144);
  plan.set_predicted_sparse_bytes(9437184);
  return plan;
}

LoadReport MakeReport() {
  LoadReport report;
  report.set_job_id("job-a");
  report.set_rank(1);
  report.set_incarnation(7);
  report.set_iteration(101);
  report.mutable_plan()->set_epoch(3);
  report.mutable_plan()->set_version(17);
  for (int l = 0; l < 2; ++l) {
    LayerLoad* layer = report.add_layers();
    layer->set_layer(l);
    for (uint64_t t : {120u, 0u, 7u, 1u}) layer->add_expert_tokens(t + l);
  }
  report.mutable_timings()->set_attention_seconds(0.0125);
  report.mutable_timings()->set_step_seconds(0.25);
  report.set_free_memory_bytes(uint64_t{30} << 30);
  report.set_tokens(64);
  return report;
}

void CheckPlan(const Plan& plan) {
  EXPECT_EQ(plan.job_id(), "job-a");
  EXPECT_EQ(plan.id().epoch(), 3u);
  EXPECT_EQ(plan.id().version(), 17u);
  EXPECT_EQ(plan.effective_iteration(), 102u);
  EXPECT_EQ(plan.dispatch_rule(), DISPATCH_RULE_LOAD_AWARE);
  ASSERT_EQ(plan.layers_size(), 1);
  const LayerPlan& layer = plan.layers(0);
  ASSERT_EQ(layer.owner_size(), 4);
  EXPECT_EQ(layer.owner(2), 1u);
  ASSERT_EQ(layer.replicas(2).devices_size(), 2);
  EXPECT_EQ(layer.replicas(2).devices(1), 0u);
  EXPECT_EQ(layer.remat(), REMAT_MODE_REGATHER);
  EXPECT_DOUBLE_EQ(layer.prediction().device_tokens(0), 100.5);
  EXPECT_DOUBLE_EQ(layer.prediction().balancedness(), 0.995);
  ASSERT_EQ(plan.migrations_size(), 1);
  EXPECT_EQ(plan.migrations(0).bytes(), 33030144u);
  EXPECT_EQ(plan.predicted_sparse_bytes(), 9437184u);
}

void CheckReport(const LoadReport& report) {
  EXPECT_EQ(report.rank(), 1u);
  EXPECT_EQ(report.incarnation(), 7u);
  EXPECT_EQ(report.iteration(), 101u);
  EXPECT_EQ(report.plan().version(), 17u);
  ASSERT_EQ(report.layers_size(), 2);
  EXPECT_EQ(report.layers(1).expert_tokens(0), 121u);
  EXPECT_EQ(report.layers(1).expert_tokens(1), 1u);
  EXPECT_DOUBLE_EQ(report.timings().attention_seconds(), 0.0125);
  EXPECT_EQ(report.free_memory_bytes(), uint64_t{30} << 30);
}

TEST(ProtoRoundTrip, PlanBinary) {
  std::string wire;
  ASSERT_TRUE(MakePlan().SerializeToString(&wire));
  Plan parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  CheckPlan(parsed);
}

TEST(ProtoRoundTrip, PlanJson) {
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(MakePlan(), &json).ok());
  // proto3 canonical JSON: lowerCamelCase names, 64-bit integers as strings, enums by name.
  EXPECT_NE(json.find("\"effectiveIteration\":\"102\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"DISPATCH_RULE_LOAD_AWARE\""), std::string::npos) << json;
  Plan parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &parsed).ok());
  CheckPlan(parsed);
}

TEST(ProtoRoundTrip, LoadReportBinaryAndJson) {
  std::string wire;
  ASSERT_TRUE(MakeReport().SerializeToString(&wire));
  LoadReport from_wire;
  ASSERT_TRUE(from_wire.ParseFromString(wire));
  CheckReport(from_wire);

  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(from_wire, &json).ok());
  LoadReport from_json;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &from_json).ok());
  CheckReport(from_json);
}

TEST(ProtoRoundTrip, JsonRejectsUnknownField) {
  LoadReport report;
  EXPECT_FALSE(
      google::protobuf::util::JsonStringToMessage(R"({"rank": 1, "bogus": 2})", &report).ok());
}

}  // namespace
}  // namespace hecate::v1
