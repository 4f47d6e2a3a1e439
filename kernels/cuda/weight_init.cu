#include "kernels/cuda/weight_init.cuh"

#include <algorithm>

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

template <typename T>
__global__ void ConvertKernel(const float* in, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = Storage<T>::FromFloat(in[i]);
  }
}

// splitmix64 of (seed, i) -> uniform in [-1, 1).
__device__ __forceinline__ float HashUniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T>
__global__ void RandomFillKernel(T* out, int64_t n, uint64_t seed, float offset, float amplitude) {
  const float a = amplitude * 1.7320508f;  // uniform(-a, a) has std amplitude
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = Storage<T>::FromFloat(offset + a * HashUniform(seed, i));
  }
}

__global__ void RandomFillF32Kernel(float* out, int64_t n, uint64_t seed, float offset, float amplitude) {
  const float a = amplitude * 1.7320508f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = offset + a * HashUniform(seed, i);
  }
}

}  // namespace

void LaunchConvertF32(DType dtype, const float* in, void* out, int64_t n, cudaStream_t stream) {
  SINKSERVE_REQUIRE(in != nullptr && out != nullptr && n >= 0);
  if (n == 0) return;
  DispatchDType(dtype, [&](auto tag) {
    using T = decltype(tag);
    ConvertKernel<T><<<Blocks(n), kThreads, 0, stream>>>(in, static_cast<T*>(out), n);
  });
  CUDA_CHECK_LAUNCH();
}

void LaunchRandomFill(DType dtype, void* out, int64_t n, uint64_t seed, float offset, float amplitude,
                      cudaStream_t stream) {
  SINKSERVE_REQUIRE(out != nullptr && n >= 0);
  if (n == 0) return;
  DispatchDType(dtype, [&](auto tag) {
    using T = decltype(tag);
    RandomFillKernel<T><<<Blocks(n), kThreads, 0, stream>>>(static_cast<T*>(out), n, seed, offset, amplitude);
  });
  CUDA_CHECK_LAUNCH();
}

void LaunchRandomFillF32(float* out, int64_t n, uint64_t seed, float offset, float amplitude, cudaStream_t stream) {
  SINKSERVE_REQUIRE(out != nullptr && n >= 0);
  if (n == 0) return;
  RandomFillF32Kernel<<<Blocks(n), kThreads, 0, stream>>>(out, n, seed, offset, amplitude);
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
