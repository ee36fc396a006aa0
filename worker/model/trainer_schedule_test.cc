// The schedule the cost model charges, as the trainer runs it (docs/cost-model.md "Schedule"):
// two ranks over the in-process fake, sparse collectives on a lane whose communicator records
// every transfer it issues, and an observer recording the training thread's events. Per layer:
// spAG started before the layer's attention (and at most kPrefetchLayers layers ahead) and
// waited after it, before the experts; a re-materialized layer's copies freed after forward and
// re-gathered one layer early; spRS started before the backward of the layer below finishes; the
// peak copy bytes of a re-materialized layer drop after its forward.
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "placement/sharding.h"
#include "worker/comm/async_lane.h"
#include "worker/comm/fake_communicator.h"
#include "worker/model/trainer.h"
#include "worker/plan_source.h"

namespace hecate::worker {
namespace {

constexpr int kLayers = 4;

// One rank's events in order; the lane's transfers are recorded from the lane thread.
class Recorder : public ScheduleObserver {
 public:
  void Record(const char* event, int layer) override {
    absl::MutexLock lock(&mu_);
    events_.emplace_back(event, layer);
  }
  // Index of the first (event, layer), or -1.
  int Find(const std::string& event, int layer) const {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < events_.size(); ++i) {
      if (events_[i].first == event && events_[i].second == layer) return static_cast<int>(i);
    }
    return -1;
  }
  std::string Dump() const {
    absl::MutexLock lock(&mu_);
    std::string out;
    for (const auto& [e, l] : events_) out += e + "(" + std::to_string(l) + ") ";
    return out;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<std::string, int>> events_ ABSL_GUARDED_BY(mu_);
};

// A lane communicator that records each point-to-point batch it issues as "lane_<kind>(layer)",
// the layer decoded from the MoE layer's tags (layer << 20).
class RecordingComm : public Communicator {
 public:
  RecordingComm(std::unique_ptr<Communicator> inner, Recorder* recorder)
      : inner_(std::move(inner)), recorder_(recorder) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  absl::Status AllToAllV(const void* s, const std::vector<int64_t>& sc, void* r,
                         const std::vector<int64_t>& rc, int eb, CommKind k) override {
    return inner_->AllToAllV(s, sc, r, rc, eb, k);
  }
  absl::Status AllReduceSum(void* d, int64_t n, int eb, CommKind k) override {
    return inner_->AllReduceSum(d, n, eb, k);
  }
  absl::Status AllReduceMinInt64(int64_t* d, int64_t n) override {
    return inner_->AllReduceMinInt64(d, n);
  }
  absl::Status AllGatherInt64(const int64_t* s, int64_t n, int64_t* r, CommKind k) override {
    return inner_->AllGatherInt64(s, n, r, k);
  }
  absl::Status Barrier() override { return inner_->Barrier(); }
  absl::Status SendRecv(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                        CommKind kind) override {
    const P2POp& any = sends.empty() ? recvs.front() : sends.front();
    recorder_->Record(kind == CommKind::kSparseAllGather ? "lane_spag" : "lane_sprs",
                      static_cast<int>(any.tag >> 20));
    return inner_->SendRecv(sends, recvs, kind);
  }

 private:
  std::unique_ptr<Communicator> inner_;
  Recorder* recorder_;
};

std::string TextFile() {
  const char* t = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(t ? t : "/tmp") + "/schedule_text.txt";
  std::ofstream out(path);
  for (int i = 0; i < 100; ++i) out << "Experts route tokens; the lane overlaps the gathers. " << i;
  return path;
}

// Every expert of every layer on both ranks (so every layer's spAG and spRS move chunks);
// layers 1 and 3 re-materialized.
placement::Plan AllCopiesPlan(const placement::Cluster& c, const placement::ModelSpec& m) {
  placement::Plan plan = ExpertParallelPlan(c, m);
  plan.policy = "hecate-paper";  // not calibrated: the planned copies are what moves
  plan.semantics = placement::ReplicaSemantics::kEphemeral;
  for (int l = 0; l < kLayers; ++l) {
    for (auto& holders : plan.layers[l].replicas) holders = {0, 1};
    plan.layers[l].remat =
        l % 2 == 1 ? placement::RematMode::kRegather : placement::RematMode::kKeep;
  }
  return plan;
}

TEST(TrainerScheduleTest, CollectivesOverlapAsTheCostModelCharges) {
  const std::string text = TextFile();
  InProcessGroup group(2, absl::Seconds(30));
  const placement::Cluster cluster =
      placement::Cluster::Uniform(1, 2, int64_t{1} << 30, 1e12, 1e11, 1e10);
  Recorder recorders[2];
  StepResult results[2];
  int64_t predicted[2] = {0, 0};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      torch::set_num_threads(1);
      Communicator* comm = group.rank(r);
      absl::StatusOr<std::unique_ptr<Communicator>> lane_comm = comm->CreateLane();
      ASSERT_TRUE(lane_comm.ok());
      AsyncLane lane(std::make_unique<RecordingComm>(*std::move(lane_comm), &recorders[r]),
                     absl::Seconds(30));
      TrainerConfig config;
      config.layers = kLayers;
      config.d_model = 16;
      config.heads = 2;
      config.experts = 4;
      config.d_ffn = 32;
      config.seq_len = 8;
      config.batch = 2;
      config.data_path = text;
      auto data = TextData::Load(text, config.seq_len);
      ASSERT_TRUE(data.ok());
      Trainer trainer(config, comm, &cluster, nullptr, *data, &lane);
      trainer.set_observer(&recorders[r]);
      const placement::Plan plan = AllCopiesPlan(cluster, trainer.PlacementModel());
      predicted[r] = placement::CopyBytesPerDevice(plan, cluster, trainer.PlacementModel())[r];
      ASSERT_TRUE(trainer.ApplyPlan(plan).ok());
      absl::StatusOr<StepResult> step = trainer.Step(0);
      ASSERT_TRUE(step.ok()) << step.status();
      results[r] = *step;
    });
  }
  for (auto& t : threads) t.join();

  for (int r = 0; r < 2; ++r) {
    const Recorder& ev = recorders[r];
    SCOPED_TRACE("rank " + std::to_string(r) + ": " + ev.Dump());
    for (int l = 0; l < kLayers; ++l) {
      SCOPED_TRACE("layer " + std::to_string(l));
      const int spag_start = ev.Find("spag_start", l);
      ASSERT_GE(spag_start, 0);
      // Started before the layer's attention, and no earlier than the attention of the layer
      // kPrefetchLayers before it (the window that bounds memory).
      EXPECT_LT(spag_start, ev.Find("attention_start", l));
      if (l > placement::kPrefetchLayers) {
        EXPECT_GT(spag_start, ev.Find("attention_start", l - placement::kPrefetchLayers - 1));
      }
      // Waited after the attention, before the experts.
      EXPECT_GT(ev.Find("spag_wait", l), ev.Find("attention_end", l));
      EXPECT_LT(ev.Find("spag_wait", l), ev.Find("expert_forward", l));
      // The lane issued the transfers in between.
      EXPECT_GT(ev.Find("lane_spag", l), spag_start);
      // spRS started as soon as the layer's backward is done, before the layer below finishes
      // its backward; waited only at the end.
      const int sprs_start = ev.Find("sprs_start", l);
      ASSERT_GE(sprs_start, 0);
      EXPECT_LT(ev.Find("expert_backward", l), sprs_start);
      if (l > 0) EXPECT_LT(sprs_start, ev.Find("backward_done", l - 1));
      EXPECT_GT(ev.Find("sprs_wait", l), ev.Find("backward_end", -1));
      if (l % 2 == 1) {
        // Re-materialized: freed after forward, re-gathered one layer early (when the layer
        // above starts its backward; the top one when forward ends), waited before its experts.
        EXPECT_GT(ev.Find("free_copies", l), ev.Find("expert_forward", l));
        const int regather = ev.Find("regather_start", l);
        ASSERT_GE(regather, 0);
        if (l + 1 < kLayers) {
          EXPECT_LT(regather, ev.Find("expert_backward", l + 1));
          EXPECT_GT(regather, ev.Find("attention_end", kLayers - 1));
        }
        EXPECT_LT(regather, ev.Find("regather_wait", l));
        EXPECT_LT(ev.Find("regather_wait", l), ev.Find("expert_backward", l));
      } else {
        EXPECT_EQ(ev.Find("free_copies", l), -1);
        EXPECT_EQ(ev.Find("regather_start", l), -1);
      }
    }
    // The copies alive at once stay within what the memory model predicts for this schedule.
    EXPECT_GT(results[r].peak_copy_bytes, 0);
    EXPECT_LE(results[r].peak_copy_bytes, predicted[r]);
    EXPECT_GT(results[r].times.spag, 0);
    EXPECT_GE(results[r].times.spag_exposed, 0);
  }
}

// A re-materialized layer's copies go after its forward: the peak with every layer
// re-materialized is below the peak with every layer resident, and each stays within the memory
// model's prediction (placement::CopyBytesPerDevice).
TEST(TrainerScheduleTest, RematerializedLayersHoldFewerCopiesAtOnce) {
  const std::string text = TextFile();
  const placement::Cluster cluster =
      placement::Cluster::Uniform(1, 2, int64_t{1} << 30, 1e12, 1e11, 1e10);
  std::map<placement::RematMode, int64_t> peak, predicted;
  for (placement::RematMode mode : {placement::RematMode::kKeep, placement::RematMode::kRegather}) {
    InProcessGroup group(2, absl::Seconds(30));
    std::vector<std::thread> threads;
    int64_t peaks[2] = {0, 0}, predictions[2] = {0, 0};
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        torch::set_num_threads(1);
        AsyncLane lane(*group.rank(r)->CreateLane(), absl::Seconds(30));
        TrainerConfig config;
        config.layers = kLayers;
        config.d_model = 16;
        config.heads = 2;
        config.experts = 4;
        config.d_ffn = 32;
        config.seq_len = 8;
        config.batch = 2;
        config.data_path = text;
        auto data = TextData::Load(text, config.seq_len);
        ASSERT_TRUE(data.ok());
        Trainer trainer(config, group.rank(r), &cluster, nullptr, *data, &lane);
        placement::Plan plan = AllCopiesPlan(cluster, trainer.PlacementModel());
        for (auto& layer : plan.layers) layer.remat = mode;
        ASSERT_TRUE(trainer.ApplyPlan(plan).ok());
        absl::StatusOr<StepResult> step = trainer.Step(0);
        ASSERT_TRUE(step.ok()) << step.status();
        peaks[r] = step->peak_copy_bytes;
        predictions[r] = placement::CopyBytesPerDevice(plan, cluster, trainer.PlacementModel())[r];
      });
    }
    for (auto& t : threads) t.join();
    peak[mode] = peaks[0];
    predicted[mode] = predictions[0];
    EXPECT_LE(peaks[0], predictions[0]) << "memory model under-predicts";
    EXPECT_LE(peaks[1], predictions[1]) << "memory model under-predicts";
  }
  EXPECT_LT(peak[placement::RematMode::kRegather], peak[placement::RematMode::kKeep]);
  EXPECT_LT(predicted[placement::RematMode::kRegather], predicted[placement::RematMode::kKeep]);
}

}  // namespace
}  // namespace hecate::worker
