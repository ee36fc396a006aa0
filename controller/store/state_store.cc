#include "controller/store/state_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "hecate/v1/controller.pb.h"
#include "wire/convert.h"

namespace hecate::controller {

namespace {}  // namespace

// ------------------------------------------------------------------------------------------
// MemoryStateStore

absl::StatusOr<StoreSnapshot> MemoryStateStore::Load() {
  absl::MutexLock lock(&mu_);
  return state_;
}

absl::Status MemoryStateStore::SetEpoch(uint64_t epoch) {
  absl::MutexLock lock(&mu_);
  state_.epoch = epoch;
  return absl::OkStatus();
}

absl::Status MemoryStateStore::PutJob(const JobRecord& job) {
  absl::MutexLock lock(&mu_);
  for (JobRecord& j : state_.jobs) {
    if (j.job_id == job.job_id) {
      j = job;
      return absl::OkStatus();
    }
  }
  state_.jobs.push_back(job);
  return absl::OkStatus();
}

absl::Status MemoryStateStore::PutWorker(const WorkerRegistration& worker) {
  absl::MutexLock lock(&mu_);
  for (WorkerRegistration& w : state_.workers) {
    if (w.job_id == worker.job_id && w.rank == worker.rank) {
      w = worker;
      return absl::OkStatus();
    }
  }
  state_.workers.push_back(worker);
  return absl::OkStatus();
}

absl::Status MemoryStateStore::PutPlan(const v1::Plan& plan, int keep) {
  absl::MutexLock lock(&mu_);
  state_.plans.push_back(plan);
  int count = 0;
  for (auto it = state_.plans.rbegin(); it != state_.plans.rend(); ++it) {
    if (it->job_id() == plan.job_id()) ++count;
  }
  for (auto it = state_.plans.begin(); it != state_.plans.end() && count > keep;) {
    if (it->job_id() == plan.job_id()) {
      it = state_.plans.erase(it);
      --count;
    } else {
      ++it;
    }
  }
  return absl::OkStatus();
}

absl::Status MemoryStateStore::PutSetting(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  state_.settings[key] = value;
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------
// SqliteStateStore

namespace {

sqlite3* Db(void* p) { return static_cast<sqlite3*>(p); }

absl::Status SqlError(sqlite3* db, const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", sqlite3_errmsg(db)));
}

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  bool ok() const { return stmt_ != nullptr; }
  sqlite3_stmt* get() { return stmt_; }
  void Text(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void Blob(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void Int(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  absl::Status Run() {
    if (!ok()) return SqlError(db_, "prepare");
    const int rc = sqlite3_step(stmt_);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqlError(db_, "step");
    return absl::OkStatus();
  }
  std::string ColumnBytes(int i) {
    const void* p = sqlite3_column_blob(stmt_, i);
    const int n = sqlite3_column_bytes(stmt_, i);
    return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace

SqliteStateStore::SqliteStateStore(void* db, int lock_fd, std::string path)
    : db_(db), lock_fd_(lock_fd), path_(std::move(path)) {}

SqliteStateStore::~SqliteStateStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_close(Db(db_));
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<SqliteStateStore>> SqliteStateStore::Open(const std::string& dir) {
  if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create state dir ", dir, ": ", std::strerror(errno)));
  }
  const std::string lock_path = dir + "/LOCK";
  const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("state dir ", dir, " is in use by another controller (", lock_path, ")"));
  }
  const std::string path = dir + "/state.db";
  // SQLite takes an empty file for a new database: a state.db emptied by a crash or a careless
  // copy would silently start over at epoch 1. Only a missing file means a new state dir.
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && st.st_size == 0) {
    close(fd);
    return absl::DataLossError(
        absl::StrCat(path,
                     " is empty (0 bytes): its plans and history are gone; move it aside to start "
                     "fresh, or restore it from a backup"));
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    absl::Status s = absl::DataLossError(
        absl::StrCat("cannot open ", path, ": ", db ? sqlite3_errmsg(db) : "?"));
    sqlite3_close(db);
    close(fd);
    return s;
  }
  sqlite3_busy_timeout(db, 5000);
  auto store = std::unique_ptr<SqliteStateStore>(new SqliteStateStore(db, fd, path));
  absl::MutexLock lock(&store->mu_);
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           "PRAGMA synchronous=FULL",
           "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
           "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, world_size INTEGER NOT NULL,"
           " policy TEXT NOT NULL, frozen INTEGER NOT NULL, model BLOB NOT NULL)",
           "CREATE TABLE IF NOT EXISTS workers (job_id TEXT NOT NULL, rank INTEGER NOT NULL,"
           " reg BLOB NOT NULL, PRIMARY KEY (job_id, rank))",
           "CREATE TABLE IF NOT EXISTS plans (job_id TEXT NOT NULL, version INTEGER NOT NULL,"
           " plan BLOB NOT NULL, PRIMARY KEY (job_id, version))",
       }) {
    if (absl::Status s = store->Exec(sql); !s.ok()) {
      return absl::DataLossError(absl::StrCat(path, " is not a usable database (", s.message(),
                                              "); move it aside to start fresh"));
    }
  }
  Stmt check(db, "PRAGMA quick_check");
  if (!check.ok() || sqlite3_step(check.get()) != SQLITE_ROW ||
      std::string(reinterpret_cast<const char*>(sqlite3_column_text(check.get(), 0))) != "ok") {
    return absl::DataLossError(absl::StrCat(path, " failed its integrity check; move it aside"));
  }
  return store;
}

absl::Status SqliteStateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(Db(db_), sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat(sql, ": ", err ? err : "?"));
    sqlite3_free(err);
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<StoreSnapshot> SqliteStateStore::Load() {
  absl::MutexLock lock(&mu_);
  sqlite3* db = Db(db_);
  StoreSnapshot snap;
  {
    Stmt q(db, "SELECT key, value FROM meta");
    if (!q.ok()) return SqlError(db, "load meta");
    while (sqlite3_step(q.get()) == SQLITE_ROW) {
      std::string key = reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 0));
      std::string value = reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 1));
      if (key == "epoch") {
        snap.epoch = std::stoull(value);
      } else {
        snap.settings[key] = value;
      }
    }
  }
  {
    Stmt q(db, "SELECT job_id, world_size, policy, frozen, model FROM jobs ORDER BY job_id");
    if (!q.ok()) return SqlError(db, "load jobs");
    while (sqlite3_step(q.get()) == SQLITE_ROW) {
      JobRecord j;
      j.job_id = reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 0));
      j.world_size = sqlite3_column_int(q.get(), 1);
      j.policy = reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 2));
      j.frozen = sqlite3_column_int(q.get(), 3) != 0;
      v1::ModelSpec m;
      if (!m.ParseFromString(q.ColumnBytes(4))) {
        return absl::DataLossError(absl::StrCat("job ", j.job_id, ": unreadable model"));
      }
      j.model = wire::FromProto(m);
      snap.jobs.push_back(std::move(j));
    }
  }
  {
    Stmt q(db, "SELECT reg FROM workers ORDER BY job_id, rank");
    if (!q.ok()) return SqlError(db, "load workers");
    while (sqlite3_step(q.get()) == SQLITE_ROW) {
      v1::RegisterWorkerRequest r;
      if (!r.ParseFromString(q.ColumnBytes(0))) return absl::DataLossError("unreadable worker");
      snap.workers.push_back(wire::FromProto(r));
    }
  }
  {
    Stmt q(db, "SELECT plan FROM plans ORDER BY job_id, version");
    if (!q.ok()) return SqlError(db, "load plans");
    while (sqlite3_step(q.get()) == SQLITE_ROW) {
      v1::Plan p;
      if (!p.ParseFromString(q.ColumnBytes(0))) return absl::DataLossError("unreadable plan");
      snap.plans.push_back(std::move(p));
    }
  }
  return snap;
}

absl::Status SqliteStateStore::SetEpoch(uint64_t epoch) {
  return PutSetting("epoch", std::to_string(epoch));
}

absl::Status SqliteStateStore::PutSetting(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  Stmt q(Db(db_), "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
  q.Text(1, key);
  q.Text(2, value);
  return q.Run();
}

absl::Status SqliteStateStore::PutJob(const JobRecord& job) {
  absl::MutexLock lock(&mu_);
  Stmt q(Db(db_),
         "INSERT OR REPLACE INTO jobs (job_id, world_size, policy, frozen, model)"
         " VALUES (?, ?, ?, ?, ?)");
  q.Text(1, job.job_id);
  q.Int(2, job.world_size);
  q.Text(3, job.policy);
  q.Int(4, job.frozen ? 1 : 0);
  q.Blob(5, wire::ToProto(job.model).SerializeAsString());
  return q.Run();
}

absl::Status SqliteStateStore::PutWorker(const WorkerRegistration& worker) {
  absl::MutexLock lock(&mu_);
  Stmt q(Db(db_), "INSERT OR REPLACE INTO workers (job_id, rank, reg) VALUES (?, ?, ?)");
  q.Text(1, worker.job_id);
  q.Int(2, worker.rank);
  q.Blob(3, wire::ToProto(worker).SerializeAsString());
  return q.Run();
}

absl::Status SqliteStateStore::PutPlan(const v1::Plan& plan, int keep) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  Stmt q(Db(db_), "INSERT OR REPLACE INTO plans (job_id, version, plan) VALUES (?, ?, ?)");
  q.Text(1, plan.job_id());
  q.Int(2, static_cast<int64_t>(plan.id().version()));
  q.Blob(3, plan.SerializeAsString());
  absl::Status s = q.Run();
  if (s.ok()) {
    Stmt trim(Db(db_), "DELETE FROM plans WHERE job_id = ? AND version <= ?");
    trim.Text(1, plan.job_id());
    trim.Int(2, static_cast<int64_t>(plan.id().version()) - keep);
    s = trim.Run();
  }
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    return s;
  }
  return Exec("COMMIT");
}

}  // namespace hecate::controller
