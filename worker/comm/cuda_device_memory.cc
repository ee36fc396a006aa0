#include "worker/comm/cuda_device_memory.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/kernels_cuda.h"

namespace hecate::worker {
namespace {

absl::Status Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

class CudaDeviceMemory : public DeviceMemory {
 public:
  explicit CudaDeviceMemory(int device) : device_(device) {}
  ~CudaDeviceMemory() override {
    cudaSetDevice(device_);
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (zero_offset_ != nullptr) cudaFree(zero_offset_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    if (absl::Status s = Check(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
    if (absl::Status s = Check(cudaStreamCreate(&stream_), "cudaStreamCreate"); !s.ok()) return s;
    if (absl::Status s = Check(cudaMalloc(&zero_offset_, sizeof(int64_t)), "cudaMalloc"); !s.ok()) {
      return s;
    }
    return Check(cudaMemset(zero_offset_, 0, sizeof(int64_t)), "cudaMemset");
  }

  bool IsDevice(const void* p) const override {
    if (p == nullptr) return false;
    cudaPointerAttributes attributes;
    if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
      cudaGetLastError();  // an unregistered host pointer: clear the sticky error
      return false;
    }
    return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
  }

  absl::Status ToHost(void* host, const void* device, int64_t bytes) override {
    return Copy(host, device, bytes, cudaMemcpyDeviceToHost);
  }
  absl::Status ToDevice(void* device, const void* host, int64_t bytes) override {
    return Copy(device, host, bytes, cudaMemcpyHostToDevice);
  }

  absl::Status AddToDevice(float* device, const float* host, int64_t elements) override {
    if (elements == 0) return absl::OkStatus();
    const int64_t bytes = elements * 4;
    if (bytes > scratch_bytes_) {
      cudaSetDevice(device_);
      if (scratch_ != nullptr) cudaFree(scratch_);
      scratch_bytes_ = std::max(bytes, scratch_bytes_ * 2);
      if (absl::Status s = Check(cudaMalloc(&scratch_, scratch_bytes_), "cudaMalloc"); !s.ok()) {
        scratch_ = nullptr;
        scratch_bytes_ = 0;
        return s;
      }
    }
    if (absl::Status s = Copy(scratch_, host, bytes, cudaMemcpyHostToDevice); !s.ok()) return s;
    if (absl::Status s =
            Check(kernels::cuda::AccumulateChunks(static_cast<const float*>(scratch_), zero_offset_,
                                                  1, elements, device, stream_),
                  "AccumulateChunks");
        !s.ok()) {
      return s;
    }
    return Check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void* AllocateHost(int64_t bytes) override {
    void* p = nullptr;
    cudaSetDevice(device_);
    if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      p = ::operator new(bytes);  // pageable memory still works, only slower
      pageable_.push_back(p);
    }
    return p;
  }
  void FreeHost(void* p) override {
    auto it = std::find(pageable_.begin(), pageable_.end(), p);
    if (it != pageable_.end()) {
      pageable_.erase(it);
      ::operator delete(p);
      return;
    }
    cudaFreeHost(p);
  }

  std::unique_ptr<DeviceMemory> ForLane() const override {
    auto lane = std::make_unique<CudaDeviceMemory>(device_);
    if (!lane->Init().ok()) return nullptr;
    return lane;
  }

 private:
  absl::Status Copy(void* dst, const void* src, int64_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0) return absl::OkStatus();
    if (absl::Status s = Check(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
    if (absl::Status s = Check(cudaMemcpyAsync(dst, src, bytes, kind, stream_), "cudaMemcpyAsync");
        !s.ok()) {
      return s;
    }
    return Check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  int64_t* zero_offset_ = nullptr;
  void* scratch_ = nullptr;
  int64_t scratch_bytes_ = 0;
  std::vector<void*> pageable_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceMemory>> CreateCudaDeviceMemory(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", device, " does not exist (", count, " visible)"));
  }
  auto memory = std::make_unique<CudaDeviceMemory>(device);
  if (absl::Status s = memory->Init(); !s.ok()) return s;
  return memory;
}

}  // namespace hecate::worker
