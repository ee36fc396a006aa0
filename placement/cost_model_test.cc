#include "placement/cost_model.h"

#include <gtest/gtest.h>

namespace hecate::placement {
namespace {

// 2 nodes x 2 devices, 1 TFLOP/s, 100 GB/s inside a node, 10 GB/s across, 1 us latency.
Cluster Small() { return Cluster::Uniform(2, 2, int64_t{1} << 30, 1e12, 100e9, 10e9, 1e-6); }

ModelSpec OneLayer(double attention_s) {
  ModelSpec m;
  m.top_k = 1;
  m.token_bytes = 1000;
  m.tokens_per_device = 100;
  m.attention_forward_seconds = attention_s;
  m.layers.push_back(LayerSpec{2, 1'000'000, 6'000'000, 1e6});  // 1 MB params, 1 MFLOP/token
  return m;
}

LayerPlan Layer(std::vector<DeviceId> owner, std::vector<std::vector<DeviceId>> replicas,
                RematMode remat = RematMode::kKeep) {
  LayerPlan l;
  l.owner = std::move(owner);
  l.replicas = std::move(replicas);
  l.remat = remat;
  return l;
}

TEST(CostModelTest, ComputeAndAllToAllByHand) {
  Cluster c = Small();
  ModelSpec m = OneLayer(0);
  CostModel cost(c, m);
  // Expert 0 on device 0, expert 1 on device 3; every device sends 100 tokens to expert 0.
  LayerPlan layer = Layer({0, 3}, {{0}, {3}});
  LoadMatrix load(4, 2);
  for (DeviceId d = 0; d < 4; ++d) load.at(d, 0) = 100;
  Dispatcher dispatcher(c);
  LayerPrediction p = cost.EvaluateLayer(0, layer, load, DispatchRule::kEven,
                                         ReplicaSemantics::kEphemeral, &dispatcher);
  // Device 0 computes 400 tokens: 400 * 1e6 / 1e12 = 4e-4 s forward, x3 = 1.2e-3.
  EXPECT_DOUBLE_EQ(p.compute_seconds, 1.2e-3);
  EXPECT_DOUBLE_EQ(p.max_tokens, 400);
  EXPECT_DOUBLE_EQ(p.mean_tokens, 100);
  EXPECT_DOUBLE_EQ(p.balancedness, 0.25);
  // Device 0 receives 100 tokens intra (1e5 B / 1e11 = 1e-6 s) and 200 inter (2e5 B / 1e10 =
  // 2e-5 s): one A2A = 2e-5 + 1e-6 latency; four of them.
  EXPECT_NEAR(p.all_to_all_seconds, 4 * (2e-5 + 1e-6), 1e-15);
  EXPECT_EQ(p.spag_bytes, 0);
  EXPECT_DOUBLE_EQ(p.exposed_comm_seconds, 0);
  EXPECT_NEAR(p.total_seconds, 1.2e-3 + 4 * 2.1e-5, 1e-15);
}

TEST(CostModelTest, CopiesAddTheirFixedCostToTheHolder) {
  Cluster c = Small();
  ModelSpec m = OneLayer(0);
  // Expert 0 owned by device 0 and copied to device 1 (same node); every device sends it 100
  // tokens: node 0's 200 split 100/100, node 1's 200 (no holder) split 100/100, so devices 0 and
  // 1 compute 200 tokens each: 3 x 200 x 1e6 / 1e12 = 6e-4 s.
  LayerPlan layer = Layer({0, 3}, {{0, 1}, {3}});
  LoadMatrix load(4, 2);
  for (DeviceId d = 0; d < 4; ++d) load.at(d, 0) = 100;
  Dispatcher dispatcher(c);
  LayerPrediction free_copy = CostModel(c, m).EvaluateLayer(
      0, layer, load, DispatchRule::kEven, ReplicaSemantics::kEphemeral, &dispatcher);
  EXPECT_DOUBLE_EQ(free_copy.compute_seconds, 6e-4);
  // A copy costing its holder 1 ms: device 1 takes 6e-4 + 1e-3; the owner pays nothing.
  m.layers[0].copy_seconds = 1e-3;
  LayerPrediction costly = CostModel(c, m).EvaluateLayer(0, layer, load, DispatchRule::kEven,
                                                         ReplicaSemantics::kEphemeral, &dispatcher);
  EXPECT_DOUBLE_EQ(costly.compute_seconds, 1.6e-3);
  EXPECT_DOUBLE_EQ(costly.total_seconds - free_copy.total_seconds, 1e-3);
}

TEST(CostModelTest, AllLocalDispatchStillPaysAllToAllLatency) {
  Cluster c = Small();
  ModelSpec m = OneLayer(0);
  CostModel cost(c, m);
  // Every device holds expert 0 and routes only to it: no token leaves its device, but the data
  // plane still runs the four All-to-Alls.
  LayerPlan layer = Layer({0, 3}, {{0, 1, 2, 3}, {3}});
  LoadMatrix load(4, 2);
  for (DeviceId d = 0; d < 4; ++d) load.at(d, 0) = 10;
  Dispatcher dispatcher(c);
  LayerPrediction p = cost.EvaluateLayer(0, layer, load, DispatchRule::kLoadAware,
                                         ReplicaSemantics::kEphemeral, &dispatcher);
  EXPECT_DOUBLE_EQ(p.all_to_all_seconds, 4 * 1e-6);
  // One device: no collective at all.
  Cluster one = Cluster::Uniform(1, 1, int64_t{1} << 30, 1e12, 100e9, 10e9, 1e-6);
  Dispatcher single(one);
  LoadMatrix load1(1, 2);
  load1.at(0, 0) = 10;
  LayerPrediction q =
      CostModel(one, m).EvaluateLayer(0, Layer({0, 0}, {{0}, {0}}), load1, DispatchRule::kEven,
                                      ReplicaSemantics::kEphemeral, &single);
  EXPECT_DOUBLE_EQ(q.all_to_all_seconds, 0);
}

// The spAG's relay tree: one copy crosses to the other node, then fans out there over NVLink.
TEST(CostModelTest, SparseCollectiveRelaysOncePerNode) {
  Cluster c = Small();  // 2 nodes x 2 devices; 100 GB/s inside a node, 10 GB/s between, 1 us
  ModelSpec m = OneLayer(/*attention_s=*/1.0);
  CostModel cost(c, m);
  // Expert 0 owned by 0 and held everywhere. Phase 0: 0 -> 1 (1e-5 s) and 0 -> relay 2 (1e-4 s);
  // phase 1: 2 -> 3 (1e-5 s). Flat, node 0's NIC would carry two chunks (2e-4 s).
  LayerPlan layer = Layer({0, 3}, {{0, 1, 2, 3}, {3}});
  int64_t bytes = 0;
  EXPECT_DOUBLE_EQ(cost.SparseCollectiveSeconds(0, layer, &bytes), (1e-4 + 1e-6) + (1e-5 + 1e-6));
  EXPECT_EQ(bytes, 3'000'000);  // still one chunk per extra holder
  // One holder per node: nothing to relay, one phase.
  layer = Layer({0, 3}, {{0, 2}, {3}});
  EXPECT_DOUBLE_EQ(cost.SparseCollectiveSeconds(0, layer, &bytes), 1e-4 + 1e-6);
  EXPECT_EQ(bytes, 1'000'000);
}

TEST(CostModelTest, SparseCollectivesAndOverlap) {
  Cluster c = Small();
  // Expert 0 owned by 0, copies on 1 (intra) and 2 (inter): owner sends 1 MB intra (1e-5 s) and
  // 1 MB inter (1e-4 s) -> spAG = 1e-4 + 1e-6.
  LayerPlan layer = Layer({0, 3}, {{0, 1, 2}, {3}});
  LoadMatrix load(4, 2);
  const double spag = 1e-4 + 1e-6;
  {
    ModelSpec m = OneLayer(/*attention_s=*/5e-5);
    CostModel cost(c, m);
    int64_t bytes = 0;
    EXPECT_DOUBLE_EQ(cost.SparseCollectiveSeconds(0, layer, &bytes), spag);
    EXPECT_EQ(bytes, 2'000'000);
    Dispatcher dispatcher(c);
    LayerPrediction p = cost.EvaluateLayer(0, layer, load, DispatchRule::kEven,
                                           ReplicaSemantics::kEphemeral, &dispatcher);
    // One layer is both the first and the top one (CostModel::Windows): its spAG hides behind
    // its attention (5e-5; the dispatch All-to-All uses the links and hides nothing), its spRS
    // behind its attention backward (1e-4) alone.
    const double forward = 5e-5;
    EXPECT_NEAR(p.exposed_comm_seconds, (spag - forward) + (spag - 1e-4), 1e-15);
    EXPECT_EQ(p.spag_bytes, 2'000'000);
    EXPECT_EQ(p.sprs_bytes, 2'000'000);

    // Re-gather: the top layer's re-gather starts as backward does, nothing hides it; spRS as
    // before.
    layer.remat = RematMode::kRegather;
    p = cost.EvaluateLayer(0, layer, load, DispatchRule::kEven, ReplicaSemantics::kEphemeral,
                           &dispatcher);
    EXPECT_NEAR(p.exposed_comm_seconds, (spag - forward) + spag + (spag - 1e-4), 1e-15);
    layer.remat = RematMode::kKeep;

    // Shadowing cannot hide the broadcast behind attention.
    p = cost.EvaluateLayer(0, layer, load, DispatchRule::kEven, ReplicaSemantics::kShadow,
                           &dispatcher);
    EXPECT_NEAR(p.exposed_comm_seconds, spag + (spag - 1e-4), 1e-15);
  }
  {
    ModelSpec m = OneLayer(/*attention_s=*/1e-3);  // everything hidden
    CostModel cost(c, m);
    Dispatcher dispatcher(c);
    LayerPrediction p = cost.EvaluateLayer(0, layer, load, DispatchRule::kEven,
                                           ReplicaSemantics::kEphemeral, &dispatcher);
    EXPECT_DOUBLE_EQ(p.exposed_comm_seconds, 0);
  }
}

TEST(CostModelTest, PersistentReplicasAllReduce) {
  Cluster c = Small();
  ModelSpec m = OneLayer(0);
  CostModel cost(c, m);
  // Ring over {0, 1}: each member moves 2 * 1/2 * 1 MB = 1 MB intra -> 1e-5 + 1e-6 latency.
  LayerPlan layer = Layer({0, 3}, {{0, 1}, {3}});
  LoadMatrix load(4, 2);
  Dispatcher dispatcher(c);
  LayerPrediction p = cost.EvaluateLayer(0, layer, load, DispatchRule::kEven,
                                         ReplicaSemantics::kPersistent, &dispatcher);
  EXPECT_NEAR(p.sprs_seconds, 1e-5 + 1e-6, 1e-15);
  EXPECT_NEAR(p.exposed_comm_seconds, 1e-5 + 1e-6, 1e-15);
  EXPECT_EQ(p.spag_bytes, 0);
}

// The plan-level schedule (CostModel::ChargeSchedule), by hand: attention 1 s per block, one
// All-to-All 1 s and one compute pass 1 s per layer. The lane moves only while the training thread
// computes or waits (an All-to-All holds the links), so the times below are the lane's work done.
// spAG 2 / 8 / 1 s, spRS 4 / 1 / 8 s, layer 1 re-materialized.
//   forward: spAG 0,1,2 join the lane at once (prefetch 2), done when its work reaches 2, 10, 11.
//            Layer 0: attention (work 1), waits 1 for spAG 0, expert (3). Layer 1: attention (4),
//            waits 6 for spAG 1, expert (11). Layer 2: nothing left to wait for.
//   backward: layer 2 submits the re-gather of layer 1 (mark 19), computes 2 (13), submits spRS 2
//            (27), attention backward 2 (15). Layer 1 waits 4 for its re-gather (19), computes 4
//            (23), submitting spRS 1 (28). Layer 0 computes 4 (27) and submits spRS 0 (32): the
//            optimizer waits 5.
TEST(CostModelTest, ScheduleTimelineByHand) {
  Cluster c = Small();
  ModelSpec m;
  m.attention_forward_seconds = 1;
  for (int l = 0; l < 3; ++l) m.layers.push_back(LayerSpec{2, 1, 1, 1});
  CostModel cost(c, m);
  Plan plan;
  plan.semantics = ReplicaSemantics::kEphemeral;
  plan.layers.resize(3);
  plan.layers[1].remat = RematMode::kRegather;
  const double spag[] = {2, 8, 1}, sprs[] = {4, 1, 8};
  std::vector<LayerPrediction> layers(3);
  for (int l = 0; l < 3; ++l) {
    layers[l].compute_seconds = 3;
    layers[l].all_to_all_seconds = 4;
    layers[l].spag_seconds = spag[l];
    layers[l].sprs_seconds = sprs[l];
  }
  cost.ChargeSchedule(plan, &layers);
  EXPECT_DOUBLE_EQ(layers[0].exposed_comm_seconds, 1 + 5);  // spAG 1 + the optimizer's wait
  EXPECT_DOUBLE_EQ(layers[1].exposed_comm_seconds, 6 + 4);  // spAG 6 + re-gather 4
  EXPECT_DOUBLE_EQ(layers[2].exposed_comm_seconds, 0);
  EXPECT_DOUBLE_EQ(layers[1].total_seconds, 3 + 4 + 10);
  // Without overlap every transfer is charged in full (a re-gathered layer's spAG twice).
  cost.set_overlap(false);
  cost.ChargeSchedule(plan, &layers);
  EXPECT_DOUBLE_EQ(layers[0].exposed_comm_seconds, 2 + 4);
  EXPECT_DOUBLE_EQ(layers[1].exposed_comm_seconds, 2 * 8 + 1);
  EXPECT_DOUBLE_EQ(layers[2].exposed_comm_seconds, 1 + 8);
}

TEST(CostModelTest, MigrationSeconds) {
  Cluster c = Small();
  ModelSpec m = OneLayer(0);
  CostModel cost(c, m);
  // Two experts of 7 MB leave device 0 for device 2 (inter): 14e6 / 1e10 + latency.
  std::vector<Migration> migrations = {{0, 0, 0, 2, 7'000'000}, {0, 1, 0, 2, 7'000'000}};
  EXPECT_NEAR(cost.MigrationSeconds(migrations), 1.4e-3 + 1e-6, 1e-15);
  EXPECT_DOUBLE_EQ(cost.MigrationSeconds({}), 0);
}

TEST(CostModelTest, MemoryPerDeviceByHand) {
  Cluster c = Small();
  ModelSpec m = OneLayer(0);
  m.layers.push_back(m.layers[0]);  // two identical layers
  Plan plan;
  plan.semantics = ReplicaSemantics::kEphemeral;
  plan.layers = {Layer({0, 3}, {{0, 1}, {3}}), Layer({0, 3}, {{0, 1}, {3}})};
  // Owned per expert: 2 * 1 MB + 6 MB = 8 MB. Device 0 owns 2 -> 16 MB; device 1 keeps two 1 MB
  // copies resident + one layer's 1 MB of gradients = 3 MB.
  std::vector<int64_t> mem = MemoryPerDevice(plan, c, m);
  EXPECT_EQ(mem[0], 16'000'000);
  EXPECT_EQ(mem[1], 3'000'000);
  EXPECT_EQ(mem[2], 0);
  // Re-gathered: at most two layers' parameters + one layer's gradients: still 3 MB here.
  plan.layers[0].remat = plan.layers[1].remat = RematMode::kRegather;
  EXPECT_EQ(MemoryPerDevice(plan, c, m)[1], 3'000'000);
  // Persistent copies carry gradients and optimizer state: 2 x 8 MB.
  plan.semantics = ReplicaSemantics::kPersistent;
  EXPECT_EQ(MemoryPerDevice(plan, c, m)[1], 16'000'000);
}

}  // namespace
}  // namespace hecate::placement
