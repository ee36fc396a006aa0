// The worker agent of one training rank, as an object: hecate-worker's main turns flags into a
// WorkerConfig and runs a Worker; tests drive one directly.
//
//   Worker worker(config);
//   absl::Status s = worker.Start();      // metrics, communicator, cluster, trainer, agent, resume
//   absl::StatusOr<RunSummary> r = worker.Run();  // the training loop (worker/training_loop.h)
//
// Start() chooses the device and the communicator in one place (ChooseCommunicator in
// worker.cc): CPU ranks talk over Gloo; CUDA ranks over NCCL (bootstrapped through Gloo), or over
// Gloo through pinned host staging (--comm=gloo: several ranks on one GPU). Errors carry the exit
// code hecate-worker returns for them (ExitCodeFor). Torch-free header.
#ifndef HECATE_WORKER_WORKER_H_
#define HECATE_WORKER_WORKER_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "placement/plan.h"
#include "worker/model/trainer_config.h"
#include "worker/planner_assumptions.h"

namespace grpc {
class ChannelCredentials;
}

namespace hecate::worker {

class Communicator;
struct WorkerParts;

// How a rank's collectives travel.
enum class CommBackend { kGloo, kNccl };
const char* CommBackendName(CommBackend comm);

// hecate-worker's exit codes.
enum class ExitCode { kDone = 0, kError = 1, kUsage = 2, kCollective = 3, kBadInput = 4 };
// The exit code of a Worker error (kDone for OK).
ExitCode ExitCodeFor(const absl::Status& status);

// The device a rank runs on: "cpu", "cuda", or "" for the default (cuda when this build's
// LibTorch has CUDA and a GPU is visible, else cpu). INVALID_ARGUMENT (a usage error) for an
// unknown name or cuda without a visible GPU, naming what is missing.
absl::StatusOr<DeviceKind> ResolveDevice(const std::string& name);
// The communicator: "gloo", "nccl", or "" for the default (nccl on cuda, gloo on cpu).
// INVALID_ARGUMENT for an unknown name, nccl on cpu, or nccl in a build without NCCL.
absl::StatusOr<CommBackend> ResolveComm(const std::string& name, DeviceKind device);

struct WorkerConfig {
  // Identity and rendezvous.
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29511;
  std::string node;        // topology: consecutive ranks with one node name share a node
  int ranks_per_node = 0;  // > 0: every this many consecutive ranks are one node instead
  std::string job = "hecate";
  uint64_t incarnation = 0;  // this process's incarnation at the controller
  int restart_count = 0;     // torchrun's restart count (part of the rendezvous prefix)
  // Tests: this rank's communicator (e.g. an InProcessGroup's) instead of Gloo or NCCL; it must
  // outlive the worker. CPU only.
  Communicator* communicator = nullptr;

  // Device and communicator (ResolveDevice / ResolveComm).
  DeviceKind device = DeviceKind::kCpu;
  CommBackend comm = CommBackend::kGloo;
  int cpu = -1;     // pin the process to this core (-1: no pinning)
  int threads = 1;  // intra-op threads
  absl::Duration collective_timeout = absl::Seconds(60);

  // The controller (empty: none).
  std::string controller;
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null: plaintext
  bool report_loads = true;
  absl::Duration reconnect_max = absl::Seconds(2);
  absl::Duration debug_plan_delay = absl::ZeroDuration();

  // Model, training and planning.
  TrainerConfig trainer;
  std::string mode = "fssdp";  // fssdp, or ep (static even sharding)
  bool overlap = true;         // spAG/spRS on a lane, overlapped with compute
  int iterations = 50;
  bool local_planning = true;
  std::string policy = "hecate";
  int reshard_period = 100;
  PlannerAssumptions assumptions;

  // Checkpoints, outputs and test hooks.
  std::string checkpoint_dir;
  int checkpoint_every = 0;
  bool resume = false;
  std::string metrics_listen;  // empty: no /metrics
  int log_every = 1;
  std::FILE* out = stdout;  // rank 0's progress and summary lines (null: none)
  std::string plan_log;     // append "iteration epoch version" per iteration to PATH.<rank>
  std::string trace_out;    // rank 0 records the load trace here
  absl::Duration step_interval = absl::ZeroDuration();
  int debug_exit_at = -1;
};

// Fills what the caller left unset (rank, world_size, local_rank, master_port < 0; master_addr,
// node, controller empty) from torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
// MASTER_PORT, else Slurm's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, else one local rank
// (127.0.0.1:29511, the host name, $HECATE_CONTROLLER); sets incarnation and restart_count from
// TORCHELASTIC_RESTART_COUNT (else the start time: a fresh incarnation).
void IdentityFromEnvironment(WorkerConfig* config);

// INVALID_ARGUMENT naming the first bad field; OK otherwise.
absl::Status Validate(const WorkerConfig& config);

// What a run did, on every rank (losses are global, so equal on every rank).
struct RunSummary {
  int iterations = 0;
  std::vector<double> losses;
  std::vector<placement::PlanId> plans;  // the plan each iteration ran under
  int plans_applied = 0;
  double mean_step_seconds = 0;
  int64_t peak_copy_bytes = 0;
  int64_t sparse_bytes_sent = 0;  // by this rank: spAG + spRS (or the replicas' all-reduce)
};

class Worker {
 public:
  explicit Worker(WorkerConfig config);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Everything before the first iteration. Collective (the communicator's bootstrap, the cluster
  // exchange, a resumed checkpoint's plan). Call once.
  absl::Status Start();
  // Trains config.iterations iterations (from the checkpoint's iteration when resuming). Call once
  // after a successful Start().
  absl::StatusOr<RunSummary> Run();

  const WorkerConfig& config() const { return config_; }

 private:
  WorkerConfig config_;
  std::unique_ptr<WorkerParts> parts_;
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_WORKER_H_
