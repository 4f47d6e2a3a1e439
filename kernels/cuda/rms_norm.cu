#include "kernels/cuda/rms_norm.cuh"

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

constexpr int kThreads = 256;

// grid (n_rows), block kThreads: one row per block, fp32 sum of squares.
template <typename T>
__global__ void RmsNormKernel(const float* x, const float* weight, const int32_t* rows, T* out, int32_t dim,
                              float eps) {
  __shared__ float warp_sums[kThreads / 32];
  const int64_t src_row = rows ? rows[blockIdx.x] : blockIdx.x;
  const float* xr = x + src_row * dim;
  float ss = 0.0f;
  for (int32_t i = threadIdx.x; i < dim; i += kThreads) ss += xr[i] * xr[i];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  const float scale = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
  T* o = out + int64_t{blockIdx.x} * dim;
  for (int32_t i = threadIdx.x; i < dim; i += kThreads) o[i] = Storage<T>::FromFloat(weight[i] * (scale * xr[i]));
}

}  // namespace

void LaunchRmsNorm(const RmsNormArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.x != nullptr && a.weight != nullptr && a.out != nullptr);
  SINKSERVE_REQUIRE(a.n_rows >= 0 && a.dim > 0 && a.eps >= 0.0f);
  if (a.n_rows == 0) return;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    RmsNormKernel<T><<<a.n_rows, kThreads, 0, stream>>>(a.x, a.weight, a.rows, static_cast<T*>(a.out), a.dim, a.eps);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
