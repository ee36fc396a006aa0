// SparseAllGather throughput vs a dense Gloo allgather of the same expert chunks, two processes
// on loopback (each pinned to its own core).
//
//   bazel run //bench:spag_bench [-- --experts=8 --chunk_mib=4 --repeats=20]
//
// Dense: every rank contributes its owned experts' chunks and receives everyone else's (what FSDP
// would move). Sparse: only the replicated experts travel, owner -> holder. Reports bytes/s of
// each and the time ratio for the same replicated set.
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/subprocess.h"
#include "worker/comm/gloo/gloo_communicator.h"

ABSL_FLAG(int, experts, 8, "Experts (chunks); rank r owns experts r, r+2, ...");
ABSL_FLAG(double, chunk_mib, 4, "Chunk (expert) size, MiB");
ABSL_FLAG(int, replicated, 2, "Experts of rank 0 materialized on rank 1 in the sparse case");
ABSL_FLAG(int, repeats, 20, "Timed repetitions");

namespace hecate::worker {
namespace {

using ::hecate::proc::FreePort;

int Rank(int rank, int port, int pipe_fd) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(rank % 2, &set);
  sched_setaffinity(0, sizeof(set), &set);
  GlooOptions o;
  o.rank = rank;
  o.world_size = 2;
  o.master_port = port;
  o.prefix = "spag_bench";
  auto comm = CreateGlooCommunicator(o);
  if (!comm.ok()) return 1;
  const int experts = absl::GetFlag(FLAGS_experts);
  const int64_t floats = static_cast<int64_t>(absl::GetFlag(FLAGS_chunk_mib) * (1 << 20) / 4);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  std::vector<std::vector<float>> chunks(experts, std::vector<float>(floats, 1.0f * rank));
  // Dense: allgather every rank's owned chunks (equal halves) via AllToAllV-equivalent
  // all-gather of the concatenated owned buffer.
  const int64_t own = experts / 2 * floats;
  std::vector<float> mine(own, 1.0f), all(2 * own);
  std::vector<int64_t> counts_send = {own, own}, counts_recv = {own, own};
  if (absl::Status s = (*comm)->Barrier(); !s.ok()) {
    std::fprintf(stderr, "barrier: %s\n", s.ToString().c_str());
    return 1;
  }
  absl::Time t0 = absl::Now();
  for (int i = 0; i < repeats; ++i) {
    // An all-gather of owned chunks: send my block to the other rank, receive theirs.
    std::vector<float> send(2 * own);
    std::copy(mine.begin(), mine.end(), send.begin());
    std::copy(mine.begin(), mine.end(), send.begin() + own);
    (void)(*comm)->AllToAllV(send.data(), counts_send, all.data(), counts_recv, 4);
  }
  const double dense_s = absl::ToDoubleSeconds(absl::Now() - t0) / repeats;
  const double dense_bytes = static_cast<double>(own) * 4;  // received per rank
  // Sparse: rank 0 owns experts 0..replicated-1 that rank 1 holds too.
  placement::LayerPlan layer;
  for (int e = 0; e < experts; ++e) {
    layer.owner.push_back(e % 2);
    std::vector<int> holders = {e % 2};
    if (e % 2 == 0 && e / 2 < absl::GetFlag(FLAGS_replicated)) holders = {0, 1};
    layer.replicas.push_back(holders);
  }
  const SparseSchedule sched = BuildSparseSchedule(layer, rank);
  ChunkAccess access{[&](int e) { return static_cast<void*>(chunks[e].data()); }, floats * 4};
  if (absl::Status s = (*comm)->Barrier(); !s.ok()) {
    std::fprintf(stderr, "barrier: %s\n", s.ToString().c_str());
    return 1;
  }
  t0 = absl::Now();
  for (int i = 0; i < repeats; ++i) (void)SparseAllGather(**comm, sched, access, 1000);
  const double sparse_s = absl::ToDoubleSeconds(absl::Now() - t0) / repeats;
  const double sparse_bytes = static_cast<double>(absl::GetFlag(FLAGS_replicated)) * floats * 4;
  if (rank == 1) {
    char line[512];
    const int n = std::snprintf(
        line, sizeof(line),
        "dense_allgather: %.1f MiB received per rank in %.2f ms = %.2f GB/s\n"
        "sparse_allgather: %.1f MiB (%d of %d experts replicated) in %.2f ms = %.2f GB/s\n"
        "time ratio sparse/dense = %.3f for %.0f%% of the bytes\n",
        dense_bytes / (1 << 20), dense_s * 1e3, dense_bytes / dense_s / 1e9,
        sparse_bytes / (1 << 20), absl::GetFlag(FLAGS_replicated), experts, sparse_s * 1e3,
        sparse_bytes / sparse_s / 1e9, sparse_s / dense_s, 100 * sparse_bytes / dense_bytes);
    (void)!write(pipe_fd, line, n);
  }
  return 0;
}

}  // namespace
}  // namespace hecate::worker

int main(int argc, char** argv) {
  hecate::ParseFlags(argc, argv, "SparseAllGather vs dense all-gather throughput (2 processes).");
  const int port = hecate::proc::FreePort();
  int fds[2];
  if (pipe(fds) != 0) return 1;
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    const pid_t p = fork();
    if (p == 0) _exit(hecate::worker::Rank(r, port, fds[1]));
    pids.push_back(p);
  }
  close(fds[1]);
  char buf[1024] = {0};
  const ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
  int rc = 0;
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    rc |= WIFEXITED(st) ? WEXITSTATUS(st) : 1;
  }
  if (n > 0) std::fputs(buf, stdout);
  return rc;
}
