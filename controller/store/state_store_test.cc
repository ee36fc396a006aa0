#include "controller/store/state_store.h"

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

namespace hecate::controller {
namespace {

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

WorkerRegistration Worker(int rank) {
  WorkerRegistration w;
  w.job_id = "j";
  w.rank = rank;
  w.world_size = 2;
  w.node = "n0";
  w.device_memory_bytes = 1 << 20;
  w.incarnation = 7;
  w.model = placement::UniformModel("m", 1, 4, 1, 8, 16, 4, 10, 1e-3);
  return w;
}

v1::Plan Plan(uint64_t version) {
  v1::Plan p;
  p.set_job_id("j");
  p.mutable_id()->set_epoch(1);
  p.mutable_id()->set_version(version);
  return p;
}

void Fill(StateStore& s) {
  ASSERT_TRUE(s.SetEpoch(3).ok());
  JobRecord job{"j", 2, "hecate", true, Worker(0).model};
  ASSERT_TRUE(s.PutJob(job).ok());
  ASSERT_TRUE(s.PutWorker(Worker(0)).ok());
  ASSERT_TRUE(s.PutWorker(Worker(1)).ok());
  for (uint64_t v = 1; v <= 5; ++v) ASSERT_TRUE(s.PutPlan(Plan(v), /*keep=*/3).ok());
  ASSERT_TRUE(s.PutSetting("default_policy", "eplb").ok());
}

void Check(StateStore& s) {
  absl::StatusOr<StoreSnapshot> snap = s.Load();
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->epoch, 3u);
  ASSERT_EQ(snap->jobs.size(), 1u);
  EXPECT_TRUE(snap->jobs[0].frozen);
  EXPECT_EQ(snap->jobs[0].model.layers.size(), 1u);
  ASSERT_EQ(snap->workers.size(), 2u);
  EXPECT_EQ(snap->workers[1].incarnation, 7u);
  ASSERT_EQ(snap->plans.size(), 3u);  // trimmed to the newest 3
  EXPECT_EQ(snap->plans.front().id().version(), 3u);
  EXPECT_EQ(snap->plans.back().id().version(), 5u);
  EXPECT_EQ(snap->settings["default_policy"], "eplb");
}

TEST(MemoryStateStoreTest, RoundTrip) {
  MemoryStateStore s;
  Fill(s);
  Check(s);
}

TEST(SqliteStateStoreTest, SurvivesReopen) {
  const std::string dir = TempDir("sqlite_reopen");
  {
    auto s = SqliteStateStore::Open(dir);
    ASSERT_TRUE(s.ok()) << s.status();
    Fill(**s);
  }
  auto s = SqliteStateStore::Open(dir);
  ASSERT_TRUE(s.ok()) << s.status();
  Check(**s);
}

TEST(SqliteStateStoreTest, OneControllerPerDirectory) {
  const std::string dir = TempDir("sqlite_lock");
  auto first = SqliteStateStore::Open(dir);
  ASSERT_TRUE(first.ok());
  auto second = SqliteStateStore::Open(dir);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SqliteStateStoreTest, CorruptDatabaseIsAClearError) {
  const std::string dir = TempDir("sqlite_corrupt");
  ASSERT_EQ(system(("mkdir -p " + dir).c_str()), 0);
  std::ofstream(dir + "/state.db") << std::string(8192, 'x');
  auto s = SqliteStateStore::Open(dir);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_NE(std::string(s.status().message()).find("state.db"), std::string::npos);
}

}  // namespace
}  // namespace hecate::controller
