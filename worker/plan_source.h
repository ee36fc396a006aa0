// Where a worker's plans come from. Every rank calls Next() with the same arguments (the global
// load matrices of the previous iteration, which every rank has after the MoE count exchange) and
// must get the same plan back, so all ranks switch at the same iteration.
//
//   FixedPlanSource  one plan forever (static expert parallelism: --mode=ep)
//   LocalPlanner     the placement policy run locally on every rank from the all-gathered counts
//                    (the standalone worker, and the agent's fail-static fallback)
// The controller-backed source lives in worker/agent. Not thread-safe.
#ifndef HECATE_WORKER_PLAN_SOURCE_H_
#define HECATE_WORKER_PLAN_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "placement/load.h"
#include "placement/plan.h"
#include "placement/planning_loop.h"

namespace hecate::worker {

class PlanSource {
 public:
  virtual ~PlanSource() = default;
  // The plan for `iteration` (never null). `last_global` is empty on the first call.
  virtual std::shared_ptr<const placement::Plan> Next(uint64_t iteration,
                                                      const placement::ModelLoad& last_global) = 0;
};

class FixedPlanSource : public PlanSource {
 public:
  explicit FixedPlanSource(placement::Plan plan)
      : plan_(std::make_shared<const placement::Plan>(std::move(plan))) {}
  std::shared_ptr<const placement::Plan> Next(uint64_t, const placement::ModelLoad&) override {
    return plan_;
  }

 private:
  std::shared_ptr<const placement::Plan> plan_;
};

// Static EP: even sharding, no copies, version 1.
placement::Plan ExpertParallelPlan(const placement::Cluster& cluster,
                                   const placement::ModelSpec& model);

class LocalPlanner : public PlanSource {
 public:
  // NOT_FOUND for an unknown policy.
  static absl::StatusOr<std::unique_ptr<LocalPlanner>> Create(
      const placement::Cluster& cluster, const placement::ModelSpec& model,
      const placement::PlanningConfig& config);
  // Observes `last_global` and plans from the window (placement::PlanningLoop, as the
  // controller does); the plan is effective at `iteration` at once (every rank computes it).
  std::shared_ptr<const placement::Plan> Next(uint64_t iteration,
                                              const placement::ModelLoad& last_global) override;
  // Continues from `plan` (e.g. the last controller plan); its id is kept and later local plans
  // get ids (epoch, version + k) above it.
  void Seed(std::shared_ptr<const placement::Plan> plan) { loop_.Follow(std::move(plan)); }
  // Feeds the window without planning (while another source provides the plans).
  void Observe(const placement::ModelLoad& last_global);

 private:
  LocalPlanner(const placement::Cluster& cluster, const placement::ModelSpec& model,
               placement::PlanningConfig config)
      : cluster_(cluster), model_(model), loop_(std::move(config), /*epoch=*/0) {}
  const placement::Cluster& cluster_;
  const placement::ModelSpec& model_;
  placement::PlanningLoop loop_;
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_PLAN_SOURCE_H_
