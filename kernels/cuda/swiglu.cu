#include "kernels/cuda/swiglu.cuh"

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

// grid-stride over (tokens * hidden) elements.
template <typename T>
__global__ void SwiGluKernel(const float* gate_up, T* out, int64_t n, int32_t hidden) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / hidden;
    const int64_t j = i - t * hidden;
    const float g = gate_up[t * 2 * hidden + j];
    const float u = gate_up[t * 2 * hidden + hidden + j];
    out[i] = Storage<T>::FromFloat(g / (1.0f + expf(-g)) * u);  // cpu::SwiGlu's formula
  }
}

// grid-stride over n elements.
template <typename T>
__global__ void GeluKernel(const float* up, T* out, int64_t n) {
  constexpr float kSqrt2OverPi = 0.79788456080286535588f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float x = up[i];
    out[i] = Storage<T>::FromFloat(0.5f * x * (1.0f + tanhf(kSqrt2OverPi * x * (1.0f + 0.044715f * x * x))));
  }
}

// Blocks of 256 threads for a grid-stride loop over n elements.
unsigned GridFor(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535)); }

}  // namespace

void LaunchGelu(const GeluArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.up != nullptr && a.out != nullptr);
  SINKSERVE_REQUIRE(a.tokens >= 0 && a.hidden > 0);
  const int64_t n = int64_t{a.tokens} * a.hidden;
  if (n == 0) return;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    GeluKernel<T><<<GridFor(n), 256, 0, stream>>>(a.up, static_cast<T*>(a.out), n);
  });
  CUDA_CHECK_LAUNCH();
}

void LaunchSwiGlu(const SwiGluArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.gate_up != nullptr && a.out != nullptr);
  SINKSERVE_REQUIRE(a.tokens >= 0 && a.hidden > 0);
  const int64_t n = int64_t{a.tokens} * a.hidden;
  if (n == 0) return;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    SwiGluKernel<T><<<GridFor(n), 256, 0, stream>>>(a.gate_up, static_cast<T*>(a.out), n, a.hidden);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
