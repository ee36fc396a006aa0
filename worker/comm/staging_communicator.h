// A host communicator (Gloo) presented as a device-memory one, for CUDA workers without NCCL:
// several ranks on one GPU (NCCL refuses two ranks on one device), or a build without NCCL.
//
// Every device buffer of a call is copied into this communicator's host staging buffer (pinned on
// CUDA), the host communicator runs the call on host memory, and what was received is copied back.
// SendRecvAccumulate receives into host staging and adds each chunk into its device destination in
// the given order, so sums are bitwise those of the NCCL communicator's fixed order. Host buffers
// (the plan agreement's control values) pass through untouched. The staging buffer grows to the
// largest call and is kept. Byte counters are the host communicator's: payload, not staging copies.
//
// Thread-compatibility as Communicator: one thread drives it; CreateLane gives a second staging
// communicator over the host communicator's lane, with its own staging and device stream.
#ifndef HECATE_WORKER_COMM_STAGING_COMMUNICATOR_H_
#define HECATE_WORKER_COMM_STAGING_COMMUNICATOR_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "worker/comm/communicator.h"

namespace hecate::worker {

// How the staging communicator reaches device memory. CUDA: CudaDeviceMemory
// (worker/comm/cuda_device_memory.h); tests: a fake whose "device" is host memory in known arenas.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // True when `p` is device memory (it is staged) rather than host memory (passed through).
  virtual bool IsDevice(const void* p) const = 0;
  // Synchronous copies between this device and host memory.
  virtual absl::Status ToHost(void* host, const void* device, int64_t bytes) = 0;
  virtual absl::Status ToDevice(void* device, const void* host, int64_t bytes) = 0;
  // device[i] += host[i] for i < elements (float32), done when it returns.
  virtual absl::Status AddToDevice(float* device, const float* host, int64_t elements) = 0;
  // Host memory the device copies fast from and to (pinned on CUDA); FreeHost releases it.
  virtual void* AllocateHost(int64_t bytes) = 0;
  virtual void FreeHost(void* p) = 0;
  // The same device, for another thread (a lane): its own stream where there is one.
  virtual std::unique_ptr<DeviceMemory> ForLane() const = 0;
};

// `host` must be a host-memory communicator (device_memory() false) that outlives the result.
std::unique_ptr<Communicator> CreateStagingCommunicator(Communicator* host,
                                                        std::unique_ptr<DeviceMemory> memory);

}  // namespace hecate::worker

#endif  // HECATE_WORKER_COMM_STAGING_COMMUNICATOR_H_
