// The equivalence that makes FSSDP correct: with the same seed and data, W ranks over Gloo (real
// processes on loopback) give the same per-iteration losses as a single-process reference with
// the global batch, for static EP and for FSSDP with a different random plan every iteration, a
// re-shard (parameters + Adam state migrate) mid-run, re-materialization on, and calibration on;
// and the gradient of a replicated expert after SparseReduceScatter equals the EP gradient.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/subprocess.h"
#include "placement/policy.h"
#include "placement/sharding.h"
#include "placement/sparse_tree.h"
#include "placement/synthetic.h"
#include "tests/reference_moe.h"
#include "worker/comm/async_lane.h"
#include "worker/comm/fake_communicator.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/model/trainer.h"
#include "worker/plan_source.h"

namespace hecate::worker {
namespace {

constexpr int kIterations = 20;
constexpr int kReshardAt = 10;

using ::hecate::proc::FreePort;

std::string Tmp(const std::string& name) {
  const char* t = std::getenv("TEST_TMPDIR");
  return std::string(t ? t : "/tmp") + "/" + name;
}

// Written once by the parent before any rank is forked (ranks only read it).
std::string TextFile() { return Tmp("text.txt"); }

void WriteTextFile() {
  std::ofstream out(TextFile());
  for (int i = 0; i < 200; ++i) {
    out << "The quick brown fox " << i << " jumps over the lazy dog; experts route tokens. ";
  }
}

TrainerConfig Config(int batch, bool float64 = true) {
  TrainerConfig c;
  c.layers = 2;
  c.d_model = 16;
  c.heads = 2;
  c.experts = 4;
  c.top_k = 2;
  c.d_ffn = 32;
  c.seq_len = 8;
  c.batch = batch;
  c.lr = 5e-3;
  c.float64 = float64;
  c.aux_loss = 0.01;
  c.seed = 7;
  c.data_path = TextFile();
  return c;
}

// How a run's plans re-materialize: no layer, every layer, or a mix the plan chooses (a random
// set of layers each iteration).
enum class Remat { kNone, kAll, kMixed };

// A new random plan every iteration (identical on every rank: seeded by the iteration); owners
// are even until kReshardAt, then a fixed random re-sharding.
class RandomPlans : public PlanSource {
 public:
  RandomPlans(const placement::Cluster& c, const placement::ModelSpec& m,
              std::string policy = "hecate", Remat remat = Remat::kNone)
      : c_(c), m_(m), policy_(std::move(policy)), remat_(remat) {}
  std::shared_ptr<const placement::Plan> Next(uint64_t it, const placement::ModelLoad&) override {
    placement::Plan plan = ExpertParallelPlan(c_, m_);
    // The policy's semantics: FSSDP copies, persistent replicas, or shadows.
    plan.semantics = (*placement::MakePolicy(policy_))->semantics();
    const placement::DispatchRule rules[] = {placement::DispatchRule::kLoadAware,
                                             placement::DispatchRule::kEven,
                                             placement::DispatchRule::kReplicaEven};
    plan.dispatch_rule = rules[it % 3];
    plan.id = {0, it + 1};
    plan.policy = policy_;
    placement::Rng rng(1000 + it);
    placement::Rng owner_rng(77);
    for (auto& layer : plan.layers) {
      const bool regather = remat_ == Remat::kAll || (remat_ == Remat::kMixed && rng.Below(2));
      layer.remat = regather ? placement::RematMode::kRegather : placement::RematMode::kKeep;
      for (int e = 0; e < layer.num_experts(); ++e) {
        if (it >= kReshardAt) layer.owner[e] = static_cast<int>(owner_rng.Below(c_.num_devices()));
        layer.replicas[e].clear();
        for (int d = 0; d < c_.num_devices(); ++d) {
          if (d == layer.owner[e] || rng.Below(5) < 2) layer.replicas[e].push_back(d);
        }
      }
    }
    return std::make_shared<const placement::Plan>(std::move(plan));
  }

 private:
  const placement::Cluster& c_;
  const placement::ModelSpec& m_;
  const std::string policy_;
  const Remat remat_;
};

struct RunSpec {
  std::string name;
  int world = 1;
  bool fssdp = false;
  Remat remat = Remat::kNone;
  bool calibration = false;
  bool all_replicated = false;  // every expert on every rank, EP owners (gradient test)
  int iterations = kIterations;
  int nodes = 1;  // ranks split evenly over this many (simulated) nodes: the relay tree's shape
  int calibration_copies = 1;     // with calibration: copies beyond the plan's per device
  std::string policy = "hecate";  // the plans' policy (workers calibrate hecate's)
  bool overlap = true;            // sparse collectives on a lane, overlapped with compute
  int layers = 2;
  bool float64 = true;
  // Save the initial parameters and every iteration's reduced gradients (for the independent
  // reference): <name>_rank<r>_init.pt, <name>_rank<r>_it<i>.pt.
  bool dump = false;
  // Rank 1 swaps two rows of one replica's (a copy it does not own) local gradient at iteration
  // 0, before the sparse reduce; writes <name>_corrupted when it did.
  bool corrupt_replica = false;
};

// Owned experts of every MoE layer: their ids ([n, 2]: layer, expert) and one tensor each.
void AppendOwned(Trainer& trainer, bool grads, std::vector<torch::Tensor>* out) {
  std::vector<int64_t> ids;
  std::vector<torch::Tensor> tensors;
  for (auto& layer : trainer.moe_layers()) {
    for (int e : layer->OwnedExperts()) {
      ids.push_back(layer->layer());
      ids.push_back(e);
      tensors.push_back((grads ? layer->OwnedGrad(e) : layer->OwnedParam(e)).clone());
    }
  }
  out->push_back(torch::tensor(ids, torch::kInt64).view({-1, 2}));
  out->insert(out->end(), tensors.begin(), tensors.end());
}

// One rank of a run; writes "loss\n" per iteration and the owned experts' gradients of the first
// iteration to files. Returns the process exit code.
int RunRank(const RunSpec& spec, int rank, int port, int batch) {
  torch::set_num_threads(1);
  std::unique_ptr<InProcessGroup> single;
  std::unique_ptr<Communicator> gloo;
  Communicator* comm = nullptr;
  if (spec.world == 1) {
    single = std::make_unique<InProcessGroup>(1);
    comm = single->rank(0);
  } else {
    GlooOptions o;
    o.rank = rank;
    o.world_size = spec.world;
    o.master_port = port;
    o.prefix = spec.name;
    o.timeout = absl::Seconds(60);
    auto c = CreateGlooCommunicator(o);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
      return 10;
    }
    gloo = std::move(*c);
    comm = gloo.get();
  }
  // Slow "devices" so that calibration finds extra copies worth their transfer.
  placement::Cluster cluster = placement::Cluster::Uniform(spec.nodes, spec.world / spec.nodes,
                                                           int64_t{1} << 30, 1e7, 1e10, 1e10);
  TrainerConfig config = Config(batch, spec.float64);
  config.layers = spec.layers;
  config.calibration.enabled = spec.calibration;
  config.calibration.free_copies = spec.calibration_copies;
  auto data = TextData::Load(config.data_path, config.seq_len);
  if (!data.ok()) return 11;
  placement::ModelSpec model;
  {
    Trainer probe(config, comm, &cluster, nullptr, *data);
    model = probe.PlacementModel();
  }
  model.attention_forward_seconds = 1e-4;
  placement::CostModel cost(cluster, model);
  // Shadows are decided after the gate with the cost model; calibration only when asked for.
  const bool needs_cost = spec.calibration || spec.policy == "fastermoe";
  std::unique_ptr<AsyncLane> lane;
  if (spec.overlap) {
    absl::StatusOr<std::unique_ptr<Communicator>> lane_comm = comm->CreateLane();
    if (!lane_comm.ok()) return 14;
    lane = std::make_unique<AsyncLane>(*std::move(lane_comm), absl::Seconds(60));
  }
  Trainer trainer(config, comm, &cluster, needs_cost ? &cost : nullptr, *data, lane.get());
  std::unique_ptr<PlanSource> plans;
  if (!spec.fssdp) {
    plans = std::make_unique<FixedPlanSource>(ExpertParallelPlan(cluster, model));
  } else if (spec.all_replicated) {
    placement::Plan p = ExpertParallelPlan(cluster, model);
    p.semantics = placement::ReplicaSemantics::kEphemeral;
    for (auto& layer : p.layers) {
      for (auto& holders : layer.replicas) {
        holders.clear();
        for (int d = 0; d < spec.world; ++d) holders.push_back(d);
      }
    }
    plans = std::make_unique<FixedPlanSource>(p);
  } else {
    plans = std::make_unique<RandomPlans>(cluster, model, spec.policy, spec.remat);
  }
  std::ofstream losses(Tmp(absl::StrCat(spec.name, "_rank", rank, ".loss")));
  std::ofstream grads(Tmp(absl::StrCat(spec.name, "_rank", rank, ".grad")));
  losses.precision(17);
  grads.precision(17);
  placement::ModelLoad last;
  int calibrated = 0, dropped = 0;
  bool corrupted = !(spec.corrupt_replica && rank == 1);
  if (!corrupted) {
    for (auto& layer : trainer.moe_layers()) {
      layer->set_gradient_hook([&](int, bool owned, torch::Tensor& grad) {
        if (owned || corrupted) return;
        torch::Tensor w1 = grad.narrow(0, 0, int64_t{config.d_model} * config.d_ffn)
                               .view({config.d_model, config.d_ffn});
        torch::Tensor first = w1[0].clone();
        w1[0].copy_(w1[1]);
        w1[1].copy_(first);
        corrupted = true;
        std::ofstream(Tmp(spec.name + "_corrupted")) << "1";
      });
    }
  }
  for (int it = 0; it < spec.iterations; ++it) {
    if (it == 1 && spec.corrupt_replica) {
      for (auto& layer : trainer.moe_layers()) layer->set_gradient_hook(nullptr);
    }
    std::shared_ptr<const placement::Plan> plan = plans->Next(it, last);
    if (absl::Status s = trainer.ApplyPlan(*plan); !s.ok()) {
      std::fprintf(stderr, "apply: %s\n", s.ToString().c_str());
      return 12;
    }
    if (spec.dump && it == 0) {
      std::vector<torch::Tensor> init;
      for (const torch::Tensor& p : trainer.DenseParameters()) init.push_back(p.detach().clone());
      init.push_back(torch::tensor({static_cast<int64_t>(init.size())}, torch::kInt64));
      AppendOwned(trainer, /*grads=*/false, &init);
      torch::save(init, Tmp(absl::StrCat(spec.name, "_rank", rank, "_init.pt")));
    }
    absl::StatusOr<StepResult> r = trainer.Step(it);
    if (!r.ok()) {
      std::fprintf(stderr, "step %d: %s\n", it, r.status().ToString().c_str());
      return 13;
    }
    losses << r->loss << "\n";
    if (spec.dump) {
      std::vector<torch::Tensor> step = {trainer.last_dense_gradient().clone()};
      AppendOwned(trainer, /*grads=*/true, &step);
      torch::save(step, Tmp(absl::StrCat(spec.name, "_rank", rank, "_it", it, ".pt")));
    }
    last = r->global_counts;
    calibrated += r->calibration_copies;
    dropped += r->calibration_dropped;
    if (it == 0) {
      for (auto& layer : trainer.moe_layers()) {
        for (int e : layer->OwnedExperts()) {
          torch::Tensor g = layer->OwnedGrad(e);
          grads << layer->layer() << " " << e << " " << g.sum().item<double>() << " "
                << g.abs().sum().item<double>() << "\n";
        }
      }
    }
  }
  if (spec.calibration) {
    std::ofstream(Tmp(spec.name + "_calibrated")) << calibrated << " " << dropped;
  }
  std::ofstream(Tmp(absl::StrCat(spec.name, "_rank", rank, ".bytes")))
      << comm->counters().sent(CommKind::kSparseAllGather) << " "
      << comm->counters().sent(CommKind::kSparseReduceScatter) << " "
      << comm->counters().sent(CommKind::kMigration);
  return 0;
}

void RunWorld(const RunSpec& spec, int batch) {
  const int port = FreePort();
  std::vector<pid_t> pids;
  for (int r = 0; r < spec.world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) _exit(RunRank(spec, r, port, batch));
    pids.push_back(pid);
  }
  for (size_t r = 0; r < pids.size(); ++r) {
    int status = 0;
    waitpid(pids[r], &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << spec.name << " rank " << r << " crashed";
    ASSERT_EQ(WEXITSTATUS(status), 0) << spec.name << " rank " << r;
  }
}

std::vector<double> Losses(const std::string& name) {
  std::ifstream in(Tmp(name + "_rank0.loss"));
  std::vector<double> out;
  double v;
  while (in >> v) out.push_back(v);
  return out;
}

void ExpectSameLosses(const std::string& name, const std::vector<double>& ref) {
  std::vector<double> got = Losses(name);
  ASSERT_EQ(got.size(), ref.size()) << name;
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_LT(std::abs(got[i] - ref[i]) / std::abs(ref[i]), 1e-4)
        << name << " iteration " << i << ": " << got[i] << " vs " << ref[i];
  }
}

class EquivalenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    WriteTextFile();
    // The single-process reference sees the global batch of 2 ranks x 2 sequences.
    RunWorld(RunSpec{"ref2", 1}, 4);
    RunWorld(RunSpec{"ref4", 1}, 8);
  }
};

TEST_F(EquivalenceTest, ReferenceLearns) {
  std::vector<double> ref = Losses("ref2");
  ASSERT_EQ(ref.size(), static_cast<size_t>(kIterations));
  EXPECT_LT(ref.back(), ref.front()) << "loss should fall";
}

TEST_F(EquivalenceTest, ExpertParallelMatchesReference) {
  RunWorld(RunSpec{"ep2", 2, false}, 2);
  ExpectSameLosses("ep2", Losses("ref2"));
}

TEST_F(EquivalenceTest, FssdpWithChangingPlansAndReshardMatchesReference) {
  RunWorld(RunSpec{"fssdp2", 2, true}, 2);
  ExpectSameLosses("fssdp2", Losses("ref2"));
  RunWorld(RunSpec{"fssdp4", 4, true}, 2);
  ExpectSameLosses("fssdp4", Losses("ref4"));
}

// Two nodes of two ranks: whenever both ranks of the other node hold an expert, its chunk goes
// through a relay (spAG) and its gradients are summed there first (spRS); training must not notice.
TEST_F(EquivalenceTest, FssdpOverTheRelayTreeMatchesReference) {
  RunSpec spec{"fssdp4_nodes", 4, true};
  spec.nodes = 2;
  RunWorld(spec, 2);
  ExpectSameLosses("fssdp4_nodes", Losses("ref4"));
  // The random plans do send through relays (phase-1 edges) in this shape.
  const placement::Cluster cluster =
      placement::Cluster::Uniform(2, 2, int64_t{1} << 30, 1e7, 1e10, 1e10);
  placement::ModelSpec model;
  model.layers.push_back(placement::LayerSpec{4, 1, 1, 1});
  RandomPlans plans(cluster, model);
  int relayed = 0;
  for (int it = 0; it < kIterations; ++it) {
    const auto plan = plans.Next(it, {});
    std::vector<placement::SparseEdge> edges;
    for (int e = 0; e < plan->layers[0].num_experts(); ++e) {
      placement::AppendSparseEdges(&cluster, plan->layers[0], e, &edges);
    }
    for (const auto& edge : edges) relayed += edge.phase == 1;
  }
  EXPECT_GT(relayed, 0);
}

TEST_F(EquivalenceTest, FssdpWithRematerializationMatchesReference) {
  RunWorld(RunSpec{"fssdp2_rm", 2, true, Remat::kAll}, 2);
  ExpectSameLosses("fssdp2_rm", Losses("ref2"));
}

// The schedule the cost model charges: spAG prefetched ahead of attention and spRS overlapping the
// backward on a lane, with each layer re-materialized or resident as the plan says, on four
// layers (so the prefetch window and the one-layer-early re-gathers are all exercised); and the
// same plans run blocking.
TEST_F(EquivalenceTest, OverlappedScheduleWithPerLayerRematerializationMatchesReference) {
  RunWorld(RunSpec{"ref4_deep", 1, false, Remat::kNone, false, false, kIterations, 1, 1, "hecate",
                   true, 4},
           8);
  RunSpec spec{"fssdp4_mixed", 4, true, Remat::kMixed};
  spec.layers = 4;
  spec.nodes = 2;
  RunWorld(spec, 2);
  ExpectSameLosses("fssdp4_mixed", Losses("ref4_deep"));
  spec.name = "fssdp4_mixed_blocking";
  spec.overlap = false;
  RunWorld(spec, 2);
  ExpectSameLosses("fssdp4_mixed_blocking", Losses("ref4_deep"));
}

TEST_F(EquivalenceTest, FssdpWithCalibrationMatchesReference) {
  RunWorld(RunSpec{"fssdp2_cal", 2, true, Remat::kNone, /*calibration=*/true}, 2);
  ExpectSameLosses("fssdp2_cal", Losses("ref2"));
  int calibrated = 0;
  std::ifstream(Tmp("fssdp2_cal_calibrated")) >> calibrated;
  EXPECT_GT(calibrated, 0) << "calibration never added a copy: the option was not exercised";
}

// Calibration within the plan's memory: it can only swap planned copies for others (each rank
// drops the same copies from its spRS schedule, frees them, gathers the new ones late).
TEST_F(EquivalenceTest, FssdpWithCalibrationSwapsMatchesReference) {
  RunSpec spec{"fssdp4_swap", 4, true, Remat::kNone, /*calibration=*/true};
  spec.calibration_copies = 0;
  spec.nodes = 2;
  RunWorld(spec, 2);
  ExpectSameLosses("fssdp4_swap", Losses("ref4"));
  int added = 0, dropped = 0;
  std::ifstream(Tmp("fssdp4_swap_calibrated")) >> added >> dropped;
  EXPECT_GT(dropped, 0) << "calibration never swapped a copy: the swaps were not exercised";
  EXPECT_EQ(added, dropped) << "no free memory: every copy gathered must replace a planned one";
  // With re-materialization the swapped copies are the ones re-gathered before backward.
  spec.name = "fssdp4_swap_rm";
  spec.remat = Remat::kAll;
  RunWorld(spec, 2);
  ExpectSameLosses("fssdp4_swap_rm", Losses("ref4"));
  std::ifstream(Tmp("fssdp4_swap_rm_calibrated")) >> added >> dropped;
  EXPECT_GT(dropped, 0);
}

// The same run with the plans labelled as a baseline's: workers run them as published.
TEST_F(EquivalenceTest, PlansOfAPolicyThatDoesNotCalibrateRunAsPublished) {
  RunSpec spec{"fssdp4_flex", 4, true, Remat::kNone, /*calibration=*/true};
  spec.calibration_copies = 0;
  spec.nodes = 2;
  spec.policy = "flexmoe";
  RunWorld(spec, 2);
  ExpectSameLosses("fssdp4_flex", Losses("ref4"));
  int added = -1, dropped = -1;
  std::ifstream(Tmp("fssdp4_flex_calibrated")) >> added >> dropped;
  EXPECT_EQ(added, 0);
  EXPECT_EQ(dropped, 0);
}

// Bytes rank 0 sent by spAG, spRS (or the replica AllReduce) and migration.
std::vector<int64_t> SentBytes(const std::string& name) {
  std::ifstream in(Tmp(name + "_rank0.bytes"));
  std::vector<int64_t> out(3, -1);
  in >> out[0] >> out[1] >> out[2];
  return out;
}

// The baselines run as their systems run them, on the same data plane: persistent replicas that
// keep parameters and Adam state on every holder, AllReduce their gradients among the holders and
// move state when the layout changes (FlexMoE, SmartMoE, EPLB); and FasterMoE's shadows, decided
// on each iteration's counts after the gate and broadcast then. The losses equal the reference's.
TEST_F(EquivalenceTest, BaselinesAsTheirSystemsRunThemMatchReference) {
  for (const std::string policy : {"eplb", "flexmoe", "smartmoe"}) {
    RunSpec spec{"persistent4_" + policy, 4, true};
    spec.nodes = 2;
    spec.policy = policy;
    RunWorld(spec, 2);
    ExpectSameLosses(spec.name, Losses("ref4"));
    const std::vector<int64_t> sent = SentBytes(spec.name);
    EXPECT_EQ(sent[0], 0) << policy << ": persistent replicas gather nothing";
    EXPECT_GT(sent[1], 0) << policy << ": the replicas' gradients were AllReduced";
    EXPECT_GT(sent[2], 0) << policy << ": new replicas received parameters and Adam state";
  }
  RunSpec spec{"shadow4", 4, true};
  spec.nodes = 2;
  spec.policy = "fastermoe";
  RunWorld(spec, 2);
  ExpectSameLosses("shadow4", Losses("ref4"));
  const std::vector<int64_t> sent = SentBytes("shadow4");
  EXPECT_GT(sent[0], 0) << "shadows were broadcast";
  EXPECT_GT(sent[1], 0) << "and their gradients reduced to the owners";
}

TEST_F(EquivalenceTest, ReplicatedExpertGradientEqualsExpertParallel) {
  RunWorld(RunSpec{"ep_grad", 2, false, Remat::kNone, false, false, 1}, 2);
  RunWorld(RunSpec{"rep_grad", 2, true, Remat::kNone, false, /*all_replicated=*/true, 1}, 2);
  for (int r = 0; r < 2; ++r) {
    std::ifstream a(Tmp(absl::StrCat("ep_grad_rank", r, ".grad")));
    std::ifstream b(Tmp(absl::StrCat("rep_grad_rank", r, ".grad")));
    int la, ea, lb, eb;
    double sa, aa, sb, ab;
    int n = 0;
    while (a >> la >> ea >> sa >> aa) {
      ASSERT_TRUE(b >> lb >> eb >> sb >> ab);
      EXPECT_EQ(la, lb);
      EXPECT_EQ(ea, eb);
      EXPECT_NEAR(sa, sb, 1e-9 * std::max(1.0, std::abs(sa)));
      EXPECT_NEAR(aa, ab, 1e-9 * std::max(1.0, aa));
      EXPECT_GT(aa, 0) << "expert " << ea << " got no gradient";
      ++n;
    }
    EXPECT_GT(n, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// The independent reference (tests/reference_moe.h): a plain dense MoE in LibTorch autograd,
// started from the run's initial parameters, against every gradient of every iteration.

struct ExpertDump {
  int layer, expert;
  torch::Tensor tensor;
};

// A rank's dump: the dense tensors (init: the parameters; a step: the flat reduced gradient) and
// its owned experts' tensors.
struct Dump {
  std::vector<torch::Tensor> dense;
  std::vector<ExpertDump> experts;
};

Dump LoadDump(const std::string& path, bool init) {
  std::vector<torch::Tensor> t;
  torch::load(t, path);
  Dump d;
  size_t at = 0;
  if (init) {
    // [dense..., count, ids, experts...]: the count is the first int64 tensor.
    for (; t[at].scalar_type() != torch::kInt64; ++at) d.dense.push_back(t[at]);
    ++at;
  } else {
    d.dense.push_back(t[at++]);
  }
  torch::Tensor ids = t[at++];
  for (int64_t i = 0; i < ids.size(0); ++i) {
    d.experts.push_back({static_cast<int>(ids[i][0].item<int64_t>()),
                         static_cast<int>(ids[i][1].item<int64_t>()), t[at++]});
  }
  return d;
}

// The worst relative error (reference_moe.h's RelativeError) of the run's losses and of every
// gradient it dumped, over all iterations, against the reference; `where` names it. `mutate`
// may change a step's dumps before they are compared.
double CompareWithReference(const RunSpec& spec, int batch, std::string* where,
                            const std::function<void(int, std::vector<Dump>*)>& mutate = {}) {
  reference::Config rc;
  rc.layers = spec.layers;
  rc.batch_per_rank = batch;
  rc.world = spec.world;
  rc.float64 = spec.float64;
  rc.text_path = TextFile();
  const TrainerConfig tc = Config(batch, spec.float64);
  rc.d_model = tc.d_model;
  rc.heads = tc.heads;
  rc.experts = tc.experts;
  rc.top_k = tc.top_k;
  rc.d_ffn = tc.d_ffn;
  rc.seq_len = tc.seq_len;
  rc.lr = tc.lr;
  rc.aux_loss = tc.aux_loss;
  rc.seed = tc.seed;
  std::vector<torch::Tensor> dense;
  std::vector<std::vector<torch::Tensor>> experts(rc.layers,
                                                  std::vector<torch::Tensor>(rc.experts));
  for (int r = 0; r < spec.world; ++r) {
    Dump d = LoadDump(Tmp(absl::StrCat(spec.name, "_rank", r, "_init.pt")), /*init=*/true);
    if (r == 0) dense = d.dense;
    for (ExpertDump& e : d.experts) experts[e.layer][e.expert] = e.tensor;
  }
  for (int l = 0; l < rc.layers; ++l) {
    for (int e = 0; e < rc.experts; ++e) {
      if (!experts[l][e].defined()) {
        *where = absl::StrCat("no rank owned expert ", l, "/", e);
        return std::numeric_limits<double>::infinity();
      }
    }
  }
  reference::Model ref(rc, dense, experts);
  const std::vector<double> losses = Losses(spec.name);
  double worst = 0;
  auto note = [&](double err, const std::string& what) {
    if (!(err <= worst)) {
      worst = err;
      *where = what;
    }
  };
  int compared = 0;
  for (int it = 0; it < spec.iterations; ++it) {
    const double loss = ref.Step(it);
    note(std::abs(losses.at(it) - loss) / std::abs(loss), absl::StrCat("loss, iteration ", it));
    std::vector<Dump> dumps;
    for (int r = 0; r < spec.world; ++r) {
      dumps.push_back(
          LoadDump(Tmp(absl::StrCat(spec.name, "_rank", r, "_it", it, ".pt")), /*init=*/false));
    }
    if (mutate) mutate(it, &dumps);
    const std::vector<torch::Tensor> want = ref.DenseGrads();
    int64_t offset = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      torch::Tensor got =
          dumps[0].dense[0].narrow(0, offset, want[i].numel()).view(want[i].sizes());
      offset += want[i].numel();
      note(reference::RelativeError(got, want[i]),
           absl::StrCat("dense parameter ", i, ", iteration ", it));
      ++compared;
    }
    for (int r = 0; r < spec.world; ++r) {
      for (const ExpertDump& e : dumps[r].experts) {
        note(reference::RelativeError(e.tensor, ref.ExpertGrad(e.layer, e.expert)),
             absl::StrCat("expert ", e.layer, "/", e.expert, " on rank ", r, ", iteration ", it));
        ++compared;
      }
    }
  }
  // Every dense parameter and every expert (at least once per iteration) was compared.
  const int per_iteration = static_cast<int>(ref.DenseGrads().size()) + rc.layers * rc.experts;
  if (compared < per_iteration * spec.iterations) {
    *where = absl::StrCat("only ", compared, " gradients compared");
    return std::numeric_limits<double>::infinity();
  }
  std::printf("%s: %d gradients and %d losses compared, worst relative error %.3g (%s)\n",
              spec.name.c_str(), compared, spec.iterations, worst, where->c_str());
  return worst;
}

// Changing plans with all three dispatch rules, a re-shard at iteration 10, re-materialization
// chosen per layer, calibration swaps, on 4 ranks in 2 nodes (so the relay tree is used).
RunSpec IndependentSpec(const std::string& name, bool float64) {
  RunSpec spec{name, 4, true, Remat::kMixed, /*calibration=*/true};
  spec.calibration_copies = 0;
  spec.nodes = 2;
  spec.float64 = float64;
  spec.dump = true;
  return spec;
}

TEST_F(EquivalenceTest, IndependentReferenceFloat64EveryGradientOfEveryIteration) {
  const RunSpec spec = IndependentSpec("indep4_f64", true);
  RunWorld(spec, 2);
  std::string where;
  const double worst = CompareWithReference(spec, 2, &where);
  EXPECT_LT(worst, 1e-5) << "worst at " << where;
  // The comparison sees one swapped pair of rows in one expert's reduced gradient.
  std::string mutated_where;
  const double mutated =
      CompareWithReference(spec, 2, &mutated_where, [](int it, std::vector<Dump>* dumps) {
        if (it != 0) return;
        for (Dump& d : *dumps) {
          if (d.experts.empty()) continue;
          torch::Tensor rows = d.experts[0].tensor.narrow(0, 0, 16 * 32).view({16, 32});
          torch::Tensor first = rows[0].clone();
          rows[0].copy_(rows[1]);
          rows[1].copy_(first);
          return;
        }
      });
  EXPECT_GT(mutated, 1e-5) << "a swapped pair of gradient rows went unnoticed";
}

// The same run with one replica's local gradient corrupted in the data plane (two rows swapped,
// before the sparse reduce, at iteration 0): the reference must notice.
TEST_F(EquivalenceTest, IndependentReferenceCatchesACorruptedReplicaGradient) {
  RunSpec spec = IndependentSpec("indep4_corrupt", true);
  spec.corrupt_replica = true;
  RunWorld(spec, 2);
  std::ifstream marker(Tmp("indep4_corrupt_corrupted"));
  ASSERT_TRUE(marker.good()) << "rank 1 held no replica with tokens at iteration 0";
  std::string where;
  const double worst = CompareWithReference(spec, 2, &where);
  EXPECT_GT(worst, 1e-5) << "a corrupted replica gradient went unnoticed";
}

TEST_F(EquivalenceTest, IndependentReferenceFloat32EveryGradientOfEveryIteration) {
  const RunSpec spec = IndependentSpec("indep4_f32", false);
  RunWorld(spec, 2);
  std::string where;
  EXPECT_LT(CompareWithReference(spec, 2, &where), 1e-3) << "worst at " << where;
}

// The persistent-replica baselines (state on every holder, gradients AllReduced) and FasterMoE's
// shadows against the same reference.
TEST_F(EquivalenceTest, IndependentReferenceBaselinesEveryGradientOfEveryIteration) {
  for (const std::string policy : {"eplb", "flexmoe", "smartmoe", "fastermoe"}) {
    RunSpec spec{"indep4_" + policy, 4, true};
    spec.nodes = 2;
    spec.policy = policy;
    spec.dump = true;
    RunWorld(spec, 2);
    std::string where;
    EXPECT_LT(CompareWithReference(spec, 2, &where), 1e-5) << policy << ": worst at " << where;
  }
}

}  // namespace
}  // namespace hecate::worker
