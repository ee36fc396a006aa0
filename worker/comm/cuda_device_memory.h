// DeviceMemory for one CUDA device (the staging communicator of CUDA workers that talk over Gloo).
// Copies run on its own stream, created blocking so that it orders after the compute LibTorch
// queued on the legacy default stream; pinned host staging; device additions with the
// AccumulateChunks kernel. Built under --config=cuda only.
#ifndef HECATE_WORKER_COMM_CUDA_DEVICE_MEMORY_H_
#define HECATE_WORKER_COMM_CUDA_DEVICE_MEMORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "worker/comm/staging_communicator.h"

namespace hecate::worker {

// FAILED_PRECONDITION when `device` is not a usable CUDA device.
absl::StatusOr<std::unique_ptr<DeviceMemory>> CreateCudaDeviceMemory(int device);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_COMM_CUDA_DEVICE_MEMORY_H_
