// In-process communicators for unit tests: InProcessGroup(n) hands out n communicators that talk
// through shared mailboxes; drive each from its own thread. Collectives are built from
// point-to-point messages matched by (source, destination, key), where collectives use a
// per-rank call counter (every rank calls collectives in the same order). A rank can be marked
// dead to test failure handling: peers waiting on it fail with UNAVAILABLE; waits also time out
// (DEADLINE_EXCEEDED). Thread-safe.
#ifndef HECATE_WORKER_COMM_FAKE_COMMUNICATOR_H_
#define HECATE_WORKER_COMM_FAKE_COMMUNICATOR_H_

#include <deque>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

class InProcessGroup {
 public:
  explicit InProcessGroup(int world_size, absl::Duration timeout = absl::Seconds(30));
  Communicator* rank(int r) { return comms_[r].get(); }
  int world_size() const { return static_cast<int>(comms_.size()); }
  // Rank r is gone: every wait on a message from r fails with UNAVAILABLE.
  void Kill(int r);

  // Internal mailbox API used by the communicators.
  void Post(int src, int dst, uint64_t key, const void* data, int64_t bytes);
  absl::Status Take(int src, int dst, uint64_t key, void* data, int64_t bytes);

 private:
  absl::Mutex mu_;
  // Messages with the same (source, destination, key) are delivered in the order they were
  // posted, as Gloo's and NCCL's are.
  std::map<std::tuple<int, int, uint64_t>, std::deque<std::vector<char>>> mail_
      ABSL_GUARDED_BY(mu_);
  std::vector<bool> dead_ ABSL_GUARDED_BY(mu_);
  absl::Duration timeout_;
  std::vector<std::unique_ptr<Communicator>> comms_;
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_COMM_FAKE_COMMUNICATOR_H_
