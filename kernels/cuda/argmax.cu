#include "kernels/cuda/argmax.cuh"

#include <cfloat>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {
namespace {

constexpr int kThreads = 256;

// (value, index) with "larger value, then smaller index" order; NaN never wins.
__device__ __forceinline__ void Better(float& v, int32_t& i, float ov, int32_t oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

// grid (rows), block kThreads.
__global__ void ArgmaxKernel(const float* logits, int32_t* ids, int32_t vocab) {
  __shared__ float sv[kThreads / 32];
  __shared__ int32_t si[kThreads / 32];
  const float* row = logits + int64_t{blockIdx.x} * vocab;
  float v = -FLT_MAX;
  int32_t i = vocab;  // sentinel: loses every tie
  for (int32_t j = threadIdx.x; j < vocab; j += kThreads) Better(v, i, row[j], j);
  for (int off = 16; off > 0; off >>= 1) {
    Better(v, i, __shfl_xor_sync(0xffffffffu, v, off), __shfl_xor_sync(0xffffffffu, i, off));
  }
  if (threadIdx.x % 32 == 0) {
    sv[threadIdx.x / 32] = v;
    si[threadIdx.x / 32] = i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    v = sv[0];
    i = si[0];
    for (int w = 1; w < kThreads / 32; ++w) Better(v, i, sv[w], si[w]);
    ids[blockIdx.x] = i < vocab ? i : 0;  // all -inf/NaN: token 0, as Argmax's first index
  }
}

}  // namespace

void LaunchArgmax(const ArgmaxArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.logits != nullptr && a.ids != nullptr);
  SINKSERVE_REQUIRE(a.rows >= 0 && a.vocab > 0);
  if (a.rows == 0) return;
  ArgmaxKernel<<<a.rows, kThreads, 0, stream>>>(a.logits, a.ids, a.vocab);
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
