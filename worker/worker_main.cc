// hecate-worker: one training rank (one device) of a GPT-MoE job.
//
//   RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 hecate-worker
//   --controller=HOST:PORT
//
// Identity comes from flags, else torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
// MASTER_PORT, else Slurm's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (docs/launching.md).
// Rank 0 prints one "progress ..." line per logged iteration and a final "summary ..." line on
// stdout (hecate run parses them); logs go to stderr. Exit codes: 0 done, 2 usage, 3 a collective
// failed (a peer died or timed out), 4 bad input (data, checkpoint), 1 other.
#include <dirent.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/grpc_credentials.h"
#include "common/log.h"
#include "common/metrics_http.h"
#include "placement/calibration.h"
#include "placement/planning_loop.h"
#include "wire/convert.h"
#include "wire/trace.h"
#include "worker/agent/agent.h"
#include "worker/comm/fake_communicator.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/model/checkpoint.h"
#include "worker/model/trainer.h"
#include "worker/plan_source.h"
#include "worker/worker_metrics.h"

ABSL_FLAG(int, rank, -1, "Rank (default: $RANK, then $SLURM_PROCID)");
ABSL_FLAG(int, world_size, -1, "World size (default: $WORLD_SIZE, then $SLURM_NTASKS)");
ABSL_FLAG(int, local_rank, -1, "Rank within the node (default: $LOCAL_RANK, then $SLURM_LOCALID)");
ABSL_FLAG(std::string, master_addr, "", "Rendezvous host (default: $MASTER_ADDR, else 127.0.0.1)");
ABSL_FLAG(int, master_port, -1, "Rendezvous port (default: $MASTER_PORT, else 29511)");
ABSL_FLAG(std::string, node, "", "Node name for topology (default: the host name)");
ABSL_FLAG(int, ranks_per_node, 0,
          "Treat every this many consecutive ranks as one node (0: group by --node)");
ABSL_FLAG(std::string, job, "hecate", "Job id at the controller");
ABSL_FLAG(std::string, controller, "",
          "Controller address host:port (default: $HECATE_CONTROLLER; empty: no controller)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "TLS to the controller: the CA its certificate chains to (env HECATE_TLS_CA_FILE)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "mTLS: this worker's certificate chain (env HECATE_TLS_CERT_FILE)");
ABSL_FLAG(std::string, tls_key_file, "", "mTLS: its private key (env HECATE_TLS_KEY_FILE)");
ABSL_FLAG(std::string, token_file, "",
          "A bearer token for the controller, sent over TLS (env HECATE_TOKEN_FILE)");
ABSL_FLAG(std::string, mode, "fssdp", "fssdp (sharded + sparse materialization) or ep (static)");
ABSL_FLAG(bool, local_planning, true,
          "Plan locally from all-gathered counts when there is no controller or it is unreachable");
ABSL_FLAG(std::string, policy, "hecate", "Policy of the local planner");
ABSL_FLAG(int, iterations, 50, "Iterations to train");
ABSL_FLAG(int, layers, 2, "Transformer-MoE blocks");
ABSL_FLAG(int, d_model, 64, "Model width");
ABSL_FLAG(int, heads, 4, "Attention heads");
ABSL_FLAG(int, experts, 8, "Experts per MoE layer");
ABSL_FLAG(int, top_k, 2, "Experts per token");
ABSL_FLAG(int, d_ffn, 128, "Expert hidden size");
ABSL_FLAG(int, seq_len, 32, "Sequence length");
ABSL_FLAG(int, batch, 8, "Sequences per rank per iteration");
ABSL_FLAG(double, lr, 3e-3, "Adam learning rate");
ABSL_FLAG(double, aux_loss, 0.0, "Auxiliary balance-loss coefficient");
ABSL_FLAG(double, gate_bias, 0.0, "Bias added to one gate logit per layer (skewed routing)");
ABSL_FLAG(int, skew_experts, 1, "Experts per layer that receive --gate_bias");
ABSL_FLAG(uint64_t, seed, 1, "Seed of initialization and data order");
ABSL_FLAG(bool, float64, false, "Compute in float64");
ABSL_FLAG(bool, overlap, true,
          "Run spAG/spRS asynchronously on a second set of connections, overlapped with compute "
          "(docs/cost-model.md \"Schedule\"); false: blocking, spAG at the step's start and spRS "
          "after the whole backward");
ABSL_FLAG(int, prefetch_layers, hecate::placement::kPrefetchLayers,
          "Start layer l's spAG at the start of layer (l - N)'s attention (with --overlap)");
ABSL_FLAG(bool, calibration, true,
          "Calibrate the plans of policies that calibrate (hecate, hecate-rm) on each "
          "iteration's actual counts after the gate, when the cost model says it pays "
          "(docs/placement.md \"Calibration\")");
ABSL_FLAG(int, calibration_copies, 0,
          "Calibration: extra copies per device and layer beyond the plan's (0: only swaps "
          "within the plan's memory)");
ABSL_FLAG(double, calibration_target, 1.06,
          "Calibration: swap copies while a layer's max/mean device tokens exceeds this (> 1)");
ABSL_FLAG(int64_t, calibration_cell_budget, hecate::placement::kCalibrationCellBudget,
          "Calibration: device x expert cells the swaps may evaluate per layer (0: no swaps)");
ABSL_FLAG(std::string, data, "/usr/share/games/fortunes/fortunes", "Training text (bytes)");
ABSL_FLAG(int, threads, 1, "Intra-op threads");
ABSL_FLAG(int, cpu, -1,
          "Pin this process (and every thread it starts) to this CPU core, so the rank's load is "
          "its own time as on a GPU (-1: no pinning)");
ABSL_FLAG(int, collective_timeout_s, 60, "Collective and rendezvous timeout");
ABSL_FLAG(std::string, checkpoint_dir, "", "Write checkpoints here");
ABSL_FLAG(int, checkpoint_every, 0, "Checkpoint every N iterations (0: never)");
ABSL_FLAG(bool, resume, false, "Resume from --checkpoint_dir/latest");
ABSL_FLAG(std::string, metrics_listen, "", "Prometheus /metrics address (empty: off)");
ABSL_FLAG(int, log_every, 1, "Progress line every N iterations (rank 0)");
ABSL_FLAG(std::string, plan_log, "",
          "Append 'iteration epoch version' per iteration to PATH.<rank> (for agreement checks)");
ABSL_FLAG(std::string, trace_out, "", "Record the load trace (global matrices) to this file");
ABSL_FLAG(double, attention_ms, 0.5,
          "Attention forward time the local planner assumes per block, ms");
ABSL_FLAG(double, device_gflops, 20, "Expert FLOP rate the planner assumes, GFLOP/s");
ABSL_FLAG(double, link_gbytes, 2, "Link bandwidth the planner assumes, GB/s");
ABSL_FLAG(double, copy_overhead_ms, 0,
          "Fixed compute the planner assumes an expert copy costs its holder per iteration "
          "(forward + backward; //bench:calibration measures it), ms");
ABSL_FLAG(int, reshard_period, 100,
          "Local planning: consider heterogeneous re-sharding every N iterations (taken when the "
          "predicted saving over N iterations covers the migration; 0: never)");
ABSL_FLAG(int, debug_plan_delay_ms, 0, "Test hook: delay each received plan by this long");
ABSL_FLAG(int, debug_exit_at, -1, "Test hook: exit(1) at the start of this iteration");
ABSL_FLAG(bool, report_loads, true, "Stream load reports to the controller");
ABSL_FLAG(int, step_interval_ms, 0, "Start iterations at least this far apart (pacing; 0: off)");
ABSL_FLAG(int, reconnect_max_ms, 2000, "Longest backoff between controller reconnects");

namespace hecate::worker {
namespace {

namespace pl = placement;

enum Exit { kDone = 0, kError = 1, kUsage = 2, kCollective = 3, kBadInput = 4 };

int EnvInt(const char* a, const char* b, int fallback) {
  for (const char* name : {a, b}) {
    if (name == nullptr) continue;
    const char* v = std::getenv(name);
    int out;
    if (v != nullptr && absl::SimpleAtoi(v, &out)) return out;
  }
  return fallback;
}

std::string EnvStr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v ? v : fallback;
}

// Node structure: consecutive ranks with the same node name (or --ranks_per_node blocks).
absl::StatusOr<pl::Cluster> DeriveCluster(Communicator& comm, const std::string& node,
                                          int ranks_per_node) {
  const int world = comm.world_size();
  std::vector<int64_t> ids(world);
  const int64_t mine = static_cast<int64_t>(std::hash<std::string>()(node) & 0x7fffffffffff);
  if (absl::Status s = comm.AllGatherInt64(&mine, 1, ids.data(), CommKind::kControl); !s.ok()) {
    return s;
  }
  pl::ClusterSpec spec;
  spec.name = "workers";
  const double flops = absl::GetFlag(FLAGS_device_gflops) * 1e9;
  for (int r = 0; r < world; ++r) {
    const bool new_node =
        ranks_per_node > 0 ? r % ranks_per_node == 0 : (r == 0 || ids[r] != ids[r - 1]);
    if (new_node)
      spec.nodes.push_back({absl::StrCat("node", spec.nodes.size()), 0, int64_t{4} << 30, flops});
    ++spec.nodes.back().num_devices;
  }
  const double bw = absl::GetFlag(FLAGS_link_gbytes) * 1e9;
  spec.intra_node_bandwidth_bytes_per_second = bw;
  spec.inter_node_bandwidth_bytes_per_second = bw / 2;
  spec.link_latency_seconds = 50e-6;
  // With the lane, transfers run beside the step's compute (on CPU workers the lane mostly waits on
  // its peers and the kernel's socket copies, //bench:calibration); blocking, they take its time.
  spec.transfers_overlap_compute = absl::GetFlag(FLAGS_overlap);
  return pl::Cluster::Create(spec);
}

// Pins every thread of this process to `cpu`: the ones running now (a BLAS pool starts when its
// library loads) and, through the mask they inherit, every one started later (LibTorch's, Gloo's,
// the lane's).
absl::Status PinProcess(int cpu) {
  if (cpu >= CPU_SETSIZE) return absl::InvalidArgumentError(absl::StrCat("no CPU ", cpu));
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return absl::UnavailableError("cannot list /proc/self/task");
  absl::Status status;
  while (dirent* entry = readdir(tasks)) {
    int tid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &tid)) continue;
    if (sched_setaffinity(tid, sizeof(set), &set) != 0) {
      status = absl::InvalidArgumentError(
          absl::StrCat("cannot pin thread ", tid, " to CPU ", cpu, ": ", std::strerror(errno)));
    }
  }
  closedir(tasks);
  return status;
}

// The median of `v` (0 when empty): a step time robust to this machine's stalls.
double MedianSeconds(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// LibTorch's CPU allocator takes every tensor from malloc. glibc serves blocks above its mmap
// threshold (128 KiB, rising dynamically) with fresh mappings and returns freed heap tops to the
// kernel, so the activations a step allocates and frees (tens of MiB per MoE layer) fault their
// pages in again every iteration, a large share of a step (docs/benchmarks.md). Blocks up to
// 32 MiB (glibc's largest threshold) come from the heap, and freed memory up to 1 GiB stays mapped
// for the next step.
void KeepFreedMemory() {
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && mallopt(M_TOP_PAD, 64 << 20) == 1;
  if (!ok) std::fprintf(stderr, "hecate-worker: mallopt refused a setting (continuing)\n");
}

int Main(int argc, char** argv) {
  KeepFreedMemory();
  const std::vector<std::string> args =
      ParseFlags(argc, argv,
                 "One Hecate training rank (GPT-MoE over FSSDP). See docs/launching.md.\n"
                 "Usage: hecate-worker [flags]   (identity from flags, torchrun or Slurm env)");
  if (!args.empty()) {
    std::fprintf(stderr, "hecate-worker: unexpected argument '%s' (see --help)\n", args[0].c_str());
    return kUsage;
  }
  int rank = absl::GetFlag(FLAGS_rank);
  if (rank < 0) rank = EnvInt("RANK", "SLURM_PROCID", 0);
  int world = absl::GetFlag(FLAGS_world_size);
  if (world < 0) world = EnvInt("WORLD_SIZE", "SLURM_NTASKS", 1);
  int local_rank = absl::GetFlag(FLAGS_local_rank);
  if (local_rank < 0) local_rank = EnvInt("LOCAL_RANK", "SLURM_LOCALID", rank);
  std::string master_addr = absl::GetFlag(FLAGS_master_addr);
  if (master_addr.empty()) master_addr = EnvStr("MASTER_ADDR", "127.0.0.1");
  int master_port = absl::GetFlag(FLAGS_master_port);
  if (master_port < 0) master_port = EnvInt("MASTER_PORT", nullptr, 29511);
  std::string controller = absl::GetFlag(FLAGS_controller);
  if (controller.empty()) controller = EnvStr("HECATE_CONTROLLER", "");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> controller_credentials =
      ChannelCredentialsFor(WithEnvironment(
          ClientTls{absl::GetFlag(FLAGS_tls_ca_file), absl::GetFlag(FLAGS_tls_cert_file),
                    absl::GetFlag(FLAGS_tls_key_file), absl::GetFlag(FLAGS_token_file)}));
  if (!controller_credentials.ok()) {
    std::fprintf(stderr, "hecate-worker: %s\n",
                 std::string(controller_credentials.status().message()).c_str());
    return kUsage;
  }
  std::string node = absl::GetFlag(FLAGS_node);
  if (node.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    node = host;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (world < 1 || rank < 0 || rank >= world) {
    std::fprintf(stderr, "hecate-worker: rank %d is not in a world of %d\n", rank, world);
    return kUsage;
  }
  if (mode != "fssdp" && mode != "ep") {
    std::fprintf(stderr, "hecate-worker: --mode must be fssdp or ep, not '%s'\n", mode.c_str());
    return kUsage;
  }
  SetLogComponent(absl::StrCat("worker", rank));
  if (const int cpu = absl::GetFlag(FLAGS_cpu); cpu >= 0) {
    if (absl::Status s = PinProcess(cpu); !s.ok()) {
      std::fprintf(stderr, "hecate-worker: --cpu: %s\n", s.ToString().c_str());
      return kUsage;
    }
  }
  // Metrics.
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerMetrics metrics(registry);
  std::unique_ptr<MetricsHttpServer> metrics_server;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> m =
        MetricsHttpServer::Start(absl::GetFlag(FLAGS_metrics_listen), registry);
    if (!m.ok()) {
      std::fprintf(stderr, "hecate-worker: %s\n", m.status().ToString().c_str());
      return kUsage;
    }
    metrics_server = std::move(*m);
    std::printf("metrics on %s\n", metrics_server->address().c_str());
    std::fflush(stdout);
  }

  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const uint64_t incarnation =
      EnvInt("TORCHELASTIC_RESTART_COUNT", nullptr, -1) >= 0
          ? static_cast<uint64_t>(EnvInt("TORCHELASTIC_RESTART_COUNT", nullptr, 0)) + 1
          : static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()));

  TrainerConfig tc;
  tc.layers = absl::GetFlag(FLAGS_layers);
  tc.d_model = absl::GetFlag(FLAGS_d_model);
  tc.heads = absl::GetFlag(FLAGS_heads);
  tc.experts = absl::GetFlag(FLAGS_experts);
  tc.top_k = absl::GetFlag(FLAGS_top_k);
  tc.d_ffn = absl::GetFlag(FLAGS_d_ffn);
  tc.seq_len = absl::GetFlag(FLAGS_seq_len);
  tc.batch = absl::GetFlag(FLAGS_batch);
  tc.lr = absl::GetFlag(FLAGS_lr);
  tc.aux_loss = absl::GetFlag(FLAGS_aux_loss);
  tc.gate_bias = absl::GetFlag(FLAGS_gate_bias);
  tc.skew_experts = absl::GetFlag(FLAGS_skew_experts);
  tc.seed = absl::GetFlag(FLAGS_seed);
  tc.float64 = absl::GetFlag(FLAGS_float64);
  tc.prefetch_layers = absl::GetFlag(FLAGS_prefetch_layers);
  tc.calibration.enabled = absl::GetFlag(FLAGS_calibration);
  tc.calibration.free_copies = absl::GetFlag(FLAGS_calibration_copies);
  tc.calibration.options.target = absl::GetFlag(FLAGS_calibration_target);
  tc.calibration.options.swap_cell_budget = absl::GetFlag(FLAGS_calibration_cell_budget);
  tc.data_path = absl::GetFlag(FLAGS_data);
  if (tc.layers < 1 || tc.experts < 1 || tc.top_k < 1 || tc.top_k > tc.experts ||
      tc.d_model % tc.heads != 0 || tc.batch < 1 || tc.seq_len < 1) {
    std::fprintf(stderr,
                 "hecate-worker: invalid model shape (need layers, experts >= 1, "
                 "1 <= top_k <= experts, d_model divisible by heads)\n");
    return kUsage;
  }
  if (!(absl::GetFlag(FLAGS_copy_overhead_ms) >= 0) || !(absl::GetFlag(FLAGS_device_gflops) > 0) ||
      !(absl::GetFlag(FLAGS_link_gbytes) > 0) || absl::GetFlag(FLAGS_reshard_period) < 0 ||
      tc.prefetch_layers < 0 || tc.calibration.free_copies < 0 ||
      !(tc.calibration.options.target > 1) || tc.calibration.options.swap_cell_budget < 0) {
    std::fprintf(stderr,
                 "hecate-worker: need --copy_overhead_ms >= 0, --device_gflops > 0, "
                 "--link_gbytes > 0, --reshard_period >= 0, --prefetch_layers >= 0, "
                 "--calibration_copies >= 0, "
                 "--calibration_target > 1, --calibration_cell_budget >= 0\n");
    return kUsage;
  }
  absl::StatusOr<TextData> data = TextData::Load(tc.data_path, tc.seq_len);
  if (!data.ok()) {
    std::fprintf(stderr, "hecate-worker: %s\n", data.status().ToString().c_str());
    return kBadInput;
  }

  // Communicator.
  std::unique_ptr<InProcessGroup> single;
  std::unique_ptr<Communicator> gloo;
  Communicator* comm = nullptr;
  if (world == 1) {
    single = std::make_unique<InProcessGroup>(1);
    comm = single->rank(0);
  } else {
    GlooOptions o;
    o.rank = rank;
    o.world_size = world;
    o.master_addr = master_addr;
    o.master_port = master_port;
    o.prefix = absl::StrCat(absl::GetFlag(FLAGS_job), "/", master_port, "/",
                            EnvInt("TORCHELASTIC_RESTART_COUNT", nullptr, 0));
    o.timeout = absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_s));
    absl::StatusOr<std::unique_ptr<Communicator>> c = CreateGlooCommunicator(o);
    if (!c.ok()) {
      std::fprintf(stderr, "hecate-worker: %s\n", c.status().ToString().c_str());
      return kCollective;
    }
    gloo = std::move(*c);
    comm = gloo.get();
  }
  absl::StatusOr<pl::Cluster> cluster =
      DeriveCluster(*comm, node, absl::GetFlag(FLAGS_ranks_per_node));
  if (!cluster.ok()) {
    std::fprintf(stderr, "hecate-worker: %s\n", cluster.status().ToString().c_str());
    return kCollective;
  }
  pl::ModelSpec model = PlacementModelFor(tc);
  model.attention_forward_seconds = absl::GetFlag(FLAGS_attention_ms) * 1e-3;
  for (pl::LayerSpec& l : model.layers)
    l.copy_seconds = absl::GetFlag(FLAGS_copy_overhead_ms) * 1e-3;
  pl::CostModel cost(*cluster, model);
  // The sparse collectives' lane: its own connections and thread (declared before the trainer,
  // which submits to it, so it outlives it).
  std::unique_ptr<AsyncLane> lane;
  if (absl::GetFlag(FLAGS_overlap)) {
    absl::StatusOr<std::unique_ptr<Communicator>> lane_comm = comm->CreateLane();
    if (!lane_comm.ok()) {
      std::fprintf(stderr, "hecate-worker: %s\n", lane_comm.status().ToString().c_str());
      return kCollective;
    }
    lane = std::make_unique<AsyncLane>(*std::move(lane_comm),
                                       absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_s)));
  }
  Trainer trainer(tc, comm, &*cluster, tc.calibration.enabled ? &cost : nullptr, *data, lane.get());
  Trainer* t = &trainer;

  // Plan sources.
  std::unique_ptr<ControllerAgent> agent;
  // In ep mode an agent only reports (its plans are ignored): the reporting-overhead benchmark.
  if (!controller.empty()) {
    AgentConfig ac;
    ac.controller = controller;
    ac.credentials = *controller_credentials;
    wire::WorkerRegistration reg;
    reg.job_id = absl::GetFlag(FLAGS_job);
    reg.rank = rank;
    reg.world_size = world;
    reg.node = absl::GetFlag(FLAGS_ranks_per_node) > 0
                   ? absl::StrCat(node, "/", rank / absl::GetFlag(FLAGS_ranks_per_node))
                   : node;
    reg.local_rank = local_rank;
    reg.device_kind = "cpu";
    reg.device_memory_bytes = int64_t{4} << 30;
    reg.incarnation = incarnation;
    reg.model = model;
    reg.links = cluster->spec();
    reg.calibration = tc.calibration;
    ac.registration = wire::ToProto(reg);
    ac.plan_delay = absl::Milliseconds(absl::GetFlag(FLAGS_debug_plan_delay_ms));
    ac.backoff_max = absl::Milliseconds(std::max(100, absl::GetFlag(FLAGS_reconnect_max_ms)));
    agent = std::make_unique<ControllerAgent>(ac);
    agent->Start();
  }
  std::unique_ptr<LocalPlanner> local;
  if (mode == "fssdp" && absl::GetFlag(FLAGS_local_planning)) {
    pl::PlanningConfig lc;
    lc.policy = absl::GetFlag(FLAGS_policy);
    lc.reshard_period = absl::GetFlag(FLAGS_reshard_period);
    auto lp = LocalPlanner::Create(*cluster, model, lc);
    if (!lp.ok()) {
      std::fprintf(stderr, "hecate-worker: %s\n", lp.status().ToString().c_str());
      return kUsage;
    }
    local = std::move(*lp);
  }

  // Start: a checkpoint's plan, else static even sharding.
  uint64_t start = 0;
  auto applied = std::make_shared<const pl::Plan>(ExpertParallelPlan(*cluster, model));
  const std::string ckpt_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  if (absl::GetFlag(FLAGS_resume)) {
    absl::StatusOr<CheckpointInfo> info = ReadCheckpointInfo(ckpt_dir, world);
    if (!info.ok()) {
      std::fprintf(stderr, "hecate-worker: --resume: %s\n", info.status().ToString().c_str());
      return kBadInput;
    }
    applied = std::make_shared<const pl::Plan>(info->plan);
    if (absl::Status s = t->ApplyPlan(*applied); !s.ok()) {
      std::fprintf(stderr, "hecate-worker: %s\n", s.ToString().c_str());
      return kBadInput;
    }
    if (absl::Status s = RestoreCheckpoint(ckpt_dir, *info, rank, *t); !s.ok()) {
      std::fprintf(stderr, "hecate-worker: --resume: %s\n", s.ToString().c_str());
      return kBadInput;
    }
    start = info->next_iteration;
    LogInfo("resumed", LogFields()("iteration", start)("plan", applied->id.version));
  } else if (absl::Status s = t->ApplyPlan(*applied); !s.ok()) {
    std::fprintf(stderr, "hecate-worker: %s\n", s.ToString().c_str());
    return kError;
  }
  if (local) local->Seed(applied);
  pl::PlanId controller_applied = applied->policy == "ep" ? pl::PlanId{} : applied->id;

  std::unique_ptr<wire::TraceWriter> trace;
  if (!absl::GetFlag(FLAGS_trace_out).empty() && rank == 0) {
    absl::StatusOr<std::unique_ptr<wire::TraceWriter>> tw =
        wire::TraceWriter::Open(absl::GetFlag(FLAGS_trace_out), cluster->spec(), model);
    if (!tw.ok()) {
      std::fprintf(stderr, "hecate-worker: %s\n", tw.status().ToString().c_str());
      return kBadInput;
    }
    trace = std::move(*tw);
  }
  std::ofstream plan_log;
  if (!absl::GetFlag(FLAGS_plan_log).empty()) {
    plan_log.open(absl::StrCat(absl::GetFlag(FLAGS_plan_log), ".", rank), std::ios::app);
  }

  const int iterations = absl::GetFlag(FLAGS_iterations);
  const int log_every = std::max(1, absl::GetFlag(FLAGS_log_every));
  pl::ModelLoad last_global;
  double first_loss = 0, last_loss = 0, step_sum = 0;
  std::vector<double> step_times;
  int64_t tokens_sum = 0;
  int64_t calibration_gathered = 0, calibration_dropped = 0;
  int64_t peak_copy_bytes = 0, max_predicted_copy_bytes = 0;
  double spag_sum = 0, spag_exposed_sum = 0, sprs_sum = 0, sprs_exposed_sum = 0;
  int steps = 0, plans_applied = 0;
  bool local_mode = false;
  const absl::Duration pace = absl::Milliseconds(absl::GetFlag(FLAGS_step_interval_ms));
  absl::Time next_start = absl::Now();
  for (uint64_t it = start; it < static_cast<uint64_t>(iterations); ++it) {
    if (pace > absl::ZeroDuration()) {
      absl::SleepFor(next_start - absl::Now());
      next_start = std::max(next_start + pace, absl::Now());
    }
    if (static_cast<int64_t>(it) == absl::GetFlag(FLAGS_debug_exit_at)) {
      LogError("exiting on --debug_exit_at", LogFields()("iteration", it));
      std::fflush(stdout);
      _exit(kError);
    }
    // Agree on the plan for this iteration.
    std::shared_ptr<const pl::Plan> next;
    if (mode == "fssdp") {
      absl::StatusOr<PlanAgreement::Outcome> o =
          PlanAgreement::Agree(*comm, agent.get(), it, controller_applied);
      if (!o.ok()) {
        std::fprintf(stderr, "hecate-worker: rank %d: plan agreement failed: %s\n", rank,
                     o.status().ToString().c_str());
        return kCollective;
      }
      if (o->plan != nullptr) {
        next = o->plan;
        controller_applied = next->id;
        if (local) local->Seed(next);
        local_mode = false;
      } else if (local && (agent == nullptr || !o->all_connected)) {
        if (!local_mode && agent != nullptr) {
          LogWarn("controller unreachable from some rank; planning locally (fail-static)",
                  LogFields()("iteration", it));
        }
        local_mode = agent != nullptr;
        next = local->Next(it, last_global);
      } else if (local) {
        local->Observe(last_global);
      }
      if (o->all_connected) local_mode = false;  // back under the controller's plans
    }
    if (next != nullptr && next != applied) {
      if (absl::Status s = t->ApplyPlan(*next); !s.ok()) {
        std::fprintf(stderr, "hecate-worker: rank %d: applying plan %llu: %s\n", rank,
                     static_cast<unsigned long long>(next->id.version), s.ToString().c_str());
        return kCollective;
      }
      applied = next;
      ++plans_applied;
    }
    if (plan_log.is_open()) {
      plan_log << it << " " << applied->id.epoch << " " << applied->id.version << "\n";
      plan_log.flush();
    }
    absl::StatusOr<StepResult> r = t->Step(it);
    if (!r.ok()) {
      std::fprintf(stderr, "hecate-worker: rank %d: iteration %llu failed: %s\n", rank,
                   static_cast<unsigned long long>(it), r.status().ToString().c_str());
      return r.status().code() == absl::StatusCode::kInternal ? kError : kCollective;
    }
    last_global = r->global_counts;
    if (trace) (void)trace->Append(it, r->global_counts);
    if (agent && absl::GetFlag(FLAGS_report_loads)) {
      wire::LoadReport rep;
      rep.job_id = absl::GetFlag(FLAGS_job);
      rep.rank = rank;
      rep.incarnation = incarnation;
      rep.iteration = it;
      rep.plan = controller_applied;
      rep.layers = r->local_counts;
      rep.timings.attention_seconds = r->times.attention / tc.layers;
      rep.timings.gate_seconds = r->times.gate;
      rep.timings.dispatch_seconds = r->times.dispatch;
      rep.timings.expert_seconds = r->times.expert;
      rep.timings.combine_seconds = r->times.combine;
      rep.timings.spag_seconds = r->times.spag;
      rep.timings.sprs_seconds = r->times.sprs;
      rep.timings.optimizer_seconds = r->times.optimizer;
      rep.timings.step_seconds = r->times.step;
      rep.tokens = int64_t{tc.batch} * tc.seq_len;
      rep.free_memory_bytes = int64_t{4} << 30;
      agent->Enqueue(wire::ToProto(rep));
    }
    // Metrics and progress.
    metrics.Step(r->times.step, r->loss, r->tokens);
    metrics.Phase("attention", r->times.attention);
    metrics.Phase("gate", r->times.gate);
    metrics.Phase("dispatch", r->times.dispatch);
    metrics.Phase("expert", r->times.expert);
    metrics.Phase("combine", r->times.combine);
    metrics.Phase("spag", r->times.spag);
    metrics.Phase("sprs", r->times.sprs);
    metrics.Phase("spag_exposed", r->times.spag_exposed);
    metrics.Phase("sprs_exposed", r->times.sprs_exposed);
    metrics.Phase("optimizer", r->times.optimizer);
    metrics.Phase("dense_allreduce", r->times.dense_allreduce);
    metrics.Calibration(r->calibration_copies, r->calibration_dropped);
    const int64_t predicted_copy_bytes =
        pl::CopyBytesPerDevice(*applied, *cluster, model)[static_cast<size_t>(rank)];
    metrics.SetCopyBytes(r->peak_copy_bytes, predicted_copy_bytes);
    peak_copy_bytes = std::max(peak_copy_bytes, r->peak_copy_bytes);
    max_predicted_copy_bytes = std::max(max_predicted_copy_bytes, predicted_copy_bytes);
    spag_sum += r->times.spag;
    spag_exposed_sum += r->times.spag_exposed;
    sprs_sum += r->times.sprs;
    sprs_exposed_sum += r->times.sprs_exposed;
    calibration_gathered += r->calibration_copies;
    calibration_dropped += r->calibration_dropped;
    metrics.SyncBytes(comm->counters());
    metrics.SetPlan(applied->id.epoch, applied->id.version);
    metrics.SetLocalPlanning(local_mode);
    if (agent) {
      metrics.SetConnected(agent->connected());
      metrics.SetReportCounters(agent->reports_sent(), agent->reports_dropped(),
                                agent->reports_rejected());
    }
    if (steps == 0) first_loss = r->loss;
    last_loss = r->loss;
    step_sum += r->times.step;
    step_times.push_back(r->times.step);
    tokens_sum += r->tokens;
    ++steps;
    if (rank == 0 && (it % log_every == 0 || it + 1 == static_cast<uint64_t>(iterations))) {
      const auto& tm = r->times;
      std::printf(
          "progress iter=%llu loss=%.4f tokens_per_s=%.0f balancedness=%.3f plan=%llu.%llu "
          "step_ms=%.1f attention_ms=%.1f gate_ms=%.1f dispatch_ms=%.1f expert_ms=%.1f "
          "combine_ms=%.1f spag_ms=%.1f spag_exposed_ms=%.1f sprs_ms=%.1f sprs_exposed_ms=%.1f "
          "optimizer_ms=%.1f peak_copy_bytes=%lld controller=%s\n",
          static_cast<unsigned long long>(it), r->loss, r->tokens / std::max(1e-9, tm.step),
          pl::Judge(*applied, r->global_counts, tc.calibration, cost, cost)
              .plan.prediction.balancedness,
          static_cast<unsigned long long>(applied->id.epoch),
          static_cast<unsigned long long>(applied->id.version), tm.step * 1e3, tm.attention * 1e3,
          tm.gate * 1e3, tm.dispatch * 1e3, tm.expert * 1e3, tm.combine * 1e3, tm.spag * 1e3,
          tm.spag_exposed * 1e3, tm.sprs * 1e3, tm.sprs_exposed * 1e3, tm.optimizer * 1e3,
          static_cast<long long>(r->peak_copy_bytes),
          agent == nullptr     ? "none"
          : local_mode         ? "unreachable"
          : agent->connected() ? "connected"
                               : "connecting");
      std::fflush(stdout);
    }
    const int every = absl::GetFlag(FLAGS_checkpoint_every);
    if (!ckpt_dir.empty() && every > 0 && (it + 1) % every == 0) {
      if (absl::Status s = SaveCheckpoint(ckpt_dir, it + 1, *t, *applied, *comm); !s.ok()) {
        std::fprintf(stderr, "hecate-worker: rank %d: checkpoint failed: %s\n", rank,
                     s.ToString().c_str());
        return s.code() == absl::StatusCode::kUnavailable ||
                       s.code() == absl::StatusCode::kDeadlineExceeded
                   ? kCollective
                   : kError;
      }
    }
  }
  if (agent) agent->Stop();
  // Job-wide figures for the summary: the most copy bytes any rank held at once, and the bytes
  // every rank sent by the sparse collectives (or the replicas' AllReduce) and by migrations.
  const int64_t mine[3] = {peak_copy_bytes,
                           comm->counters().sent(CommKind::kSparseAllGather) +
                               comm->counters().sent(CommKind::kSparseReduceScatter),
                           comm->counters().sent(CommKind::kMigration)};
  std::vector<int64_t> all(3 * static_cast<size_t>(world));
  if (absl::Status s = comm->AllGatherInt64(mine, 3, all.data(), CommKind::kControl); !s.ok()) {
    std::fprintf(stderr, "hecate-worker: rank %d: final exchange failed: %s\n", rank,
                 s.ToString().c_str());
    return kCollective;
  }
  int64_t job_peak_copy_bytes = 0, job_sparse_bytes = 0, job_migration_bytes = 0;
  for (int r = 0; r < world; ++r) {
    job_peak_copy_bytes = std::max(job_peak_copy_bytes, all[3 * r]);
    job_sparse_bytes += all[3 * r + 1];
    job_migration_bytes += all[3 * r + 2];
  }
  if (rank == 0) {
    std::printf(
        "summary iterations=%d first_loss=%.4f last_loss=%.4f mean_step_ms=%.1f "
        "tokens_per_s=%.0f plans_applied=%d final_plan=%llu.%llu sharding_version=%llu "
        "spag_bytes=%lld "
        "sprs_bytes=%lld a2a_bytes=%lld reports_dropped=%lld calibration_gathered=%lld "
        "calibration_dropped=%lld mean_spag_ms=%.2f mean_spag_exposed_ms=%.2f mean_sprs_ms=%.2f "
        "mean_sprs_exposed_ms=%.2f peak_copy_bytes=%lld predicted_copy_bytes=%lld overlap=%d "
        "median_step_ms=%.1f job_peak_copy_bytes=%lld job_sparse_bytes=%lld "
        "job_migration_bytes=%lld\n",
        steps, first_loss, last_loss, steps ? step_sum / steps * 1e3 : 0.0,
        step_sum > 0 ? tokens_sum / step_sum : 0.0, plans_applied,
        static_cast<unsigned long long>(applied->id.epoch),
        static_cast<unsigned long long>(applied->id.version),
        static_cast<unsigned long long>(applied->sharding_version),
        static_cast<long long>(comm->counters().sent(CommKind::kSparseAllGather)),
        static_cast<long long>(comm->counters().sent(CommKind::kSparseReduceScatter)),
        static_cast<long long>(comm->counters().sent(CommKind::kAllToAll)),
        static_cast<long long>(agent ? agent->reports_dropped() : 0),
        static_cast<long long>(calibration_gathered), static_cast<long long>(calibration_dropped),
        steps ? spag_sum / steps * 1e3 : 0.0, steps ? spag_exposed_sum / steps * 1e3 : 0.0,
        steps ? sprs_sum / steps * 1e3 : 0.0, steps ? sprs_exposed_sum / steps * 1e3 : 0.0,
        static_cast<long long>(peak_copy_bytes), static_cast<long long>(max_predicted_copy_bytes),
        lane != nullptr ? 1 : 0, MedianSeconds(step_times) * 1e3,
        static_cast<long long>(job_peak_copy_bytes), static_cast<long long>(job_sparse_bytes),
        static_cast<long long>(job_migration_bytes));
    std::fflush(stdout);
  }
  return kDone;
}

}  // namespace
}  // namespace hecate::worker

int main(int argc, char** argv) { return hecate::worker::Main(argc, argv); }
