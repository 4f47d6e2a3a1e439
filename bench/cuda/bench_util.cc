#include "bench/cuda/bench_util.h"

#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"

namespace sinkserve::cuda {

CopyBandwidth MeasureCopyBandwidth(int64_t bytes, int32_t reps) {
  CopyBandwidth r;
  DevicePtr src = TryDeviceAlloc(bytes), dst = TryDeviceAlloc(bytes);
  if (!src || !dst || reps < 1) return r;
  CUDA_CHECK(cudaMemset(src.get(), 1, bytes));
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 2; ++i) CUDA_CHECK(cudaMemcpy(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice));
  std::vector<float> ms;
  for (int32_t i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(start));
    CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  r.bytes = bytes;
  r.median_ms = ms[ms.size() / 2];
  r.read_write_gbps = 2.0 * static_cast<double>(bytes) / (r.median_ms * 1e-3) / 1e9;
  return r;
}

}  // namespace sinkserve::cuda
