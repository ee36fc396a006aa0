#include "worker/comm/communicator.h"

#include <algorithm>

#include "placement/sparse_tree.h"

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

SparseSchedule BuildSparseSchedule(const placement::LayerPlan& layer, int rank,
                                   const placement::Cluster* cluster) {
  SparseSchedule s;
  std::vector<placement::SparseEdge> edges;
  for (placement::ExpertId e = 0; e < layer.num_experts(); ++e) {
    edges.clear();
    placement::AppendSparseEdges(cluster, layer, e, &edges);
    for (const placement::SparseEdge& edge : edges) {
      if (edge.from == rank) s.sends[edge.phase].push_back({e, edge.to});
      if (edge.to == rank) s.recvs[edge.phase].push_back({e, edge.from});
    }
  }
  return s;
}

absl::Status SparseAllGather(Communicator& comm, const SparseSchedule& schedule,
                             const ChunkAccess& params, uint32_t tag_base) {
  for (int phase = 0; phase < 2; ++phase) {
    std::vector<P2POp> sends, recvs;
    for (const auto& t : schedule.sends[phase]) {
      sends.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), params.chunk(t.expert),
                       params.chunk_bytes});
    }
    for (const auto& t : schedule.recvs[phase]) {
      recvs.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), params.chunk(t.expert),
                       params.chunk_bytes});
    }
    if (sends.empty() && recvs.empty()) continue;
    if (absl::Status s = comm.SendRecv(sends, recvs, CommKind::kSparseAllGather); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Communicator::SendRecvAccumulate(const std::vector<P2POp>& /*sends*/,
                                              const std::vector<P2POp>& /*sums*/,
                                              CommKind /*kind*/) {
  return absl::UnimplementedError("SendRecvAccumulate needs a device-memory communicator");
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::CreateLane() {
  return absl::UnimplementedError("this communicator has no lanes");
}

namespace {

// One phase of the reduce-scatter: this rank sends its gradient chunk up each of `up` (to the
// parent) and sums what `down` (its children) send into its own chunks, in a fixed (expert, peer)
// order so every run is bitwise equal.
absl::Status ReducePhase(Communicator& comm, const std::vector<SparseSchedule::Transfer>& up,
                         const std::vector<SparseSchedule::Transfer>& down,
                         const ChunkAccess& grads, int element_bytes, uint32_t tag_base) {
  std::vector<P2POp> sends;
  for (const auto& t : up) {
    sends.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), grads.chunk(t.expert),
                     grads.chunk_bytes});
  }
  if (comm.device_memory()) {
    if (element_bytes != 4) {
      return absl::InvalidArgumentError("device sparse reduce-scatter sums float32 only");
    }
    // Same fixed (expert, peer) summation order as the host path below.
    std::vector<P2POp> sums;
    for (const auto& t : down) {
      sums.push_back({t.peer, tag_base + static_cast<uint32_t>(t.expert), grads.chunk(t.expert),
                      grads.chunk_bytes});
    }
    std::sort(sums.begin(), sums.end(), [](const P2POp& x, const P2POp& y) {
      return x.tag != y.tag ? x.tag < y.tag : x.peer < y.peer;
    });
    if (sends.empty() && sums.empty()) return absl::OkStatus();
    return comm.SendRecvAccumulate(sends, sums, CommKind::kSparseReduceScatter);
  }
  std::vector<std::vector<char>> staging(down.size(), std::vector<char>(grads.chunk_bytes));
  std::vector<P2POp> recvs;
  for (size_t i = 0; i < down.size(); ++i) {
    recvs.push_back({down[i].peer, tag_base + static_cast<uint32_t>(down[i].expert),
                     staging[i].data(), grads.chunk_bytes});
  }
  if (sends.empty() && recvs.empty()) return absl::OkStatus();
  if (absl::Status s = comm.SendRecv(sends, recvs, CommKind::kSparseReduceScatter); !s.ok()) {
    return s;
  }
  std::vector<size_t> order(down.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto &x = down[a], &y = down[b];
    return x.expert != y.expert ? x.expert < y.expert : x.peer < y.peer;
  });
  for (size_t i : order) {
    void* dst = grads.chunk(down[i].expert);
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

}  // namespace

absl::Status SparseReduceScatter(Communicator& comm, const SparseSchedule& schedule,
                                 const ChunkAccess& grads, int element_bytes, uint32_t tag_base) {
  // Up the tree: relays collect their node first, then everything reaches the owners.
  for (int phase = 1; phase >= 0; --phase) {
    if (absl::Status s = ReducePhase(comm, schedule.recvs[phase], schedule.sends[phase], grads,
                                     element_bytes, tag_base);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

namespace {

template <typename T>
void AddInto(void* dst, const void* src, int64_t n) {
  T* d = static_cast<T*>(dst);
  const T* s = static_cast<const T*>(src);
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}

}  // namespace

absl::Status ReplicaAllReduce(Communicator& comm, const placement::LayerPlan& layer,
                              const ChunkAccess& grads, int element_bytes, uint32_t tag_base) {
  const int me = comm.rank();
  const int64_t elements = grads.chunk_bytes / element_bytes;
  struct Ring {
    placement::ExpertId expert;
    int size, index;  // members and this rank's position among them
    int prev, next;
    char* data;
  };
  std::vector<Ring> rings;
  int steps = 0;
  for (placement::ExpertId e = 0; e < layer.num_experts(); ++e) {
    const std::vector<placement::DeviceId>& holders = layer.replicas[e];
    const int n = static_cast<int>(holders.size());
    if (n < 2 || !layer.Holds(e, me)) continue;
    const int i =
        static_cast<int>(std::lower_bound(holders.begin(), holders.end(), me) - holders.begin());
    rings.push_back({e, n, i, holders[(i + n - 1) % n], holders[(i + 1) % n],
                     static_cast<char*>(grads.chunk(e))});
    steps = std::max(steps, n - 1);
  }
  auto segment = [&](const Ring& r, int s, int64_t* offset) {
    const int k = ((s % r.size) + r.size) % r.size;
    const int64_t begin = elements * k / r.size, end = elements * (k + 1) / r.size;
    *offset = begin * element_bytes;
    return (end - begin) * element_bytes;
  };
  // Reduce-scatter, then all-gather: step k of each ring moves one segment to the next member.
  for (int phase = 0; phase < 2; ++phase) {
    for (int k = 0; k < steps; ++k) {
      std::vector<P2POp> sends, recvs;
      std::vector<std::vector<char>> staging;
      std::vector<std::pair<const Ring*, int64_t>> sums;  // (ring, offset) of each staged receive
      for (const Ring& r : rings) {
        if (k >= r.size - 1) continue;
        const uint32_t tag = tag_base + static_cast<uint32_t>(r.expert) * 2 + phase;
        int64_t send_offset = 0, recv_offset = 0;
        // Reduce-scatter sends the segment it has summed so far; all-gather the finished one.
        const int send_segment = phase == 0 ? r.index - k : r.index + 1 - k;
        const int recv_segment = phase == 0 ? r.index - k - 1 : r.index - k;
        const int64_t send_bytes = segment(r, send_segment, &send_offset);
        const int64_t recv_bytes = segment(r, recv_segment, &recv_offset);
        sends.push_back({r.next, tag, r.data + send_offset, send_bytes});
        if (phase == 0) {
          staging.emplace_back(recv_bytes);
          recvs.push_back({r.prev, tag, staging.back().data(), recv_bytes});
          sums.push_back({&r, recv_offset});
        } else {
          recvs.push_back({r.prev, tag, r.data + recv_offset, recv_bytes});
        }
      }
      if (sends.empty()) continue;
      if (phase == 0 && comm.device_memory()) {
        // Device buffers: the communicator receives into its own staging and adds on the device.
        if (element_bytes != 4) {
          return absl::InvalidArgumentError("device replica all-reduce sums float32 only");
        }
        for (size_t i = 0; i < sums.size(); ++i) {
          recvs[i].data = sums[i].first->data + sums[i].second;
        }
        if (absl::Status s = comm.SendRecvAccumulate(sends, recvs, CommKind::kSparseReduceScatter);
            !s.ok()) {
          return s;
        }
        continue;
      }
      if (absl::Status s = comm.SendRecv(sends, recvs, CommKind::kSparseReduceScatter); !s.ok()) {
        return s;
      }
      for (size_t i = 0; i < sums.size(); ++i) {
        const int64_t n = static_cast<int64_t>(staging[i].size()) / element_bytes;
        void* dst = sums[i].first->data + sums[i].second;
        if (element_bytes == 8) {
          AddInto<double>(dst, staging[i].data(), n);
        } else {
          AddInto<float>(dst, staging[i].data(), n);
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace hecate::worker
