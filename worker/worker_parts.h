// What a started Worker holds, shared by worker.cc (which builds it) and training_loop.cc (which
// drives it). Internal to //worker:worker; includes <torch/torch.h> through the trainer.
#ifndef HECATE_WORKER_WORKER_PARTS_H_
#define HECATE_WORKER_WORKER_PARTS_H_

#include <fstream>
#include <memory>

#include "common/metrics_http.h"
#include "placement/cluster.h"
#include "placement/cost_model.h"
#include "placement/plan.h"
#include "wire/trace.h"
#include "worker/agent/agent.h"
#include "worker/comm/async_lane.h"
#include "worker/comm/communicator.h"
#include "worker/comm/fake_communicator.h"
#include "worker/model/trainer.h"
#include "worker/plan_source.h"
#include "worker/worker.h"
#include "worker/worker_metrics.h"

namespace hecate::worker {

// Declared in the order they are built: each part may refer to the ones above it, and they are
// destroyed bottom-up.
struct WorkerParts {
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<WorkerMetrics> metrics;
  std::unique_ptr<MetricsHttpServer> metrics_server;
  std::unique_ptr<InProcessGroup> single;     // a world of one rank
  std::unique_ptr<Communicator> bootstrap;    // Gloo: the host communicator, or NCCL's bootstrap
  std::unique_ptr<Communicator> device_comm;  // NCCL, or Gloo through host staging
  Communicator* comm = nullptr;               // the rank's communicator (device memory on CUDA)
  std::unique_ptr<placement::Cluster> cluster;
  placement::ModelSpec model;
  std::unique_ptr<placement::CostModel> cost;
  std::unique_ptr<AsyncLane> lane;  // the sparse collectives' own connections and thread
  std::unique_ptr<Trainer> trainer;
  std::unique_ptr<ControllerAgent> agent;
  std::unique_ptr<LocalPlanner> local;
  std::shared_ptr<const placement::Plan> applied;
  placement::PlanId controller_applied;  // the last controller plan in force
  uint64_t start = 0;                    // first iteration (a resumed checkpoint's)
  std::unique_ptr<wire::TraceWriter> trace;
  std::ofstream plan_log;
};

// The training loop (training_loop.cc).
absl::StatusOr<RunSummary> RunTrainingLoop(const WorkerConfig& config, WorkerParts& parts);

// `status` tagged with the exit code hecate-worker returns for it (ExitCodeFor).
absl::Status WithExitCode(ExitCode code, absl::Status status);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_WORKER_PARTS_H_
