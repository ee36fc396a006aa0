// Asynchronous collectives: an AsyncLane runs submitted work, in submission order, on its own
// thread against its own communicator (Communicator::CreateLane: the same ranks over their own
// connections, bytes counted with the parent's). The training thread submits a sparse collective
// and goes on computing; it waits on the returned PendingOp where the result is needed.
//
// Every rank must submit the same collectives in the same order (as with any communicator). A
// wait never hangs: it returns DEADLINE_EXCEEDED at its deadline, and a peer that dies fails the
// op with the lane communicator's error (UNAVAILABLE). After a failed or timed-out op the lane is
// unusable, like any communicator after an error.
//
// Thread-safe: Submit and PendingOp::Wait may be called from any thread.
#ifndef HECATE_WORKER_COMM_ASYNC_LANE_H_
#define HECATE_WORKER_COMM_ASYNC_LANE_H_

#include <deque>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

// One submitted piece of work.
class PendingOp {
 public:
  // Blocks until the op finished or `deadline` passed: the op's status, or DEADLINE_EXCEEDED
  // (the op itself is not cancelled). Waiting again returns the same status.
  absl::Status Wait(absl::Time deadline);
  bool Done() const;
  // Seconds the lane spent running it (0 until it finished).
  double run_seconds() const;

 private:
  friend class AsyncLane;
  void Finish(absl::Status status, double run_seconds);

  mutable absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  double run_seconds_ ABSL_GUARDED_BY(mu_) = 0;
};

class AsyncLane {
 public:
  using Work = std::function<absl::Status(Communicator&)>;

  // Starts the lane's thread. `timeout` bounds Wait() without a deadline.
  AsyncLane(std::unique_ptr<Communicator> lane, absl::Duration timeout);
  // Runs what is queued, then joins the thread.
  ~AsyncLane();
  AsyncLane(const AsyncLane&) = delete;
  AsyncLane& operator=(const AsyncLane&) = delete;

  std::shared_ptr<PendingOp> Submit(Work work);
  // Wait on `op` with the lane's timeout.
  absl::Status Wait(PendingOp& op) const { return op.Wait(absl::Now() + timeout_); }
  Communicator& communicator() { return *lane_; }
  absl::Duration timeout() const { return timeout_; }

 private:
  void Run();

  const std::unique_ptr<Communicator> lane_;
  const absl::Duration timeout_;
  absl::Mutex mu_;
  std::deque<std::pair<Work, std::shared_ptr<PendingOp>>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// The sparse collectives on a lane. The chunk pointers are looked up here, on the submitting
// thread (the lane never calls `chunks.chunk`), so the caller's buffers may not move or be freed
// until the op is done.
std::shared_ptr<PendingOp> StartSparseAllGather(AsyncLane& lane, const SparseSchedule& schedule,
                                                const ChunkAccess& chunks, uint32_t tag_base);
std::shared_ptr<PendingOp> StartSparseReduceScatter(AsyncLane& lane, const SparseSchedule& schedule,
                                                    const ChunkAccess& grads, int element_bytes,
                                                    uint32_t tag_base);

std::shared_ptr<PendingOp> StartReplicaAllReduce(AsyncLane& lane, const placement::LayerPlan& layer,
                                                 const ChunkAccess& grads, int element_bytes,
                                                 uint32_t tag_base);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_COMM_ASYNC_LANE_H_
