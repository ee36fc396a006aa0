#include "worker/worker.h"

#include <unistd.h>

#include <cstdlib>
#include <functional>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "wire/convert.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/comm/staging_communicator.h"
#include "worker/model/checkpoint.h"
#include "worker/process_setup.h"
#include "worker/worker_parts.h"

#ifdef HECATE_CUDA
#include <cuda_runtime.h>

#include "worker/comm/cuda_device_memory.h"
#include "worker/comm/nccl/nccl_communicator.h"
#endif

namespace hecate::worker {

namespace pl = placement;

namespace {

constexpr char kExitPayload[] = "type.hecate.dev/worker-exit-code";

absl::Status Usage(absl::string_view message) {
  return WithExitCode(ExitCode::kUsage, absl::InvalidArgumentError(message));
}

// This rank's device memory as the planner sees it.
int64_t DeviceMemoryBytes(const WorkerConfig& config) {
#ifdef HECATE_CUDA
  if (config.trainer.device == DeviceKind::kCuda) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaSetDevice(config.trainer.device_index) == cudaSuccess &&
        cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      return static_cast<int64_t>(total_bytes);
    }
    cudaGetLastError();
  }
#endif
  (void)config;
  return kCpuDeviceMemoryBytes;
}

// Node structure: consecutive ranks with the same node name (or --ranks_per_node blocks).
absl::StatusOr<pl::Cluster> DeriveCluster(const WorkerConfig& config, Communicator& comm) {
  const int64_t device_memory_bytes = DeviceMemoryBytes(config);
  const int world = comm.world_size();
  std::vector<int64_t> ids(world);
  const int64_t mine = static_cast<int64_t>(std::hash<std::string>()(config.node) & 0x7fffffffffff);
  if (absl::Status s = comm.AllGatherInt64(&mine, 1, ids.data(), CommKind::kControl); !s.ok()) {
    return s;
  }
  std::vector<int> devices_per_node;
  const int per_node = config.ranks_per_node;
  for (int r = 0; r < world; ++r) {
    const bool new_node = per_node > 0 ? r % per_node == 0 : (r == 0 || ids[r] != ids[r - 1]);
    if (new_node) devices_per_node.push_back(0);
    ++devices_per_node.back();
  }
  const pl::ClusterSpec spec =
      AssumedClusterSpec(config.assumptions, devices_per_node, device_memory_bytes, config.overlap);
  return pl::Cluster::Create(spec);
}

// The one place that decides how this rank's collectives travel: CPU over Gloo; CUDA over NCCL
// (bootstrapped through Gloo) or over Gloo through pinned host staging.
absl::Status ChooseCommunicator(const WorkerConfig& config, WorkerParts& parts) {
  if (config.communicator != nullptr) {
    if (config.trainer.device != DeviceKind::kCpu) {
      return Usage("a supplied communicator is for CPU workers only");
    }
    parts.comm = config.communicator;
    return absl::OkStatus();
  }
  Communicator* host = nullptr;
  if (config.world_size == 1) {
    parts.single = std::make_unique<InProcessGroup>(1);
    host = parts.single->rank(0);
  } else {
    GlooOptions o;
    o.rank = config.rank;
    o.world_size = config.world_size;
    o.master_addr = config.master_addr;
    o.master_port = config.master_port;
    o.prefix = absl::StrCat(config.job, "/", config.master_port, "/", config.restart_count);
    o.timeout = config.collective_timeout;
    absl::StatusOr<std::unique_ptr<Communicator>> gloo = CreateGlooCommunicator(o);
    if (!gloo.ok()) return WithExitCode(ExitCode::kCollective, gloo.status());
    parts.bootstrap = *std::move(gloo);
    host = parts.bootstrap.get();
  }
  if (config.trainer.device == DeviceKind::kCpu) {
    parts.comm = host;
    return absl::OkStatus();
  }
#ifdef HECATE_CUDA
  if (config.comm == CommBackend::kNccl) {
    NcclOptions o;
    o.device = config.trainer.device_index;
    o.timeout = config.collective_timeout;
    absl::StatusOr<std::unique_ptr<Communicator>> nccl = CreateNcclCommunicator(*host, o);
    if (!nccl.ok()) return WithExitCode(ExitCode::kCollective, nccl.status());
    parts.device_comm = *std::move(nccl);
  } else {
    absl::StatusOr<std::unique_ptr<DeviceMemory>> memory =
        CreateCudaDeviceMemory(config.trainer.device_index);
    if (!memory.ok()) return WithExitCode(ExitCode::kError, memory.status());
    parts.device_comm = CreateStagingCommunicator(host, *std::move(memory));
  }
  parts.comm = parts.device_comm.get();
  return absl::OkStatus();
#else
  return Usage("this build has no CUDA runtime (bazel build --config=cuda, docs/gpu.md)");
#endif
}

}  // namespace

void IdentityFromEnvironment(WorkerConfig* c) {
  auto env_int = [](std::initializer_list<const char*> names, int fallback) {
    for (const char* name : names) {
      const char* v = std::getenv(name);
      int out;
      if (v != nullptr && absl::SimpleAtoi(v, &out)) return out;
    }
    return fallback;
  };
  auto env_str = [](const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v ? std::string(v) : fallback;
  };
  if (c->rank < 0) c->rank = env_int({"RANK", "SLURM_PROCID"}, 0);
  if (c->world_size < 0) c->world_size = env_int({"WORLD_SIZE", "SLURM_NTASKS"}, 1);
  if (c->local_rank < 0) c->local_rank = env_int({"LOCAL_RANK", "SLURM_LOCALID"}, c->rank);
  if (c->master_addr.empty()) c->master_addr = env_str("MASTER_ADDR", "127.0.0.1");
  if (c->master_port < 0) c->master_port = env_int({"MASTER_PORT"}, 29511);
  if (c->node.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    c->node = host;
  }
  if (c->controller.empty()) c->controller = env_str("HECATE_CONTROLLER", "");
  const int restarts = env_int({"TORCHELASTIC_RESTART_COUNT"}, -1);
  c->incarnation = restarts >= 0 ? static_cast<uint64_t>(restarts) + 1
                                 : static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()));
  c->restart_count = std::max(0, restarts);
}

const char* CommBackendName(CommBackend comm) {
  return comm == CommBackend::kNccl ? "nccl" : "gloo";
}

absl::Status WithExitCode(ExitCode code, absl::Status status) {
  if (status.ok()) return status;
  status.SetPayload(kExitPayload, absl::Cord(absl::StrCat(static_cast<int>(code))));
  return status;
}

ExitCode ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return ExitCode::kDone;
  if (auto tagged = status.GetPayload(kExitPayload)) {
    int code = 0;
    if (absl::SimpleAtoi(std::string(*tagged), &code) && code >= 1 && code <= 4) {
      return static_cast<ExitCode>(code);
    }
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return ExitCode::kUsage;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
      return ExitCode::kBadInput;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
      return ExitCode::kCollective;
    default:
      return ExitCode::kError;
  }
}

absl::StatusOr<DeviceKind> ResolveDevice(const std::string& name) {
  const bool gpu = torch::cuda::is_available();
  if (name.empty()) return gpu ? DeviceKind::kCuda : DeviceKind::kCpu;
  if (name == "cpu") return DeviceKind::kCpu;
  if (name != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu or cuda, not '", name, "'"));
  }
  if (!gpu) {
    return absl::InvalidArgumentError(
        at::hasCUDA()
            ? "--device=cuda: no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
            : "--device=cuda: no CUDA GPU available to this build (its LibTorch has no CUDA; "
              "build against PyTorch's LibTorch, docs/gpu.md)");
  }
#ifndef HECATE_CUDA
  return absl::InvalidArgumentError(
      "--device=cuda: this build has no CUDA runtime (bazel build --config=cuda, docs/gpu.md)");
#endif
  return DeviceKind::kCuda;
}

absl::StatusOr<CommBackend> ResolveComm(const std::string& name, DeviceKind device) {
  if (name.empty()) return device == DeviceKind::kCuda ? CommBackend::kNccl : CommBackend::kGloo;
  if (name == "gloo") return CommBackend::kGloo;
  if (name != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("--comm must be nccl or gloo, not '", name, "'"));
  }
  if (device != DeviceKind::kCuda) {
    return absl::InvalidArgumentError("--comm=nccl needs --device=cuda (NCCL moves GPU memory)");
  }
#ifndef HECATE_CUDA
  return absl::InvalidArgumentError(
      "--comm=nccl: this build has no NCCL (bazel build --config=cuda, docs/gpu.md)");
#endif
  return CommBackend::kNccl;
}

absl::Status Validate(const WorkerConfig& c) {
  const TrainerConfig& t = c.trainer;
  if (c.world_size < 1 || c.rank < 0 || c.rank >= c.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", c.rank, " is not in a world of ", c.world_size));
  }
  if (c.mode != "fssdp" && c.mode != "ep") {
    return absl::InvalidArgumentError(
        absl::StrCat("--mode must be fssdp or ep, not '", c.mode, "'"));
  }
  if (t.layers < 1 || t.experts < 1 || t.top_k < 1 || t.top_k > t.experts || t.heads < 1 ||
      t.d_model % t.heads != 0 || t.batch < 1 || t.seq_len < 1 || t.d_ffn < 1) {
    return absl::InvalidArgumentError(
        "invalid model shape (need layers, experts, heads, batch, seq_len, d_ffn >= 1, "
        "1 <= top_k <= experts, d_model divisible by heads)");
  }
  if (absl::Status s = ValidateAssumptions(c.assumptions); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", s.message()));
  }
  if (c.reshard_period < 0 || t.prefetch_layers < 0 || t.calibration.free_copies < 0 ||
      !(t.calibration.options.target > 1) || t.calibration.options.swap_cell_budget < 0) {
    return absl::InvalidArgumentError(
        "need --reshard_period >= 0, --prefetch_layers >= 0, --calibration_copies >= 0, "
        "--calibration_target > 1, --calibration_cell_budget >= 0");
  }
  if (c.iterations < 0 || c.checkpoint_every < 0 || c.threads < 1) {
    return absl::InvalidArgumentError(
        "need --iterations >= 0, --checkpoint_every >= 0, "
        "--threads >= 1");
  }
  if (c.trainer.device == DeviceKind::kCuda && c.trainer.float64) {
    return absl::InvalidArgumentError(
        "--float64 is CPU only (the device sparse reduce-scatter sums float32)");
  }
  if (c.trainer.device == DeviceKind::kCpu && c.comm == CommBackend::kNccl) {
    return absl::InvalidArgumentError("--comm=nccl needs --device=cuda");
  }
  if (c.resume && c.checkpoint_dir.empty()) {
    return absl::InvalidArgumentError("--resume needs --checkpoint_dir");
  }
  return absl::OkStatus();
}

Worker::Worker(WorkerConfig config) : config_(std::move(config)) {}

Worker::~Worker() {
  if (parts_ != nullptr && parts_->agent != nullptr) parts_->agent->Stop();
}

absl::Status Worker::Start() {
  if (parts_ != nullptr) return absl::FailedPreconditionError("Worker::Start called twice");
  if (absl::Status s = Validate(config_); !s.ok()) return WithExitCode(ExitCode::kUsage, s);
  if (config_.cpu >= 0) {
    if (absl::Status s = PinProcess(config_.cpu); !s.ok()) {
      return Usage(absl::StrCat("--cpu: ", s.message()));
    }
  }
  if (config_.trainer.device == DeviceKind::kCuda) {
    // Ranks of a node take its GPUs round robin; with --comm=gloo several may share one.
    config_.trainer.device_index =
        config_.local_rank % std::max<int>(1, static_cast<int>(torch::cuda::device_count()));
  }
  auto parts = std::make_unique<WorkerParts>();
  WorkerParts& p = *parts;
  p.registry = std::make_shared<prometheus::Registry>();
  p.metrics = std::make_unique<WorkerMetrics>(p.registry);
  if (!config_.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> m =
        MetricsHttpServer::Start(config_.metrics_listen, p.registry);
    if (!m.ok()) return WithExitCode(ExitCode::kUsage, m.status());
    p.metrics_server = *std::move(m);
    if (config_.out != nullptr) {
      std::fprintf(config_.out, "metrics on %s\n", p.metrics_server->address().c_str());
      std::fflush(config_.out);
    }
  }
  torch::set_num_threads(config_.threads);
  absl::StatusOr<TextData> data =
      TextData::Load(config_.trainer.data_path, config_.trainer.seq_len);
  if (!data.ok()) return WithExitCode(ExitCode::kBadInput, data.status());

  if (absl::Status s = ChooseCommunicator(config_, p); !s.ok()) return s;
  absl::StatusOr<pl::Cluster> cluster = DeriveCluster(config_, *p.comm);
  if (!cluster.ok()) return WithExitCode(ExitCode::kCollective, cluster.status());
  p.cluster = std::make_unique<pl::Cluster>(*std::move(cluster));
  p.model = PlacementModelFor(config_.trainer);
  ApplyAssumptions(config_.assumptions, p.model);
  p.cost = std::make_unique<pl::CostModel>(*p.cluster, p.model);
  if (config_.overlap) {
    absl::StatusOr<std::unique_ptr<Communicator>> lane_comm = p.comm->CreateLane();
    if (!lane_comm.ok()) return WithExitCode(ExitCode::kCollective, lane_comm.status());
    p.lane = std::make_unique<AsyncLane>(*std::move(lane_comm), config_.collective_timeout);
  }
  const TrainerConfig& tc = config_.trainer;
  p.trainer = std::make_unique<Trainer>(tc, p.comm, p.cluster.get(),
                                        tc.calibration.enabled ? p.cost.get() : nullptr,
                                        *std::move(data), p.lane.get());

  // Plan sources. In ep mode an agent only reports (its plans are ignored): the reporting-overhead
  // benchmark.
  if (!config_.controller.empty()) {
    AgentConfig ac;
    ac.controller = config_.controller;
    ac.credentials = config_.credentials;
    wire::WorkerRegistration reg;
    reg.job_id = config_.job;
    reg.rank = config_.rank;
    reg.world_size = config_.world_size;
    reg.node = config_.ranks_per_node > 0
                   ? absl::StrCat(config_.node, "/", config_.rank / config_.ranks_per_node)
                   : config_.node;
    reg.local_rank = config_.local_rank;
    reg.device_kind = DeviceKindName(tc.device);
    reg.device_memory_bytes = p.cluster->spec().nodes.front().device_memory_bytes;
    reg.incarnation = config_.incarnation;
    reg.model = p.model;
    reg.links = p.cluster->spec();
    reg.calibration = tc.calibration;
    ac.registration = wire::ToProto(reg);
    ac.plan_delay = config_.debug_plan_delay;
    ac.backoff_max = std::max(absl::Milliseconds(100), config_.reconnect_max);
    p.agent = std::make_unique<ControllerAgent>(ac);
    p.agent->Start();
  }
  if (config_.mode == "fssdp" && config_.local_planning) {
    pl::PlanningConfig lc;
    lc.policy = config_.policy;
    lc.reshard_period = config_.reshard_period;
    absl::StatusOr<std::unique_ptr<LocalPlanner>> lp =
        LocalPlanner::Create(*p.cluster, p.model, lc);
    if (!lp.ok()) return WithExitCode(ExitCode::kUsage, lp.status());
    p.local = *std::move(lp);
  }

  // Start: a checkpoint's plan, else static even sharding.
  p.applied = std::make_shared<const pl::Plan>(ExpertParallelPlan(*p.cluster, p.model));
  if (config_.resume) {
    absl::StatusOr<CheckpointInfo> info =
        ReadCheckpointInfo(config_.checkpoint_dir, config_.world_size);
    if (!info.ok()) {
      return WithExitCode(
          ExitCode::kBadInput,
          absl::Status(info.status().code(), absl::StrCat("--resume: ", info.status().message())));
    }
    p.applied = std::make_shared<const pl::Plan>(info->plan);
    if (absl::Status s = p.trainer->ApplyPlan(*p.applied); !s.ok()) {
      return WithExitCode(ExitCode::kBadInput, s);
    }
    if (absl::Status s = RestoreCheckpoint(config_.checkpoint_dir, *info, config_.rank, *p.trainer);
        !s.ok()) {
      return WithExitCode(ExitCode::kBadInput,
                          absl::Status(s.code(), absl::StrCat("--resume: ", s.message())));
    }
    p.start = info->next_iteration;
    LogInfo("resumed", LogFields()("iteration", p.start)("plan", p.applied->id.version));
  } else if (absl::Status s = p.trainer->ApplyPlan(*p.applied); !s.ok()) {
    return WithExitCode(ExitCode::kError, s);
  }
  if (p.local) p.local->Seed(p.applied);
  p.controller_applied = p.applied->policy == "ep" ? pl::PlanId{} : p.applied->id;

  if (!config_.trace_out.empty() && config_.rank == 0) {
    absl::StatusOr<std::unique_ptr<wire::TraceWriter>> tw =
        wire::TraceWriter::Open(config_.trace_out, p.cluster->spec(), p.model);
    if (!tw.ok()) return WithExitCode(ExitCode::kBadInput, tw.status());
    p.trace = *std::move(tw);
  }
  if (!config_.plan_log.empty()) {
    p.plan_log.open(absl::StrCat(config_.plan_log, ".", config_.rank), std::ios::app);
  }
  parts_ = std::move(parts);
  return absl::OkStatus();
}

absl::StatusOr<RunSummary> Worker::Run() {
  if (parts_ == nullptr) return absl::FailedPreconditionError("Worker::Run before Start");
  absl::StatusOr<RunSummary> summary = RunTrainingLoop(config_, *parts_);
  if (parts_->agent != nullptr) parts_->agent->Stop();
  return summary;
}

}  // namespace hecate::worker
