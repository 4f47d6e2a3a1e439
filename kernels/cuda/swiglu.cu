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

}  // namespace

void LaunchSwiGlu(const SwiGluArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.gate_up != nullptr && a.out != nullptr);
  SINKSERVE_REQUIRE(a.tokens >= 0 && a.hidden > 0);
  const int64_t n = int64_t{a.tokens} * a.hidden;
  if (n == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535);
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    SwiGluKernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(a.gate_up, static_cast<T*>(a.out), n,
                                                                          a.hidden);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
