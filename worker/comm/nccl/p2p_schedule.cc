#include "worker/comm/nccl/p2p_schedule.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

namespace hecate::worker::nccl {

namespace {

std::string Check(int world, const Transfer& t, const char* what) {
  if (t.peer < 0 || t.peer >= world) {
    return std::string(what) + " peer " + std::to_string(t.peer) + " outside [0, " +
           std::to_string(world) + ")";
  }
  if (t.bytes < 0) return std::string(what) + " of negative size " + std::to_string(t.bytes);
  return "";
}

}  // namespace

std::string BuildBatch(int rank, int world, const std::vector<Transfer>& sends,
                       const std::vector<Transfer>& recvs, GroupSchedule* out) {
  *out = GroupSchedule();
  if (world <= 0 || rank < 0 || rank >= world) {
    return "rank " + std::to_string(rank) + " outside a group of " + std::to_string(world);
  }
  // (peer, tag) -> transfer, per direction; duplicates are errors.
  std::map<std::pair<int, uint32_t>, Transfer> by_key[2];
  for (int dir = 0; dir < 2; ++dir) {
    const std::vector<Transfer>& list = dir == 0 ? sends : recvs;
    const char* what = dir == 0 ? "send" : "receive";
    for (const Transfer& t : list) {
      std::string err = Check(world, t, what);
      if (!err.empty()) return err;
      if (!by_key[dir].emplace(std::make_pair(t.peer, t.tag), t).second) {
        return std::string(what) + " to peer " + std::to_string(t.peer) + " repeats tag " +
               std::to_string(t.tag);
      }
    }
  }
  // Self transfers pair up into local copies.
  for (const auto& [key, s] : by_key[0]) {
    if (key.first != rank) continue;
    auto it = by_key[1].find(key);
    if (it == by_key[1].end()) {
      return "self send with tag " + std::to_string(key.second) + " has no self receive";
    }
    if (it->second.bytes != s.bytes) {
      return "self send with tag " + std::to_string(key.second) + " of " + std::to_string(s.bytes) +
             " bytes meets a receive of " + std::to_string(it->second.bytes);
    }
    if (s.bytes > 0) out->copies.push_back({s.data, it->second.data, s.bytes});
  }
  for (const auto& [key, r] : by_key[1]) {
    if (key.first == rank && by_key[0].count(key) == 0) {
      return "self receive with tag " + std::to_string(key.second) + " has no self send";
    }
  }
  // Remote transfers: by peer, then tag; sends before receives for the same (peer, tag).
  std::vector<std::tuple<int, uint32_t, int>> order;
  for (int dir = 0; dir < 2; ++dir) {
    for (const auto& [key, t] : by_key[dir]) {
      if (key.first != rank && t.bytes > 0) order.emplace_back(key.first, key.second, dir);
    }
  }
  std::sort(order.begin(), order.end());
  for (const auto& [peer, tag, dir] : order) {
    const Transfer& t = by_key[dir].at({peer, tag});
    out->ops.push_back({dir == 0, t});
    (dir == 0 ? out->bytes_sent : out->bytes_received) += t.bytes;
  }
  return "";
}

std::string BuildAllToAllV(int rank, int world, const void* send,
                           const std::vector<int64_t>& send_counts, void* recv,
                           const std::vector<int64_t>& recv_counts, int element_bytes,
                           GroupSchedule* out) {
  *out = GroupSchedule();
  if (static_cast<int>(send_counts.size()) != world ||
      static_cast<int>(recv_counts.size()) != world) {
    return "AllToAllV needs " + std::to_string(world) + " send and receive counts, got " +
           std::to_string(send_counts.size()) + " and " + std::to_string(recv_counts.size());
  }
  if (element_bytes <= 0) return "element size must be positive";
  if (rank < 0 || rank >= world) return "rank outside the group";
  if (send_counts[rank] != recv_counts[rank]) {
    return "AllToAllV sends " + std::to_string(send_counts[rank]) +
           " elements to itself but expects " + std::to_string(recv_counts[rank]);
  }
  std::vector<Transfer> sends, recvs;
  int64_t send_off = 0, recv_off = 0;
  for (int p = 0; p < world; ++p) {
    if (send_counts[p] < 0 || recv_counts[p] < 0) return "AllToAllV count is negative";
    sends.push_back({p, 0, static_cast<char*>(const_cast<void*>(send)) + send_off,
                     send_counts[p] * element_bytes});
    recvs.push_back({p, 0, static_cast<char*>(recv) + recv_off, recv_counts[p] * element_bytes});
    send_off += send_counts[p] * element_bytes;
    recv_off += recv_counts[p] * element_bytes;
  }
  return BuildBatch(rank, world, sends, recvs, out);
}

}  // namespace hecate::worker::nccl
