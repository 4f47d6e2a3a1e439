// Owning device and pinned-host allocations. Allocation failure is the one
// recoverable CUDA error: it comes back as a null buffer for the caller to
// turn into RESOURCE_EXHAUSTED before any work is launched.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {

struct DeviceFree {
  void operator()(void* p) const { CUDA_CHECK(cudaFree(p)); }
};
struct HostFree {
  void operator()(void* p) const { CUDA_CHECK(cudaFreeHost(p)); }
};
using DevicePtr = std::unique_ptr<void, DeviceFree>;
using PinnedPtr = std::unique_ptr<void, HostFree>;

// Null on failure (the sticky-free allocation error is cleared).
inline DevicePtr TryDeviceAlloc(int64_t bytes) {
  void* p = nullptr;
  if (bytes <= 0) bytes = 1;
  if (cudaMalloc(&p, static_cast<size_t>(bytes)) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return DevicePtr(p);
}

inline PinnedPtr TryPinnedAlloc(int64_t bytes) {
  void* p = nullptr;
  if (bytes <= 0) bytes = 1;
  if (cudaMallocHost(&p, static_cast<size_t>(bytes)) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return PinnedPtr(p);
}

template <typename T>
T* As(const DevicePtr& p) {
  return static_cast<T*>(p.get());
}

}  // namespace sinkserve::cuda
