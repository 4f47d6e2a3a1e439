#include "kernels/cuda/kv_append.cuh"

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

// grid (tokens), block 128: each thread copies elements of one token's kv_dim.
template <typename T>
__global__ void KvAppendKernel(KvAppendArgs a) {
  const int32_t token = blockIdx.x;
  const SeqDesc s = a.seqs[a.token_seq[token]];
  const int64_t t = s.n_past + (token - s.token_begin);
  const int32_t slot = s.geometry.Slot(t);
  const int32_t slots = s.geometry.Slots();
  T* k_layer = static_cast<T*>(a.pool) + s.cache_offset +
               a.layer * LayerElements(s.geometry, a.n_kv_heads, a.head_dim);
  T* v_layer = k_layer + int64_t{a.n_kv_heads} * slots * a.head_dim;
  const float* k_src = a.qkv + int64_t{token} * a.qkv_stride + a.k_offset;
  const int32_t kv_dim = a.n_kv_heads * a.head_dim;
  const float* v_src = k_src + kv_dim;
  for (int32_t e = threadIdx.x; e < kv_dim; e += blockDim.x) {
    const int32_t h = e / a.head_dim;
    const int32_t d = e - h * a.head_dim;
    const int64_t dst = (int64_t{h} * slots + slot) * a.head_dim + d;
    k_layer[dst] = Storage<T>::FromFloat(k_src[e]);
    v_layer[dst] = Storage<T>::FromFloat(v_src[e]);
  }
}

}  // namespace

void LaunchKvAppend(const KvAppendArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.qkv != nullptr && a.pool != nullptr && a.seqs != nullptr && a.token_seq != nullptr);
  SINKSERVE_REQUIRE(a.tokens >= 0 && a.n_kv_heads > 0 && a.head_dim > 0 && a.layer >= 0);
  SINKSERVE_REQUIRE(a.k_offset >= 0 && a.k_offset + 2 * a.n_kv_heads * a.head_dim <= a.qkv_stride);
  if (a.tokens == 0) return;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    KvAppendKernel<T><<<a.tokens, 128, 0, stream>>>(a);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace sinkserve::cuda
