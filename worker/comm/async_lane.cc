#include "worker/comm/async_lane.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace hecate::worker {

absl::Status PendingOp::Wait(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&done), deadline)) {
    return absl::DeadlineExceededError("asynchronous collective did not finish by its deadline");
  }
  return status_;
}

bool PendingOp::Done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

double PendingOp::run_seconds() const {
  absl::MutexLock lock(&mu_);
  return run_seconds_;
}

void PendingOp::Finish(absl::Status status, double run_seconds) {
  absl::MutexLock lock(&mu_);
  status_ = std::move(status);
  run_seconds_ = run_seconds;
  done_ = true;
}

AsyncLane::AsyncLane(std::unique_ptr<Communicator> lane, absl::Duration timeout)
    : lane_(std::move(lane)), timeout_(timeout), thread_([this] { Run(); }) {}

AsyncLane::~AsyncLane() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

std::shared_ptr<PendingOp> AsyncLane::Submit(Work work) {
  auto op = std::make_shared<PendingOp>();
  absl::MutexLock lock(&mu_);
  queue_.emplace_back(std::move(work), op);
  return op;
}

void AsyncLane::Run() {
  for (;;) {
    std::pair<Work, std::shared_ptr<PendingOp>> next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, nothing left
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    const absl::Time t0 = absl::Now();
    absl::Status status;
    try {
      status = next.first(*lane_);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("asynchronous collective threw: ", e.what()));
    }
    next.second->Finish(std::move(status), absl::ToDoubleSeconds(absl::Now() - t0));
  }
}

namespace {

// `chunks` with every expert the schedule touches looked up now.
ChunkAccess Resolve(const SparseSchedule& schedule, const ChunkAccess& chunks) {
  auto pointers = std::make_shared<std::map<placement::ExpertId, void*>>();
  for (int phase = 0; phase < 2; ++phase) {
    for (const auto* list : {&schedule.sends[phase], &schedule.recvs[phase]}) {
      for (const SparseSchedule::Transfer& t : *list) {
        if (!pointers->count(t.expert)) (*pointers)[t.expert] = chunks.chunk(t.expert);
      }
    }
  }
  return ChunkAccess{[pointers](placement::ExpertId e) { return pointers->at(e); },
                     chunks.chunk_bytes};
}

}  // namespace

std::shared_ptr<PendingOp> StartSparseAllGather(AsyncLane& lane, const SparseSchedule& schedule,
                                                const ChunkAccess& chunks, uint32_t tag_base) {
  return lane.Submit([schedule, resolved = Resolve(schedule, chunks), tag_base](Communicator& c) {
    return SparseAllGather(c, schedule, resolved, tag_base);
  });
}

std::shared_ptr<PendingOp> StartSparseReduceScatter(AsyncLane& lane, const SparseSchedule& schedule,
                                                    const ChunkAccess& grads, int element_bytes,
                                                    uint32_t tag_base) {
  return lane.Submit(
      [schedule, resolved = Resolve(schedule, grads), element_bytes, tag_base](Communicator& c) {
        return SparseReduceScatter(c, schedule, resolved, element_bytes, tag_base);
      });
}

std::shared_ptr<PendingOp> StartReplicaAllReduce(AsyncLane& lane, const placement::LayerPlan& layer,
                                                 const ChunkAccess& grads, int element_bytes,
                                                 uint32_t tag_base) {
  auto pointers = std::make_shared<std::map<placement::ExpertId, void*>>();
  const int me = lane.communicator().rank();
  for (placement::ExpertId e = 0; e < layer.num_experts(); ++e) {
    if (layer.replicas[e].size() >= 2 && layer.Holds(e, me)) (*pointers)[e] = grads.chunk(e);
  }
  ChunkAccess resolved{[pointers](placement::ExpertId e) { return pointers->at(e); },
                       grads.chunk_bytes};
  return lane.Submit([layer, resolved, element_bytes, tag_base](Communicator& c) {
    return ReplicaAllReduce(c, layer, resolved, element_bytes, tag_base);
  });
}

}  // namespace hecate::worker
