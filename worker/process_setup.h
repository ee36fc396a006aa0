// How a rank's process is set up, shared by hecate-worker and the PyTorch front end
// (hecate.init()), so both run a rank the same way: malloc keeping freed memory, and the process
// pinned to one core (hecate-worker --cpu, hecate.init(cpu=...)).
#ifndef HECATE_WORKER_PROCESS_SETUP_H_
#define HECATE_WORKER_PROCESS_SETUP_H_

#include "absl/status/status.h"

namespace hecate::worker {

// LibTorch's CPU allocator takes every tensor from malloc. glibc serves blocks above its mmap
// threshold (128 KiB, rising dynamically) with fresh mappings and returns freed heap tops to the
// kernel, so the activations a step allocates and frees fault their pages in again every
// iteration (docs/benchmarks.md). After this, blocks up to 32 MiB (glibc's largest threshold)
// come from the heap, and freed memory up to 1 GiB stays mapped for the next step.
// INTERNAL when malloc refuses a setting (the ones before it stay).
absl::Status KeepFreedMemory();

// Pins every thread of this process to `cpu`: the ones running now (a BLAS pool starts when its
// library loads, sized by the cores the process could use then) and, through the mask they
// inherit, every one started later (LibTorch's, Gloo's, the lane's). INVALID_ARGUMENT for a core
// this process may not use.
absl::Status PinProcess(int cpu);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_PROCESS_SETUP_H_
