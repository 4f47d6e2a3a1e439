#include "kernels/cuda/attention.cuh"

#include <algorithm>

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

constexpr int kWarps = 4;      // warps per block; each walks every kWarps-th key
constexpr int kMaxHeads = 8;   // query heads per block (of one kv head); more -> more blocks
constexpr int kMinKeysPerSplit = 64;
constexpr int kMaxSplits = 128;

__device__ __forceinline__ float WarpSum(float x) {
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// grid (splits, n_kv_heads * head_chunks, tokens), block kWarps * 32.
// Lane l owns rotation pairs l, l + 32, ... (PPL of them), so head_dim <= 64 * PPL.
// Dynamic shared memory: (kWarps, kMaxHeads, head_dim + 2) floats.
template <typename T, int PPL>
__global__ void __launch_bounds__(kWarps * 32) AttentionKernel(AttentionArgs a) {
  using Pair = typename Storage<T>::Pair;
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int hd = a.head_dim;
  const int half = hd / 2;
  const int group = a.n_heads / a.n_kv_heads;
  const int chunks = (group + kMaxHeads - 1) / kMaxHeads;
  const int kvh = blockIdx.y / chunks;
  const int h0 = kvh * group + (blockIdx.y % chunks) * kMaxHeads;  // first query head of this block
  const int nh = min(kMaxHeads, (kvh + 1) * group - h0);
  const int z = blockIdx.z;  // index among the launch's queries (split-K scratch)
  const int token = a.token_list ? a.token_list[z] : z;
  const int split = blockIdx.x;

  const SeqDesc s = a.seqs[a.token_seq[token]];
  const CacheGeometry& g = s.geometry;
  const int64_t t = s.n_past + (token - s.token_begin);
  const int n_sinks = g.SinkCount(t);
  const int64_t lo = g.WindowBegin(t);
  const int n_keys = g.KeyCount(t);
  const int per = (n_keys + a.splits - 1) / a.splits;
  const int kb = split * per;
  const int ke = min(n_keys, kb + per);
  const int slots = g.Slots();
  const T* k_head = static_cast<const T*>(a.pool) + s.cache_offset +
                    a.layer * LayerElements(g, a.n_kv_heads, hd) + int64_t{kvh} * slots * hd;
  const T* v_head = k_head + int64_t{a.n_kv_heads} * slots * hd;
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));

  // The block's query heads, rotated by QueryPosition(t): (kMaxHeads, PPL) pairs per lane.
  float2 q[kMaxHeads][PPL];
  {
    const int qpos = g.QueryPosition(t);
    const float* qrow = a.qkv + int64_t{token} * a.qkv_stride;
#pragma unroll
    for (int h = 0; h < kMaxHeads; ++h) {
#pragma unroll
      for (int p = 0; p < PPL; ++p) {
        const int i = lane + 32 * p;
        q[h][p] = make_float2(0.0f, 0.0f);
        if (h < nh && i < half) {
          const float x0 = qrow[(h0 + h) * hd + 2 * i];
          const float x1 = qrow[(h0 + h) * hd + 2 * i + 1];
          if (a.alibi_slopes != nullptr) {
            q[h][p] = make_float2(x0, x1);
          } else {
            const float c = a.rope_cos[int64_t{qpos} * half + i];
            const float sn = a.rope_sin[int64_t{qpos} * half + i];
            q[h][p] = make_float2(x0 * c - x1 * sn, x0 * sn + x1 * c);
          }
        }
      }
    }
  }

  // ALiBi: each head's slope, and the query's cache position its keys' distances count from.
  float slope[kMaxHeads];
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) slope[h] = a.alibi_slopes != nullptr && h < nh ? a.alibi_slopes[h0 + h] : 0.0f;
  const int qpos = g.QueryPosition(t);

  // Online softmax state per head; acc holds this lane's pairs of the output.
  float m[kMaxHeads], l[kMaxHeads];
  float2 acc[kMaxHeads][PPL];
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int p = 0; p < PPL; ++p) acc[h][p] = make_float2(0.0f, 0.0f);
  }

  for (int i = kb + warp; i < ke; i += kWarps) {
    const int64_t j = i < n_sinks ? i : lo + (i - n_sinks);  // absolute index of the key
    const int64_t slot = g.Slot(j);
    const int kpos = g.KeyPosition(j, t);
    const Pair* kp = reinterpret_cast<const Pair*>(k_head + slot * hd);
    const Pair* vp = reinterpret_cast<const Pair*>(v_head + slot * hd);
    float2 k[PPL], v[PPL];
#pragma unroll
    for (int p = 0; p < PPL; ++p) {
      const int ii = lane + 32 * p;
      k[p] = v[p] = make_float2(0.0f, 0.0f);
      if (ii < half) {
        const float2 raw = Storage<T>::PairToFloat2(kp[ii]);
        v[p] = Storage<T>::PairToFloat2(vp[ii]);
        if (a.alibi_slopes != nullptr) {
          k[p] = raw;
        } else {
          const float c = a.rope_cos[int64_t{kpos} * half + ii];
          const float sn = a.rope_sin[int64_t{kpos} * half + ii];
          k[p] = make_float2(raw.x * c - raw.y * sn, raw.x * sn + raw.y * c);
        }
      }
    }
#pragma unroll
    for (int h = 0; h < kMaxHeads; ++h) {
      if (h < nh) {
        float dot = 0.0f;
#pragma unroll
        for (int p = 0; p < PPL; ++p) dot += q[h][p].x * k[p].x + q[h][p].y * k[p].y;
        const float score = WarpSum(dot) * scale - slope[h] * static_cast<float>(qpos - kpos);
        const float m_new = fmaxf(m[h], score);
        const float alpha = __expf(m[h] - m_new);
        const float pr = __expf(score - m_new);
        l[h] = l[h] * alpha + pr;
#pragma unroll
        for (int p = 0; p < PPL; ++p) {
          acc[h][p].x = acc[h][p].x * alpha + pr * v[p].x;
          acc[h][p].y = acc[h][p].y * alpha + pr * v[p].y;
        }
        m[h] = m_new;
      }
    }
  }

  // Merge the warps' states through shared memory: (kWarps, kMaxHeads, hd + 2).
  const int stride = hd + 2;
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) {
    if (h < nh) {
      float* row = smem + (warp * kMaxHeads + h) * stride;
#pragma unroll
      for (int p = 0; p < PPL; ++p) {
        const int ii = lane + 32 * p;
        if (ii < half) {
          row[2 * ii] = acc[h][p].x;
          row[2 * ii + 1] = acc[h][p].y;
        }
      }
      if (lane == 0) {
        row[hd] = m[h];
        row[hd + 1] = l[h];
      }
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nh * hd; idx += blockDim.x) {
    const int h = idx / hd;
    const int d = idx - h * hd;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, smem[(w * kMaxHeads + h) * stride + hd]);
    float sum = 0.0f, out = 0.0f;
    if (mx != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float* row = smem + (w * kMaxHeads + h) * stride;
        if (row[hd] == -INFINITY) continue;  // a warp that saw no key
        const float f = __expf(row[hd] - mx);
        sum += row[hd + 1] * f;
        out += row[d] * f;
      }
    }
    const int head = h0 + h;
    if (a.splits == 1) {
      // Every query sees at least itself, so sum > 0 here.
      static_cast<T*>(a.out)[(int64_t{token} * a.n_heads + head) * hd + d] = Storage<T>::FromFloat(out / sum);
    } else {
      const int64_t part = (int64_t{z} * a.n_heads + head) * a.splits + split;
      a.partial[part * hd + d] = out;
      if (d == 0) {
        float* ml = a.partial + int64_t{a.tokens} * a.n_heads * a.splits * hd;
        ml[2 * part] = mx;  // -inf for an empty split
        ml[2 * part + 1] = sum;
      }
    }
  }
}

// grid (tokens * n_heads), block 128: merges the splits of one (query, head).
template <typename T>
__global__ void CombineKernel(AttentionArgs a) {
  const int64_t th = blockIdx.x;  // z * n_heads + head, z indexing the launch's queries
  const int64_t z = th / a.n_heads;
  const int64_t token = a.token_list ? a.token_list[z] : z;
  const int64_t out_row = token * a.n_heads + (th - z * a.n_heads);
  const int hd = a.head_dim;
  const float* acc = a.partial + th * a.splits * hd;
  const float* ml = a.partial + int64_t{a.tokens} * a.n_heads * a.splits * hd + th * a.splits * 2;
  float mx = -INFINITY;
  for (int sp = 0; sp < a.splits; ++sp) mx = fmaxf(mx, ml[2 * sp]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float sum = 0.0f, out = 0.0f;
    for (int sp = 0; sp < a.splits; ++sp) {
      if (ml[2 * sp] == -INFINITY) continue;
      const float f = __expf(ml[2 * sp] - mx);
      sum += ml[2 * sp + 1] * f;
      out += acc[sp * hd + d] * f;
    }
    static_cast<T*>(a.out)[out_row * hd + d] = Storage<T>::FromFloat(out / sum);
  }
}

template <typename T, int PPL>
void Launch(const AttentionArgs& a, cudaStream_t stream) {
  const int group = a.n_heads / a.n_kv_heads;
  const int chunks = (group + kMaxHeads - 1) / kMaxHeads;
  const dim3 grid(a.splits, a.n_kv_heads * chunks, a.tokens);
  const size_t smem = sizeof(float) * kWarps * kMaxHeads * (a.head_dim + 2);
  AttentionKernel<T, PPL><<<grid, kWarps * 32, smem, stream>>>(a);
  CUDA_CHECK_LAUNCH();
  if (a.splits > 1) {
    CombineKernel<T><<<a.tokens * a.n_heads, 128, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

int32_t AttentionSplits(int32_t tokens, int32_t n_heads, int32_t n_kv_heads, int32_t head_dim, int32_t max_keys,
                        int32_t num_sms, int64_t partial_floats) {
  const int64_t chunks = (n_heads / std::max(n_kv_heads, 1) + kMaxHeads - 1) / kMaxHeads;
  const int64_t blocks = int64_t{tokens} * n_kv_heads * chunks;
  // Decode is bound by reading the cache: aim for ~8 blocks per SM in flight.
  const int64_t target = int64_t{8} * std::max(num_sms, 1);
  if (blocks <= 0 || blocks >= target) return 1;
  int64_t splits = (target + blocks - 1) / blocks;
  splits = std::min<int64_t>(splits, (max_keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
  splits = std::min<int64_t>(splits, kMaxSplits);
  while (splits > 1 && AttentionPartialFloats(tokens, n_heads, head_dim, static_cast<int32_t>(splits)) > partial_floats) {
    --splits;
  }
  return static_cast<int32_t>(std::max<int64_t>(splits, 1));
}

void LaunchAttention(const AttentionArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.qkv != nullptr && a.pool != nullptr && a.seqs != nullptr && a.token_seq != nullptr);
  SINKSERVE_REQUIRE(a.alibi_slopes != nullptr || (a.rope_cos != nullptr && a.rope_sin != nullptr && a.rope_positions > 0));
  SINKSERVE_REQUIRE(a.out != nullptr);
  SINKSERVE_REQUIRE(a.n_heads > 0 && a.n_kv_heads > 0 && a.n_heads % a.n_kv_heads == 0);
  SINKSERVE_REQUIRE(a.head_dim > 0 && a.head_dim % 2 == 0 && a.head_dim <= kMaxAttentionHeadDim);
  SINKSERVE_REQUIRE(a.qkv_stride >= a.n_heads * a.head_dim && a.layer >= 0 && a.tokens >= 0);
  SINKSERVE_REQUIRE(a.splits >= 1 && a.splits <= 65535);
  SINKSERVE_REQUIRE(a.splits == 1 ||
                    (a.partial != nullptr &&
                     a.partial_floats >= AttentionPartialFloats(a.tokens, a.n_heads, a.head_dim, a.splits)));
  SINKSERVE_REQUIRE(a.tokens <= 65535);  // grid.z
  if (a.tokens == 0) return;
  const int ppl = (a.head_dim / 2 + 31) / 32;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (ppl <= 1) {
      Launch<T, 1>(a, stream);
    } else if (ppl <= 2) {
      Launch<T, 2>(a, stream);
    } else {
      Launch<T, 4>(a, stream);
    }
  });
}

}  // namespace sinkserve::cuda
