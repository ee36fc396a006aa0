// Durable controller state in --state-dir: the epoch, the job registry, admin settings and the
// plan history. Load windows are soft state and never stored.
//
// SqliteStateStore keeps one SQLite database in WAL mode with synchronous=FULL: every Put is one
// transaction that is durable when it returns; a transaction torn by kill -9 is discarded by
// SQLite's WAL checksums at the next open (never a crash loop). MemoryStateStore is the fake for
// tests. Implementations are thread-safe.
#ifndef HECATE_CONTROLLER_STORE_STATE_STORE_H_
#define HECATE_CONTROLLER_STORE_STATE_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controller/core/controller_core.h"
#include "hecate/v1/types.pb.h"

namespace hecate::controller {

struct StoreSnapshot {
  uint64_t epoch = 0;  // the last epoch started on this state (0: none)
  std::vector<JobRecord> jobs;
  std::vector<WorkerRegistration> workers;
  std::vector<v1::Plan> plans;  // ascending (job, version)
  std::map<std::string, std::string> settings;
};

class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual absl::StatusOr<StoreSnapshot> Load() = 0;
  virtual absl::Status SetEpoch(uint64_t epoch) = 0;
  virtual absl::Status PutJob(const JobRecord& job) = 0;
  virtual absl::Status PutWorker(const WorkerRegistration& worker) = 0;
  // Keeps at most `keep` plans per job (the newest).
  virtual absl::Status PutPlan(const v1::Plan& plan, int keep) = 0;
  virtual absl::Status PutSetting(const std::string& key, const std::string& value) = 0;
};

class MemoryStateStore : public StateStore {
 public:
  absl::StatusOr<StoreSnapshot> Load() override;
  absl::Status SetEpoch(uint64_t epoch) override;
  absl::Status PutJob(const JobRecord& job) override;
  absl::Status PutWorker(const WorkerRegistration& worker) override;
  absl::Status PutPlan(const v1::Plan& plan, int keep) override;
  absl::Status PutSetting(const std::string& key, const std::string& value) override;

 private:
  absl::Mutex mu_;
  StoreSnapshot state_ ABSL_GUARDED_BY(mu_);
};

class SqliteStateStore : public StateStore {
 public:
  // Creates `dir` if needed, takes an exclusive lock on it (FAILED_PRECONDITION when another
  // controller holds it), opens or creates the database and checks its integrity (DATA_LOSS
  // naming the file when it is corrupt).
  static absl::StatusOr<std::unique_ptr<SqliteStateStore>> Open(const std::string& dir);
  ~SqliteStateStore() override;

  absl::StatusOr<StoreSnapshot> Load() override;
  absl::Status SetEpoch(uint64_t epoch) override;
  absl::Status PutJob(const JobRecord& job) override;
  absl::Status PutWorker(const WorkerRegistration& worker) override;
  absl::Status PutPlan(const v1::Plan& plan, int keep) override;
  absl::Status PutSetting(const std::string& key, const std::string& value) override;

 private:
  SqliteStateStore(void* db, int lock_fd, std::string path);
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  void* db_ ABSL_GUARDED_BY(mu_);  // sqlite3*
  int lock_fd_;
  std::string path_;
};

}  // namespace hecate::controller

#endif  // HECATE_CONTROLLER_STORE_STATE_STORE_H_
