// Pinning a rank's process to one core, shared by hecate-worker (--cpu) and the PyTorch front end
// (hecate.init(cpu=...)), so both run a pinned rank the same way.
#ifndef HECATE_WORKER_PIN_H_
#define HECATE_WORKER_PIN_H_

#include "absl/status/status.h"

namespace hecate::worker {

// Pins every thread of this process to `cpu`: the ones running now (a BLAS pool starts when its
// library loads, sized by the cores the process could use then) and, through the mask they
// inherit, every one started later (LibTorch's, Gloo's, the lane's). INVALID_ARGUMENT for a core
// this process may not use.
absl::Status PinProcess(int cpu);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_PIN_H_
