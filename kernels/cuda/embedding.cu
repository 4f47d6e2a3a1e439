#include "kernels/cuda/embedding.cuh"

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

// grid (tokens), block 256: one row per block.
template <typename T>
__global__ void EmbeddingKernel(const T* table, const int32_t* ids, float* out, int32_t dim) {
  const int64_t row = blockIdx.x;
  const T* src = table + int64_t{ids[row]} * dim;
  float* dst = out + row * dim;
  for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = Storage<T>::ToFloat(src[i]);
}

}  // namespace

void LaunchEmbedding(const EmbeddingArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.table != nullptr && a.ids != nullptr && a.out != nullptr);
  SINKSERVE_REQUIRE(a.tokens >= 0 && a.dim > 0);
  if (a.tokens == 0) return;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    EmbeddingKernel<T><<<a.tokens, 256, 0, stream>>>(static_cast<const T*>(a.table), a.ids, a.out, a.dim);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
