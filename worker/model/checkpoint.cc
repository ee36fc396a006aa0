#include "worker/model/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "wire/convert.h"

namespace hecate::worker {

namespace {

absl::Status WriteAtomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << bytes;
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat("cannot write ", tmp));
  }
  FILE* f = std::fopen(tmp.c_str(), "rb");
  if (f != nullptr) {
    fsync(fileno(f));
    std::fclose(f);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::DataLossError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

std::string StepDir(const std::string& dir, uint64_t step) {
  return absl::StrCat(dir, "/step-", step);
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& dir, uint64_t next_iteration, Trainer& trainer,
                            const placement::Plan& plan, Communicator& comm, int keep) {
  const int rank = comm.rank();
  const std::string step_dir = StepDir(dir, next_iteration);
  mkdir(dir.c_str(), 0755);
  mkdir(step_dir.c_str(), 0755);
  // Host copies: a checkpoint does not depend on the device that wrote it (a CUDA run resumes on
  // the CPU and the other way round).
  auto host = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, false, true); };
  std::vector<torch::Tensor> tensors;
  for (const torch::Tensor& p : trainer.DenseParameters()) tensors.push_back(host(p));
  for (const torch::Tensor& m : trainer.dense_adam_m()) tensors.push_back(host(m));
  for (const torch::Tensor& v : trainer.dense_adam_v()) tensors.push_back(host(v));
  std::ostringstream meta;
  meta << "world " << comm.world_size() << "\nrank " << rank << "\nnext_iteration "
       << next_iteration << "\nadam_step " << trainer.adam_step() << "\n";
  for (auto& layer : trainer.moe_layers()) {
    for (int e : layer->OwnedExperts()) {
      meta << "expert " << layer->layer() << " " << e << "\n";
      tensors.push_back(layer->OwnedParam(e).to(torch::kCPU, false, true));
      tensors.push_back(layer->OwnedAdamM(e).to(torch::kCPU, false, true));
      tensors.push_back(layer->OwnedAdamV(e).to(torch::kCPU, false, true));
    }
  }
  std::ostringstream blob;
  torch::save(tensors, blob);
  if (absl::Status s = WriteAtomically(absl::StrCat(step_dir, "/rank-", rank, ".pt"), blob.str());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteAtomically(absl::StrCat(step_dir, "/rank-", rank, ".meta"), meta.str());
      !s.ok()) {
    return s;
  }
  if (rank == 0) {
    if (absl::Status s =
            WriteAtomically(step_dir + "/plan.pb", wire::ToProto(plan).SerializeAsString());
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = comm.Barrier(); !s.ok()) return s;
  if (rank == 0) {
    if (absl::Status s = WriteAtomically(dir + "/latest", absl::StrCat(next_iteration, "\n"));
        !s.ok()) {
      return s;
    }
    // Drop checkpoints older than the newest `keep` (best effort).
    if (next_iteration > 0) {
      for (uint64_t old = 0; old + 0 < next_iteration; ++old) {
        struct stat st;
        const std::string d = StepDir(dir, old);
        if (stat(d.c_str(), &st) != 0) continue;
        int newer = 0;
        for (uint64_t n = old + 1; n <= next_iteration; ++n) {
          if (stat(StepDir(dir, n).c_str(), &st) == 0) ++newer;
        }
        if (newer >= keep) {
          std::error_code ec;
          std::filesystem::remove_all(d, ec);
          if (ec) {
            std::fprintf(stderr, "hecate-worker: could not remove old checkpoint %s: %s\n",
                         d.c_str(), ec.message().c_str());
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckpointInfo> ReadCheckpointInfo(const std::string& dir, int world_size) {
  std::ifstream latest(dir + "/latest");
  uint64_t step = 0;
  if (!(latest >> step)) {
    return absl::NotFoundError(absl::StrCat("no checkpoint in ", dir, " (no 'latest' file)"));
  }
  const std::string step_dir = StepDir(dir, step);
  std::ifstream meta(step_dir + "/rank-0.meta");
  std::string key;
  int world = 0;
  if (!(meta >> key >> world) || key != "world") {
    return absl::DataLossError(absl::StrCat(step_dir, "/rank-0.meta is unreadable"));
  }
  if (world != world_size) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", step_dir, " has ", world, " ranks; this run has ", world_size));
  }
  std::ifstream plan_in(step_dir + "/plan.pb", std::ios::binary);
  std::stringstream ss;
  ss << plan_in.rdbuf();
  v1::Plan proto;
  if (!proto.ParseFromString(ss.str())) {
    return absl::DataLossError(absl::StrCat(step_dir, "/plan.pb is unreadable"));
  }
  CheckpointInfo info;
  info.next_iteration = step;
  info.plan = wire::FromProto(proto);
  return info;
}

absl::Status RestoreCheckpoint(const std::string& dir, const CheckpointInfo& info, int rank,
                               Trainer& trainer) {
  const std::string step_dir = StepDir(dir, info.next_iteration);
  std::vector<torch::Tensor> tensors;
  try {
    torch::load(tensors, absl::StrCat(step_dir, "/rank-", rank, ".pt"));
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("cannot read ", step_dir, "/rank-", rank, ".pt: ", e.what()));
  }
  std::ifstream meta(absl::StrCat(step_dir, "/rank-", rank, ".meta"));
  std::string key;
  int64_t value = 0;
  int64_t adam_step = 0;
  std::vector<std::pair<int, int>> experts;
  while (meta >> key) {
    if (key == "expert") {
      int l, e;
      meta >> l >> e;
      experts.push_back({l, e});
    } else {
      meta >> value;
      if (key == "adam_step") adam_step = value;
    }
  }
  std::vector<torch::Tensor> params = trainer.DenseParameters();
  const size_t n = params.size();
  if (tensors.size() != 3 * n + 3 * experts.size()) {
    return absl::DataLossError(absl::StrCat(step_dir, ": rank ", rank, " shard has ",
                                            tensors.size(), " tensors, expected ",
                                            3 * n + 3 * experts.size()));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < n; ++i) {
    params[i].copy_(tensors[i]);
    trainer.dense_adam_m()[i].copy_(tensors[n + i]);
    trainer.dense_adam_v()[i].copy_(tensors[2 * n + i]);
  }
  for (size_t j = 0; j < experts.size(); ++j) {
    const auto [l, e] = experts[j];
    trainer.moe_layers()[l]->SetOwned(e, tensors[3 * n + 3 * j], tensors[3 * n + 3 * j + 1],
                                      tensors[3 * n + 3 * j + 2]);
  }
  trainer.set_adam_step(adam_step);
  return absl::OkStatus();
}

}  // namespace hecate::worker
