#include "placement/policy.h"

#include <numeric>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/synthetic.h"

namespace hecate::placement {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// 2 nodes x 2 devices; 1 GiB each; 1 TFLOP/s; 100 GB/s intra, 10 GB/s inter.
Cluster SmallCluster() { return Cluster::Uniform(2, 2, int64_t{1} << 30, 1e12, 100e9, 10e9); }

// 4 experts per layer of 1 MB params + 6 MB optimizer state; 1 ms of attention per block.
ModelSpec SmallModel(int layers) {
  ModelSpec m;
  m.top_k = 1;
  m.token_bytes = 4096;
  m.tokens_per_device = 1000;
  m.attention_forward_seconds = 1e-3;
  for (int l = 0; l < layers; ++l) m.layers.push_back(LayerSpec{4, 1'000'000, 6'000'000, 2e8});
  return m;
}

// Every device routes `tokens` to expert `hot` and `cold` tokens to each other expert.
ModelLoad HotLoad(const Cluster& c, const ModelSpec& m, int hot, int64_t tokens, int64_t cold) {
  ModelLoad load;
  for (int l = 0; l < m.num_layers(); ++l) {
    LoadMatrix x(c.num_devices(), m.layers[l].num_experts);
    for (DeviceId d = 0; d < c.num_devices(); ++d) {
      for (ExpertId e = 0; e < x.num_experts(); ++e) x.at(d, e) = e == hot ? tokens : cold;
    }
    load.push_back(x);
  }
  return load;
}

Plan RunPolicy(std::string_view name, const PlanRequest& r) {
  auto policy = MakePolicy(name);
  EXPECT_TRUE(policy.ok()) << policy.status();
  EXPECT_TRUE(CheckRequest(r).ok()) << CheckRequest(r);
  return (*policy)->Compute(r);
}

TEST(PolicyTest, UnknownNameIsNotFound) {
  auto p = MakePolicy("magic");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("hecate, hecate-paper"));
  for (const std::string& name : PolicyNames()) {
    auto q = MakePolicy(name);
    ASSERT_TRUE(q.ok()) << name;
    EXPECT_EQ((*q)->name(), name);
  }
}

TEST(PolicyTest, CheckRequestRejectsBadShapes) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(1);
  ModelLoad load = HotLoad(c, m, 0, 10, 1);
  PlanRequest r{&c, &m, &load};
  EXPECT_TRUE(CheckRequest(r).ok());
  ModelLoad wrong = {LoadMatrix(3, 4)};
  r.load = &wrong;
  EXPECT_EQ(CheckRequest(r).code(), absl::StatusCode::kInvalidArgument);
  r.load = &load;
  Owners bad = {{0, 1, 2, 9}};
  r.owners = &bad;
  EXPECT_EQ(CheckRequest(r).code(), absl::StatusCode::kInvalidArgument);
  r.owners = nullptr;
  r.load = nullptr;
  EXPECT_EQ(CheckRequest(r).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PolicyTest, EpIsStaticEvenSharding) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(2);
  ModelLoad load = HotLoad(c, m, 0, 1000, 10);
  Plan p = RunPolicy("ep", PlanRequest{&c, &m, &load});
  EXPECT_THAT(p.layers[0].owner, ElementsAre(0, 1, 2, 3));
  for (const auto& r : p.layers[0].replicas) EXPECT_EQ(r.size(), 1u);
  EXPECT_TRUE(p.migrations.empty());
  // All 4000 tokens of expert 0 land on device 0.
  EXPECT_DOUBLE_EQ(p.prediction.layers[0].device_tokens[0], 4000 + 0);
  EXPECT_NEAR(p.prediction.layers[0].balancedness, (4000 + 120) / 4.0 / 4000, 1e-12);
}

TEST(PolicyTest, HecateReplicatesTheHotExpertWithinBudgets) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(2);
  ModelLoad load = HotLoad(c, m, 0, 1000, 10);
  Plan p = RunPolicy("hecate", PlanRequest{&c, &m, &load});
  ASSERT_TRUE(Validate(p, c, m).ok());
  EXPECT_TRUE(CheckMemory(p, c, m).ok());
  EXPECT_THAT(p.layers[0].replicas[0], ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(p.semantics, ReplicaSemantics::kEphemeral);
  EXPECT_EQ(p.dispatch_rule, DispatchRule::kLoadAware);
  EXPECT_GT(p.prediction.balancedness, 0.95);
  Plan ep = RunPolicy("ep", PlanRequest{&c, &m, &load});
  EXPECT_LT(p.prediction.moe_seconds, ep.prediction.moe_seconds);
  // Links so slow that no copy pays for itself (and no All-to-All to save): nothing is replicated.
  Cluster slow = Cluster::Uniform(2, 2, int64_t{1} << 30, 1e12, 1e3, 1e3);
  ModelSpec no_a2a = m;
  no_a2a.token_bytes = 0;
  Plan none = RunPolicy("hecate", PlanRequest{&slow, &no_a2a, &load});
  EXPECT_THAT(none.layers[0].replicas[0], ElementsAre(0));
}

TEST(PolicyTest, HecatePaperUsesTAndM) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(1);
  ModelLoad load = HotLoad(c, m, 2, 1000, 10);
  PlanRequest r{&c, &m, &load};
  // t = 1 ms * 10 GB/s / 1 MB = 10 -> 4 (capped at E); m = 1 slot: case 2, 4 slots.
  r.config.extra_slots = 1;
  Plan p = RunPolicy("hecate-paper", r);
  EXPECT_EQ(p.dispatch_rule, DispatchRule::kEven);
  EXPECT_THAT(p.layers[0].replicas[2], ElementsAre(0, 1, 2, 3));
  // m large: case 1, the top-t (= all 4) experts everywhere.
  r.config.extra_slots = 8;
  p = RunPolicy("hecate-paper", r);
  for (const auto& holders : p.layers[0].replicas) EXPECT_THAT(holders, ElementsAre(0, 1, 2, 3));
}

TEST(PolicyTest, HecateRmRegathersEveryLayer) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(2);
  ModelLoad load = HotLoad(c, m, 0, 1000, 10);
  Plan p = RunPolicy("hecate-rm", PlanRequest{&c, &m, &load});
  for (const LayerPlan& l : p.layers) EXPECT_EQ(l.remat, RematMode::kRegather);
  EXPECT_TRUE(CheckMemory(p, c, m).ok());
}

TEST(PolicyTest, HecateChoosesRematWhenMemoryBinds) {
  ModelSpec m = SmallModel(8);
  // Owned: 8 layers x 1 expert x 8 MB = 64 MB per device. Keep budget per copy: 8 x 1 MB + 1 MB;
  // leave 10 MB free -> 1 copy per layer kept, 3 if re-gathered.
  ClusterSpec spec;
  for (int n = 0; n < 2; ++n) spec.nodes.push_back({"n", 2, 74'000'000, 1e12});
  spec.intra_node_bandwidth_bytes_per_second = 100e9;
  spec.inter_node_bandwidth_bytes_per_second = 100e9;
  Cluster c = *Cluster::Create(spec);
  // Three hot experts on devices 0-2: one copy per device and layer cannot balance them, three
  // (re-gathered) can.
  ModelLoad load = HotLoad(c, m, 0, 1000, 0);
  for (LoadMatrix& x : load) {
    for (DeviceId d = 0; d < 4; ++d) x.at(d, 1) = x.at(d, 2) = 1000;
  }
  Plan p = RunPolicy("hecate", PlanRequest{&c, &m, &load});
  EXPECT_TRUE(CheckMemory(p, c, m).ok()) << CheckMemory(p, c, m);
  PlanRequest keep_only{&c, &m, &load};
  keep_only.config.allow_remat = false;
  Plan k = RunPolicy("hecate", keep_only);
  EXPECT_LT(p.prediction.moe_seconds, k.prediction.moe_seconds)
      << DebugString(p) << DebugString(RunPolicy("hecate-rm", keep_only));
  EXPECT_GT(p.prediction.balancedness, k.prediction.balancedness);
  int regathered = 0;
  for (const LayerPlan& l : p.layers) regathered += l.remat == RematMode::kRegather;
  EXPECT_GT(regathered, 0);
}

TEST(PolicyTest, HecateReplanThresholdKeepsUnmovedLayers) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(3);
  const ModelLoad first = HotLoad(c, m, 0, 500, 50);
  const Plan previous = RunPolicy("hecate", PlanRequest{&c, &m, &first});
  for (const LayerPrediction& lp : previous.prediction.layers) {
    ASSERT_EQ(lp.planned_expert_tokens.size(), 4u);
    EXPECT_EQ(lp.planned_expert_tokens[0], 4 * 500);
  }
  // Layer 1's hot expert moves from 0 to 2; layers 0 and 2 keep their load. No revision is due
  // (iteration 50 % 100 names no layer of 3).
  ModelLoad next = first;
  next[1] = HotLoad(c, m, 2, 500, 50)[1];
  PlanRequest r{&c, &m, &next, &previous};
  r.iteration = 50;
  r.config.revise_period = 100;
  r.config.replan_threshold = 0.02;
  const Plan p = RunPolicy("hecate", r);
  ASSERT_TRUE(Validate(p, c, m).ok());
  for (int l : {0, 2}) {
    EXPECT_EQ(p.layers[l].replicas, previous.layers[l].replicas) << l;
    EXPECT_EQ(p.prediction.layers[l].total_seconds, previous.prediction.layers[l].total_seconds);
    EXPECT_EQ(p.prediction.layers[l].planned_expert_tokens,
              previous.prediction.layers[l].planned_expert_tokens);
  }
  EXPECT_EQ(p.prediction.layers[1].planned_expert_tokens[2], 4 * 500);
  EXPECT_GT(p.layers[1].replicas[2].size(), 1u) << "the new hot expert is copied";
  EXPECT_NEAR(p.prediction.moe_seconds,
              p.prediction.layers[0].total_seconds + p.prediction.layers[1].total_seconds +
                  p.prediction.layers[2].total_seconds,
              1e-15);
  // Threshold 0: every layer is planned and evaluated afresh.
  r.config.replan_threshold = 0;
  const Plan fresh = RunPolicy("hecate", r);
  EXPECT_EQ(fresh.prediction.layers[1].planned_expert_tokens,
            p.prediction.layers[1].planned_expert_tokens);
  // On a load that does not move, revisions settle every layer within a few periods; from then
  // on the plan is kept as it is.
  Plan current = previous;
  r.load = &first;
  r.config.replan_threshold = 0.02;
  r.config.revise_period = 2;
  for (int i = 1; i <= 12; ++i) {
    r.previous = &current;
    r.iteration = static_cast<uint64_t>(i);
    current = RunPolicy("hecate", r);
  }
  for (const LayerPrediction& lp : current.prediction.layers) EXPECT_TRUE(lp.settled);
  r.previous = &current;
  r.iteration = 13;
  const Plan kept = RunPolicy("hecate", r);
  for (int l = 0; l < 3; ++l) EXPECT_EQ(kept.layers[l].replicas, current.layers[l].replicas);
}

TEST(PolicyTest, FasterMoeShadowsOnlyWhenItPays) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(1);
  ModelLoad hot = HotLoad(c, m, 1, 5000, 10);
  Plan p = RunPolicy("fastermoe", PlanRequest{&c, &m, &hot});
  EXPECT_EQ(p.semantics, ReplicaSemantics::kShadow);
  EXPECT_THAT(p.layers[0].replicas[1], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(p.layers[0].replicas[0], ElementsAre(0));
  ModelLoad flat = HotLoad(c, m, 1, 10, 10);
  p = RunPolicy("fastermoe", PlanRequest{&c, &m, &flat});
  for (const auto& r : p.layers[0].replicas) EXPECT_EQ(r.size(), 1u);
}

TEST(PolicyTest, FlexMoeExpandsOnImbalanceAndMigratesOptimizerState) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(1);
  ModelLoad hot = HotLoad(c, m, 0, 1000, 10);
  Plan p = RunPolicy("flexmoe", PlanRequest{&c, &m, &hot});
  EXPECT_EQ(p.semantics, ReplicaSemantics::kPersistent);
  EXPECT_GT(p.layers[0].replicas[0].size(), 1u);
  ASSERT_FALSE(p.migrations.empty());
  for (const Migration& mig : p.migrations) EXPECT_EQ(mig.bytes, 7'000'000);
  EXPECT_GT(p.prediction.migration_seconds, 0);
  // Continuing under the same loads: already balanced enough, nothing moves.
  PlanRequest next{&c, &m, &hot, &p};
  next.iteration = 1;
  Plan q = RunPolicy("flexmoe", next);
  EXPECT_TRUE(q.migrations.empty());
  // Balanced loads never trigger.
  ModelLoad flat = HotLoad(c, m, 0, 10, 10);
  Plan f = RunPolicy("flexmoe", PlanRequest{&c, &m, &flat});
  EXPECT_TRUE(f.migrations.empty());
}

TEST(PolicyTest, SmartMoeRePlacesOnlyEveryPeriod) {
  Cluster c = Cluster::Uniform(1, 2, int64_t{1} << 30, 1e12, 100e9, 100e9);
  ModelSpec m = SmallModel(1);
  // Even sharding puts experts 0,1 on device 0 and 2,3 on device 1; loads 40/30/20/10 per
  // device -> LPT: 0 -> d0, 1 -> d1, 2 -> d1, 3 -> d0.
  ModelLoad load;
  LoadMatrix x(2, 4);
  for (DeviceId d = 0; d < 2; ++d) {
    x.at(d, 0) = 40;
    x.at(d, 1) = 30;
    x.at(d, 2) = 20;
    x.at(d, 3) = 10;
  }
  load.push_back(x);
  PlanRequest r{&c, &m, &load};
  Plan p = RunPolicy("smartmoe", r);
  EXPECT_THAT(p.layers[0].owner, ElementsAre(0, 1, 1, 0));
  EXPECT_THAT(p.migrations,
              ElementsAre(Migration{0, 1, 0, 1, 7'000'000}, Migration{0, 3, 1, 0, 7'000'000}));
  PlanRequest next{&c, &m, &load, &p};
  next.iteration = 3;  // not a multiple of 25: keep
  Plan q = RunPolicy("smartmoe", next);
  EXPECT_EQ(q.layers[0].owner, p.layers[0].owner);
  EXPECT_TRUE(q.migrations.empty());
}

TEST(PolicyTest, EplbReplicatesByLoadPerCopyWithoutDuplicates) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(1);
  ModelLoad load = HotLoad(c, m, 3, 1000, 100);
  PlanRequest r{&c, &m, &load};
  r.config.extra_slots = 1;  // 4 + 4 physical slots
  Plan p = RunPolicy("eplb", r);
  ASSERT_TRUE(Validate(p, c, m).ok()) << Validate(p, c, m);
  // Loads 400/400/400/4000: the 4 redundant slots all go to expert 3 (4000/5 = 800 > 400), but
  // EPLB's packing puts two of them on one device; merged, expert 3 has 4 holders.
  EXPECT_EQ(p.layers[0].replicas[3].size(), 4u);
  EXPECT_EQ(p.dispatch_rule, DispatchRule::kReplicaEven);
}

TEST(PolicyTest, EplbRedundantExpertsDefaultToOnePerDevice) {
  Cluster c = SmallCluster();
  ModelSpec m = SmallModel(1);
  ModelLoad load = HotLoad(c, m, 3, 1000, 100);
  PlanRequest r{&c, &m, &load};
  auto copies = [](const Plan& p) {
    size_t n = 0;
    for (const std::vector<DeviceId>& h : p.layers[0].replicas) n += h.size();
    return n;
  };
  // Default: one redundant expert per device, 4 + 4 slots; merged duplicates as above.
  EXPECT_EQ(copies(RunPolicy("eplb", r)), 7u);
  r.config.eplb_redundant_experts = 0;  // vLLM's default: plain EP
  EXPECT_EQ(copies(RunPolicy("eplb", r)), 4u);
  r.config.eplb_redundant_experts = 1;  // 5 slots round up to 2 per device
  EXPECT_EQ(copies(RunPolicy("eplb", r)), 7u);
}

// ---------------------------------------------------------------------------------------------
// Properties over random and adversarial inputs, for every policy.

struct Scenario {
  Cluster cluster;
  ModelSpec model;
  ModelLoad load;
};

Scenario RandomScenario(Rng& rng, int trial) {
  ClusterSpec spec;
  const int nodes = 1 + static_cast<int>(rng.Below(4));
  const bool tiny_memory = trial % 6 == 0;
  for (int n = 0; n < nodes; ++n) {
    const int64_t mem = tiny_memory ? 1 : int64_t{1} << (26 + rng.Below(6));
    spec.nodes.push_back({"n", 1 + static_cast<int>(rng.Below(4)), mem, 1e12});
  }
  spec.intra_node_bandwidth_bytes_per_second = 1e11;
  spec.inter_node_bandwidth_bytes_per_second = 1e9 * (1 + rng.Below(20));
  spec.link_latency_seconds = 1e-6;
  Cluster c = *Cluster::Create(spec);
  ModelSpec m;
  m.top_k = 1;
  m.token_bytes = 2048;
  m.tokens_per_device = 512;
  m.attention_forward_seconds = 1e-4 * rng.Below(30);
  const int layers = 1 + static_cast<int>(rng.Below(3));
  for (int l = 0; l < layers; ++l) {
    // More devices than experts happens often here.
    const int experts = 1 + static_cast<int>(rng.Below(10));
    const int64_t pb = 100'000 * (1 + rng.Below(20));
    m.layers.push_back(LayerSpec{experts, pb, 6 * pb, 1e6});
  }
  ModelLoad load;
  for (int l = 0; l < layers; ++l) {
    LoadMatrix x(c.num_devices(), m.layers[l].num_experts);
    for (DeviceId d = 0; d < c.num_devices(); ++d) {
      for (ExpertId e = 0; e < x.num_experts(); ++e) {
        if (trial % 5 == 1) {
          x.at(d, e) = 0;  // zero loads
        } else if (trial % 5 == 2) {
          x.at(d, e) = e == 0 ? 512 : 0;  // one expert takes everything
        } else {
          x.at(d, e) = static_cast<int64_t>(rng.Below(600));
        }
      }
    }
    load.push_back(x);
  }
  return Scenario{std::move(c), std::move(m), std::move(load)};
}

TEST(PolicyPropertyTest, InvariantsHoldForEveryPolicy) {
  Rng rng(2024);
  for (int trial = 0; trial < 120; ++trial) {
    Scenario s = RandomScenario(rng, trial);
    int64_t total = 0;
    for (const LoadMatrix& x : s.load) total += x.Total();
    for (const std::string& name : PolicyNames()) {
      SCOPED_TRACE(name + " trial " + std::to_string(trial));
      auto policy = *MakePolicy(name);
      PlanRequest r{&s.cluster, &s.model, &s.load};
      r.iteration = static_cast<uint64_t>(trial);
      Plan p = policy->Compute(r);
      ASSERT_TRUE(Validate(p, s.cluster, s.model).ok()) << Validate(p, s.cluster, s.model);
      // Copies never push a device over its budget (owned state alone may, with tiny memory).
      Plan owners_only = p;
      for (LayerPlan& l : owners_only.layers) {
        for (ExpertId e = 0; e < l.num_experts(); ++e) l.replicas[e] = {l.owner[e]};
      }
      const std::vector<int64_t> mem = MemoryPerDevice(p, s.cluster, s.model);
      const std::vector<int64_t> base = MemoryPerDevice(owners_only, s.cluster, s.model);
      for (DeviceId d = 0; d < s.cluster.num_devices(); ++d) {
        if (mem[d] > base[d]) {
          ASSERT_LE(mem[d], s.cluster.memory_bytes(d)) << "device " << d;
        }
      }
      // Dispatch conserves tokens.
      double dispatched = 0;
      for (const LayerPrediction& lp : p.prediction.layers) {
        for (double t : lp.device_tokens) dispatched += t;
        ASSERT_GE(lp.total_seconds, 0);
        ASSERT_GE(lp.exposed_comm_seconds, 0);
        ASSERT_GT(lp.balancedness, 0);
        ASSERT_LE(lp.balancedness, 1.0 + 1e-12);
      }
      ASSERT_EQ(dispatched, static_cast<double>(total));
      // Deterministic: byte-identical on recomputation.
      ASSERT_EQ(DebugString(policy->Compute(r)), DebugString(p));
      // Migrations are exact for owner-moving policies.
      if (p.semantics != ReplicaSemantics::kPersistent || name == "smartmoe" || name == "ep") {
        Owners after;
        for (const LayerPlan& l : p.layers) after.push_back(l.owner);
        ASSERT_EQ(p.migrations, Migrations(EvenSharding(s.cluster, s.model), after, s.model));
      }
    }
  }
}

// Warm starts (the previous plan's copies, revised) keep every invariant, respect a tighter copy
// cap than the previous plan had, and stay deterministic.
TEST(PolicyPropertyTest, HecateWarmStartKeepsInvariants) {
  Rng rng(77);
  auto policy = *MakePolicy("hecate");
  int kept_layers = 0;
  for (int trial = 0; trial < 120; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    Scenario s = RandomScenario(rng, trial);
    PlanRequest r0{&s.cluster, &s.model, &s.load};
    Plan previous = policy->Compute(r0);
    // Every other trial keeps every layer it may: settled, and any load counts as unmoved (what
    // is kept must still fit this plan's budget).
    if (trial % 2 == 1) {
      for (LayerPrediction& lp : previous.prediction.layers) lp.settled = true;
    }
    // Next iteration: loads move.
    ModelLoad next = s.load;
    for (LoadMatrix& x : next) {
      for (DeviceId d = 0; d < x.num_devices(); ++d) {
        for (ExpertId e = 0; e < x.num_experts(); ++e) x.at(d, e) = rng.Below(600);
      }
    }
    PlanRequest r{&s.cluster, &s.model, &next, &previous};
    r.iteration = static_cast<uint64_t>(trial);
    if (trial % 3 == 0) r.config.extra_slots = 1;
    if (trial % 2 == 1) r.config.replan_threshold = 1.99;
    const Plan p = policy->Compute(r);
    ASSERT_TRUE(Validate(p, s.cluster, s.model).ok()) << Validate(p, s.cluster, s.model);
    ASSERT_EQ(DebugString(policy->Compute(r)), DebugString(p));
    int64_t total = 0;
    double dispatched = 0;
    for (size_t l = 0; l < next.size(); ++l) {
      const LayerPrediction& lp = p.prediction.layers[l];
      // A kept layer's prediction is the one made for the load it was planned on.
      const bool kept =
          lp.planned_expert_tokens != previous.prediction.layers[l].planned_expert_tokens
              ? false
              : p.layers[l].replicas == previous.layers[l].replicas &&
                    lp.total_seconds == previous.prediction.layers[l].total_seconds;
      const int64_t t = kept ? s.load[l].Total() : next[l].Total();
      total += t;
      kept_layers += kept ? 1 : 0;
      for (double x : lp.device_tokens) dispatched += x;
    }
    ASSERT_EQ(dispatched, static_cast<double>(total));
    for (const LayerPlan& layer : p.layers) {
      const std::vector<int> extra = layer.ExtraCopies(s.cluster.num_devices());
      for (DeviceId d = 0; d < s.cluster.num_devices(); ++d) {
        ASSERT_EQ(extra[d], layer.ExtraCopiesOn(d));
        if (r.config.extra_slots >= 0) {
          ASSERT_LE(extra[d], r.config.extra_slots);
        }
      }
    }
    const std::vector<int64_t> mem = MemoryPerDevice(p, s.cluster, s.model);
    Plan owners_only = p;
    for (LayerPlan& l : owners_only.layers) {
      for (ExpertId e = 0; e < l.num_experts(); ++e) l.replicas[e] = {l.owner[e]};
    }
    const std::vector<int64_t> base = MemoryPerDevice(owners_only, s.cluster, s.model);
    for (DeviceId d = 0; d < s.cluster.num_devices(); ++d) {
      if (mem[d] > base[d]) {
        ASSERT_LE(mem[d], s.cluster.memory_bytes(d)) << "device " << d;
      }
    }
  }
  EXPECT_GT(kept_layers, 0) << "the replan threshold never kept a layer";
}

// On a skewed cluster-scale load whose hot set stays put, warm starts (with their periodic
// drop-and-regrow) settle below planning from scratch: the greedy's cold local optimum is not the
// floor. Compared over the second half of 16 iterations.
TEST(PolicyPropertyTest, HecateWarmStartNoWorseThanColdOnStableSkew) {
  Cluster c = Cluster::Uniform(4, 8, int64_t{32} << 30, 1.25e14, 300e9, 12.5e9, 5e-6);
  ModelSpec m = UniformModel("gpt-moe-s", 4, 64, 2, 768, 1536, 2, 4096, 1.5e-3);
  auto policy = *MakePolicy("hecate");
  SkewOptions opt;
  opt.zipf_s = 1.2;
  ModelLoad first = SkewedLoad(c, m, opt, 0);
  Plan previous = policy->Compute(PlanRequest{&c, &m, &first});
  double warm = 0, cold = 0;
  for (int i = 1; i <= 16; ++i) {
    ModelLoad load = SkewedLoad(c, m, opt, static_cast<uint64_t>(i));
    PlanRequest r{&c, &m, &load, &previous};
    r.iteration = static_cast<uint64_t>(i);
    Plan w = policy->Compute(r);
    r.config.warm_start = false;
    if (i > 8) {
      cold += policy->Compute(r).prediction.moe_seconds;
      warm += w.prediction.moe_seconds;
    }
    previous = std::move(w);
  }
  EXPECT_LT(warm, cold);
}

TEST(PolicyPropertyTest, HecateNeverWorseThanEpOnSkew) {
  Cluster c = Cluster::Uniform(4, 8, int64_t{32} << 30, 1.25e14, 300e9, 12.5e9, 5e-6);
  ModelSpec m = UniformModel("gpt-moe-s", 4, 64, 2, 768, 1536, 2, 4096, 5e-3);
  for (double s : {0.5, 1.0, 1.5}) {
    SkewOptions opt;
    opt.zipf_s = s;
    ModelLoad load = SkewedLoad(c, m, opt, 0);
    Plan ep = RunPolicy("ep", PlanRequest{&c, &m, &load});
    Plan h = RunPolicy("hecate", PlanRequest{&c, &m, &load});
    EXPECT_LE(h.prediction.moe_seconds, ep.prediction.moe_seconds) << "zipf " << s;
    EXPECT_GE(h.prediction.balancedness, ep.prediction.balancedness) << "zipf " << s;
  }
}

// The balance bound on Cluster A, Zipf 1.5, one extra slot (the balance table's hardest static
// row): over warm iterations the layers end much closer to the target (the sum over layers of
// max/mean over 1.08) than when planned for time alone, at a cost within the budget on the
// per-layer estimate the pass bounds (CostModel::EvaluateLayer), and near it on the plan's
// schedule-wide prediction. Compared over the second half of 8 iterations.
TEST(PolicyPropertyTest, HecateBalanceTargetBringsLayersCloserWithinTheBudget) {
  const Cluster c = Cluster::Uniform(4, 8, int64_t{32} << 30, 62.5e12, 300e9, 12.5e9, 5e-6);
  const ModelSpec m = UniformModel("gpt-moe-s", 4, 64, 2, 768, 1536, 2, 4096, 1.5e-3);
  auto policy = *MakePolicy("hecate");
  SkewOptions opt;
  opt.zipf_s = 1.5;
  // 0: off; 1: on; 2: on, with a cell budget too small for a pass (8 evaluations a layer).
  double overage[3] = {0, 0, 0}, seconds[3] = {0, 0, 0}, predicted[3] = {0, 0, 0};
  const CostModel cost(c, m);
  Dispatcher dispatcher(c);
  for (int on = 0; on < 3; ++on) {
    Plan previous;
    for (int i = 0; i < 8; ++i) {
      ModelLoad load = SkewedLoad(c, m, opt, static_cast<uint64_t>(i));
      PlanRequest r{&c, &m, &load, i > 0 ? &previous : nullptr};
      r.iteration = static_cast<uint64_t>(i);
      r.config.extra_slots = 1;
      r.config.balance_target = on ? 1.08 : 0;
      if (on == 2) r.config.balance_cell_budget = int64_t{4} * 32 * 64 * 7;
      Plan p = policy->Compute(r);
      ASSERT_TRUE(Validate(p, c, m).ok());
      if (i >= 4) {
        overage[on] += BalanceOverage(p.prediction, 1.08);
        predicted[on] += p.prediction.moe_seconds;
        for (LayerId l = 0; l < m.num_layers(); ++l) {
          seconds[on] +=
              cost.EvaluateLayer(l, p.layers[l], load[l], p.dispatch_rule, p.semantics, &dispatcher)
                  .total_seconds;
        }
      }
      previous = std::move(p);
    }
  }
  // The pass spends at most balance_budget (4%) of each plan's layer time; warm plans start from
  // the balanced layers in force, so against the run planned for time alone the cost may exceed
  // it slightly (publication, where the bound is enforced against the plan for time alone, is
  // DecidePlan's: planning_loop_test's BalanceDecision).
  EXPECT_LT(overage[1], 0.5 * overage[0]);
  EXPECT_LE(seconds[1], 1.05 * seconds[0]);
  EXPECT_LE(predicted[1], 1.05 * predicted[0]);
  // Without the pass, ranking and settling alone stay within the budget too.
  EXPECT_LE(seconds[2], 1.04 * seconds[0]);
  EXPECT_GT(overage[2], overage[1]);
}

TEST(RepairEffortTest, ScalesWithTheClusterPastTheBudget) {
  PlannerConfig c;  // 4 moves x 16 candidates, budget 4 x 16 x 256
  EXPECT_EQ(RepairEffort(c, 32), std::make_pair(4, 16));
  EXPECT_EQ(RepairEffort(c, 256), std::make_pair(4, 16));
  EXPECT_EQ(RepairEffort(c, 1024), std::make_pair(2, 8));
  EXPECT_EQ(RepairEffort(c, 4096), std::make_pair(1, 4));
  EXPECT_EQ(RepairEffort(c, 1 << 20), std::make_pair(1, 1));  // never below one each
  c.repair_device_budget = 0;                                 // no cap
  EXPECT_EQ(RepairEffort(c, 4096), std::make_pair(4, 16));
  c.repair_moves = 0;  // off stays off
  c.repair_device_budget = 1;
  EXPECT_EQ(RepairEffort(c, 4096).first, 0);
}

}  // namespace
}  // namespace hecate::placement
