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

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/grpc_credentials.h"
#include "common/log.h"
#include "placement/plan.h"
#include "worker/process_setup.h"
#include "worker/worker.h"

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
ABSL_FLAG(bool, float64, false, "Compute in float64 (CPU only)");
ABSL_FLAG(std::string, device, "",
          "cpu or cuda: where the whole model runs (default: cuda when this build has CUDA and a "
          "GPU is visible, else cpu); docs/gpu.md");
ABSL_FLAG(std::string, comm, "",
          "nccl or gloo: how collectives travel (default: nccl on cuda, gloo on cpu); gloo on cuda "
          "stages through pinned host memory, so several ranks can share one GPU");
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

// Flags and the torchrun / Slurm environment -> a WorkerConfig.
absl::StatusOr<WorkerConfig> ConfigFromFlags() {
  WorkerConfig c;
  c.rank = absl::GetFlag(FLAGS_rank);
  c.world_size = absl::GetFlag(FLAGS_world_size);
  c.local_rank = absl::GetFlag(FLAGS_local_rank);
  c.master_addr = absl::GetFlag(FLAGS_master_addr);
  c.master_port = absl::GetFlag(FLAGS_master_port);
  c.node = absl::GetFlag(FLAGS_node);
  c.controller = absl::GetFlag(FLAGS_controller);
  IdentityFromEnvironment(&c);
  c.ranks_per_node = absl::GetFlag(FLAGS_ranks_per_node);
  c.job = absl::GetFlag(FLAGS_job);

  absl::StatusOr<DeviceKind> device = ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return device.status();
  c.trainer.device = *device;
  absl::StatusOr<CommBackend> comm = ResolveComm(absl::GetFlag(FLAGS_comm), *device);
  if (!comm.ok()) return comm.status();
  c.comm = *comm;
  c.cpu = absl::GetFlag(FLAGS_cpu);
  c.threads = absl::GetFlag(FLAGS_threads);
  c.collective_timeout = absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_s));

  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentialsFor(WithEnvironment(
          ClientTls{absl::GetFlag(FLAGS_tls_ca_file), absl::GetFlag(FLAGS_tls_cert_file),
                    absl::GetFlag(FLAGS_tls_key_file), absl::GetFlag(FLAGS_token_file)}));
  if (!credentials.ok()) return credentials.status();
  c.credentials = *credentials;
  c.report_loads = absl::GetFlag(FLAGS_report_loads);
  c.reconnect_max = absl::Milliseconds(absl::GetFlag(FLAGS_reconnect_max_ms));
  c.debug_plan_delay = absl::Milliseconds(absl::GetFlag(FLAGS_debug_plan_delay_ms));

  TrainerConfig& t = c.trainer;
  t.layers = absl::GetFlag(FLAGS_layers);
  t.d_model = absl::GetFlag(FLAGS_d_model);
  t.heads = absl::GetFlag(FLAGS_heads);
  t.experts = absl::GetFlag(FLAGS_experts);
  t.top_k = absl::GetFlag(FLAGS_top_k);
  t.d_ffn = absl::GetFlag(FLAGS_d_ffn);
  t.seq_len = absl::GetFlag(FLAGS_seq_len);
  t.batch = absl::GetFlag(FLAGS_batch);
  t.lr = absl::GetFlag(FLAGS_lr);
  t.aux_loss = absl::GetFlag(FLAGS_aux_loss);
  t.gate_bias = absl::GetFlag(FLAGS_gate_bias);
  t.skew_experts = absl::GetFlag(FLAGS_skew_experts);
  t.seed = absl::GetFlag(FLAGS_seed);
  t.float64 = absl::GetFlag(FLAGS_float64);
  t.prefetch_layers = absl::GetFlag(FLAGS_prefetch_layers);
  t.calibration.enabled = absl::GetFlag(FLAGS_calibration);
  t.calibration.free_copies = absl::GetFlag(FLAGS_calibration_copies);
  t.calibration.options.target = absl::GetFlag(FLAGS_calibration_target);
  t.calibration.options.swap_cell_budget = absl::GetFlag(FLAGS_calibration_cell_budget);
  t.data_path = absl::GetFlag(FLAGS_data);
  c.mode = absl::GetFlag(FLAGS_mode);
  c.overlap = absl::GetFlag(FLAGS_overlap);
  c.iterations = absl::GetFlag(FLAGS_iterations);
  c.local_planning = absl::GetFlag(FLAGS_local_planning);
  c.policy = absl::GetFlag(FLAGS_policy);
  c.reshard_period = absl::GetFlag(FLAGS_reshard_period);
  c.assumptions = {absl::GetFlag(FLAGS_attention_ms), absl::GetFlag(FLAGS_device_gflops),
                   absl::GetFlag(FLAGS_link_gbytes), absl::GetFlag(FLAGS_copy_overhead_ms)};

  c.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  c.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  c.resume = absl::GetFlag(FLAGS_resume);
  c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  c.log_every = absl::GetFlag(FLAGS_log_every);
  c.plan_log = absl::GetFlag(FLAGS_plan_log);
  c.trace_out = absl::GetFlag(FLAGS_trace_out);
  c.step_interval = absl::Milliseconds(absl::GetFlag(FLAGS_step_interval_ms));
  c.debug_exit_at = absl::GetFlag(FLAGS_debug_exit_at);
  if (absl::Status s = Validate(c); !s.ok()) return s;
  return c;
}

int Main(int argc, char** argv) {
  if (absl::Status s = KeepFreedMemory(); !s.ok()) {
    std::fprintf(stderr, "hecate-worker: %s (continuing)\n", std::string(s.message()).c_str());
  }
  const std::vector<std::string> args =
      ParseFlags(argc, argv,
                 "One Hecate training rank (GPT-MoE over FSSDP). See docs/launching.md.\n"
                 "Usage: hecate-worker [flags]   (identity from flags, torchrun or Slurm env)");
  if (!args.empty()) {
    std::fprintf(stderr, "hecate-worker: unexpected argument '%s' (see --help)\n", args[0].c_str());
    return static_cast<int>(ExitCode::kUsage);
  }
  absl::StatusOr<WorkerConfig> config = ConfigFromFlags();
  if (!config.ok()) {
    std::fprintf(stderr, "hecate-worker: %s\n", std::string(config.status().message()).c_str());
    return static_cast<int>(ExitCode::kUsage);
  }
  SetLogComponent(absl::StrCat("worker", config->rank));
  Worker worker(*std::move(config));
  absl::Status status = worker.Start();
  if (status.ok()) status = worker.Run().status();
  if (!status.ok()) {
    std::fprintf(stderr, "hecate-worker: rank %d: %s\n", worker.config().rank,
                 status.ToString(absl::StatusToStringMode::kWithNoExtraData).c_str());
  }
  return static_cast<int>(ExitCodeFor(status));
}

}  // namespace
}  // namespace hecate::worker

int main(int argc, char** argv) { return hecate::worker::Main(argc, argv); }
