#include "kernels/cuda/rms_norm.cuh"

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

constexpr int kThreads = 256;

// The sum of every thread's `v` over the block, returned to all of them.
// `warp_sums` is kThreads / 32 floats of shared memory, free on entry and
// free again on return.
__device__ float BlockSum(float v, float* warp_sums) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  __syncthreads();
  return total;
}

// grid (n_rows), block kThreads: one row per block, fp32 sums.
// RMSNorm: weight * x / rms(x). LayerNorm (kLayer): weight * (x - mean) /
// sqrt(var + eps) + bias (bias may be null).
template <typename T, bool kLayer>
__global__ void NormKernel(const float* x, const float* weight, const float* bias, const int32_t* rows, T* out,
                           int32_t dim, float eps) {
  __shared__ float warp_sums[kThreads / 32];
  const int64_t src_row = rows ? rows[blockIdx.x] : blockIdx.x;
  const float* xr = x + src_row * dim;
  float mean = 0.0f;
  if constexpr (kLayer) {
    float s = 0.0f;
    for (int32_t i = threadIdx.x; i < dim; i += kThreads) s += xr[i];
    mean = BlockSum(s, warp_sums) / static_cast<float>(dim);
  }
  float ss = 0.0f;
  for (int32_t i = threadIdx.x; i < dim; i += kThreads) ss += (xr[i] - mean) * (xr[i] - mean);
  const float scale = 1.0f / sqrtf(BlockSum(ss, warp_sums) / static_cast<float>(dim) + eps);
  T* o = out + int64_t{blockIdx.x} * dim;
  for (int32_t i = threadIdx.x; i < dim; i += kThreads) {
    o[i] = Storage<T>::FromFloat(weight[i] * (scale * (xr[i] - mean)) + (bias != nullptr ? bias[i] : 0.0f));
  }
}

}  // namespace

void LaunchRmsNorm(const RmsNormArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.x != nullptr && a.weight != nullptr && a.out != nullptr);
  SINKSERVE_REQUIRE(a.n_rows >= 0 && a.dim > 0 && a.eps >= 0.0f);
  SINKSERVE_REQUIRE(a.layer_norm || a.bias == nullptr);
  if (a.n_rows == 0) return;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.layer_norm) {
      NormKernel<T, true><<<a.n_rows, kThreads, 0, stream>>>(a.x, a.weight, a.bias, a.rows, static_cast<T*>(a.out),
                                                             a.dim, a.eps);
    } else {
      NormKernel<T, false><<<a.n_rows, kThreads, 0, stream>>>(a.x, a.weight, nullptr, a.rows, static_cast<T*>(a.out),
                                                              a.dim, a.eps);
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
