// Communicator over Gloo's TCP transport (CPU workers). Rendezvous goes through a c10d TCPStore at
// MASTER_ADDR:MASTER_PORT (rank 0 serves it) under a key prefix unique to the job incarnation, so
// a restarted job never meets a stale rendezvous. Gloo signals failures with exceptions; every
// one is caught and returned as absl::Status (UNAVAILABLE for a lost peer, DEADLINE_EXCEEDED for a
// timeout). A failed communicator cannot be reused: create a new one under a new prefix.
//
// This header is torch-free; only the .cc includes the c10d store.
#ifndef HECATE_WORKER_COMM_GLOO_GLOO_COMMUNICATOR_H_
#define HECATE_WORKER_COMM_GLOO_GLOO_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

struct GlooOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // Rendezvous key prefix; include the job id and incarnation.
  std::string prefix = "hecate";
  // Address this rank's Gloo device listens on (must be reachable by the peers).
  std::string hostname = "127.0.0.1";
  // Rendezvous and per-collective timeout.
  absl::Duration timeout = absl::Seconds(60);
};

// Also sets SIGPIPE to ignored for the process: Gloo's TCP transport writes with plain write(), so
// a peer that dies mid-collective would otherwise kill this process with SIGPIPE instead of failing
// the collective with UNAVAILABLE.
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const GlooOptions& options);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_COMM_GLOO_GLOO_COMMUNICATOR_H_
