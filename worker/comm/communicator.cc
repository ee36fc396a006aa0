#include "worker/comm/communicator.h"

#include <algorithm>

namespace hecate::worker {

const char* CommKindName(CommKind k) {
  switch (k) {
    case CommKind::kAllToAll:
      return "all_to_all";
    case CommKind::kSparseAllGather:
      return "sparse_all_gather";
    case CommKind::kSparseReduceScatter:
      return "sparse_reduce_scatter";
    case CommKind::kAllReduce:
      return "all_reduce";
    case CommKind::kAllGather:
      return "all_gather";
    case CommKind::kMigration:
      return "migration";
    case CommKind::kControl:
      return "control";
    default:
      return "?";
  }
}

SparseSchedule BuildSparseSchedule(const placement::LayerPlan& layer, int rank) {
  SparseSchedule s;
  for (placement::ExpertId e = 0; e < layer.num_experts(); ++e) {
    const int owner = layer.owner[e];
    for (int holder : layer.replicas[e]) {
      if (holder == owner) continue;
      if (owner == rank) s.owner_sends.push_back({e, holder});
      if (holder == rank) s.holder_recvs.push_back({e, owner});
    }
  }
  return s;
}

absl::Status SparseAllGather(Communicator& comm, const SparseSchedule& schedule,
                             const ChunkAccess& params, uint32_t tag_base) {
  std::vector<P2POp> sends, recvs;
  for (const auto& t : schedule.owner_sends) {
    sends.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), params.chunk(t.expert),
                     params.chunk_bytes});
  }
  for (const auto& t : schedule.holder_recvs) {
    recvs.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), params.chunk(t.expert),
                     params.chunk_bytes});
  }
  if (sends.empty() && recvs.empty()) return absl::OkStatus();
  return comm.SendRecv(sends, recvs, CommKind::kSparseAllGather);
}

absl::Status Communicator::SendRecvAccumulate(const std::vector<P2POp>& /*sends*/,
                                              const std::vector<P2POp>& /*sums*/,
                                              CommKind /*kind*/) {
  return absl::UnimplementedError("SendRecvAccumulate needs a device-memory communicator");
}

absl::Status SparseReduceScatter(Communicator& comm, const SparseSchedule& schedule,
                                 const ChunkAccess& grads, int element_bytes, uint32_t tag_base) {
  std::vector<P2POp> sends, recvs;
  for (const auto& t : schedule.holder_recvs) {  // a holder sends its gradient to the owner
    sends.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), grads.chunk(t.expert),
                     grads.chunk_bytes});
  }
  if (comm.device_memory()) {
    if (element_bytes != 4) {
      return absl::InvalidArgumentError("device sparse reduce-scatter sums float32 only");
    }
    // Same fixed (expert, peer) summation order as the host path below.
    std::vector<P2POp> sums;
    for (const auto& t : schedule.owner_sends) {
      sums.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), grads.chunk(t.expert),
                      grads.chunk_bytes});
    }
    std::sort(sums.begin(), sums.end(), [](const P2POp& x, const P2POp& y) {
      return x.tag != y.tag ? x.tag < y.tag : x.peer < y.peer;
    });
    if (sends.empty() && sums.empty()) return absl::OkStatus();
    return comm.SendRecvAccumulate(sends, sums, CommKind::kSparseReduceScatter);
  }
  std::vector<std::vector<char>> staging(schedule.owner_sends.size(),
                                         std::vector<char>(grads.chunk_bytes));
  for (size_t i = 0; i < schedule.owner_sends.size(); ++i) {
    const auto& t = schedule.owner_sends[i];
    recvs.push_back(
        {t.peer, tag_base + static_cast<uint32_t>(t.expert), staging[i].data(), grads.chunk_bytes});
  }
  if (sends.empty() && recvs.empty()) return absl::OkStatus();
  if (absl::Status s = comm.SendRecv(sends, recvs, CommKind::kSparseReduceScatter); !s.ok()) {
    return s;
  }
  // Sum into the owner's gradient in a fixed (expert, peer) order so every run is bitwise equal.
  std::vector<size_t> order(schedule.owner_sends.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto &x = schedule.owner_sends[a], &y = schedule.owner_sends[b];
    return x.expert != y.expert ? x.expert < y.expert : x.peer < y.peer;
  });
  for (size_t i : order) {
    void* dst = grads.chunk(schedule.owner_sends[i].expert);
    const int64_t n = grads.chunk_bytes / element_bytes;
    if (element_bytes == 8) {
      double* d = static_cast<double*>(dst);
      const double* s = reinterpret_cast<const double*>(staging[i].data());
      for (int64_t j = 0; j < n; ++j) d[j] += s[j];
    } else {
      float* d = static_cast<float*>(dst);
      const float* s = reinterpret_cast<const float*>(staging[i].data());
      for (int64_t j = 0; j < n; ++j) d[j] += s[j];
    }
  }
  return absl::OkStatus();
}

}  // namespace hecate::worker
