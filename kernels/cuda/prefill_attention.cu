#include "kernels/cuda/prefill_attention.cuh"

#include "kernels/cuda/dtype.cuh"

namespace sinkserve::cuda {
namespace {

constexpr int kThreads = 128;                      // 4 threads per row
constexpr int kQuarter = kPrefillKeys / 4;          // keys one thread scores per tile
static_assert(kThreads == 4 * kPrefillRows, "thread (r, c) = row r, quarter c");

__device__ __forceinline__ float2 Rotate(float2 x, const float* cos_row, const float* sin_row, int i) {
  const float c = cos_row[i], s = sin_row[i];
  return make_float2(x.x * c - x.y * s, x.x * s + x.y * c);
}

// Which keys a phase walks, where their rotation origin is, and which of them
// each query sees (see the header for why two phases).
struct Phase {
  bool sinks;      // true: sink keys, rotated by j; queries by QueryPosition(t)
  int64_t lo, hi;  // key range [lo, hi); window phase: rotation origin lo

  __device__ int QueryRotation(const CacheGeometry& g, int64_t t) const {
    if (sinks) return g.QueryPosition(t);
    return t > lo ? static_cast<int>(t - lo) : 0;  // t < lo: a sink query that sees no window key
  }
  __device__ int KeyRotation(int64_t j) const { return static_cast<int>(sinks ? j : j - lo); }
  __device__ bool Visible(const CacheGeometry& g, int64_t t, int64_t j) const {
    return sinks ? j < g.SinkCount(t) : (j >= g.WindowBegin(t) && j <= t);
  }
};

// grid (n_tiles, n_kv_heads * head_chunks), block kThreads. Thread (r, c):
// r = threadIdx.x / 4 is its row (query q = r / heads, head r % heads of the
// block's heads); c = threadIdx.x % 4 scores keys c*8..c*8+7 of each key tile
// and owns output dims c, c+4, c+8, ... (HDMAX / 4 of them at most).
// Dynamic shared memory, fp32: qs (rows, hd+1) | ks (keys, hd+1) | vs (keys, hd) | ps (rows, keys+1).
template <typename T, int HDMAX>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(PrefillAttentionArgs a) {
  using Pair = typename Storage<T>::Pair;
  extern __shared__ float smem[];
  const int hd = a.head_dim;
  const int half = hd / 2;
  const int row_stride = hd + 1;  // odd: rows land on different banks
  float* qs = smem;
  float* ks = qs + kPrefillRows * row_stride;
  float* vs = ks + kPrefillKeys * row_stride;
  float* ps = vs + kPrefillKeys * hd;
  constexpr int kPsStride = kPrefillKeys + 1;

  const PrefillTile tile = a.tiles[blockIdx.x];
  const SeqDesc s = a.seqs[tile.seq];
  const CacheGeometry& g = s.geometry;
  const int group = a.n_heads / a.n_kv_heads;
  const int heads = min(group, kPrefillRows);
  const int chunks = (group + heads - 1) / heads;
  const int kvh = blockIdx.y / chunks;
  const int h0 = kvh * group + (blockIdx.y % chunks) * heads;  // first query head of this block
  const int nh = min(heads, (kvh + 1) * group - h0);

  const int r = threadIdx.x >> 2;
  const int c = threadIdx.x & 3;
  const bool live = r / heads < tile.count && r % heads < nh;
  const int token = tile.first + r / heads;
  const int64_t t = s.n_past + (token - s.token_begin);  // meaningful when live
  const int64_t t_first = s.n_past + (tile.first - s.token_begin);
  const int64_t t_last = t_first + tile.count - 1;

  const int slots = g.Slots();
  const T* k_head = static_cast<const T*>(a.pool) + s.cache_offset +
                    a.layer * LayerElements(g, a.n_kv_heads, hd) + int64_t{kvh} * slots * hd;
  const T* v_head = k_head + int64_t{a.n_kv_heads} * slots * hd;
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));

  const float slope = a.alibi_slopes != nullptr && live ? a.alibi_slopes[h0 + r % heads] : 0.0f;  // ALiBi
  float m = -INFINITY, l = 0.0f;
  float acc[HDMAX / 4];
#pragma unroll
  for (int i = 0; i < HDMAX / 4; ++i) acc[i] = 0.0f;

  const Phase phases[2] = {{true, 0, g.SinkCount(t_last)}, {false, g.WindowBegin(t_first), t_last + 1}};
  for (const Phase& ph : phases) {
    if (ph.lo >= ph.hi) continue;
    __syncthreads();  // the previous phase is done with qs
    // The tile's queries, rotated for this phase and pre-scaled.
    for (int idx = threadIdx.x; idx < kPrefillRows * half; idx += kThreads) {
      const int rr = idx / half, i = idx - rr * half;
      float2 q = make_float2(0.0f, 0.0f);
      if (rr / heads < tile.count && rr % heads < nh) {
        const int tok = tile.first + rr / heads;
        const int pos = ph.QueryRotation(g, s.n_past + (tok - s.token_begin));
        const float* qrow = a.qkv + int64_t{tok} * a.qkv_stride + (h0 + rr % heads) * hd;
        q = make_float2(qrow[2 * i], qrow[2 * i + 1]);
        if (a.alibi_slopes == nullptr) q = Rotate(q, a.rope_cos + int64_t{pos} * half, a.rope_sin + int64_t{pos} * half, i);
        q.x *= scale;
        q.y *= scale;
      }
      qs[rr * row_stride + 2 * i] = q.x;
      qs[rr * row_stride + 2 * i + 1] = q.y;
    }

    for (int64_t kb = ph.lo; kb < ph.hi; kb += kPrefillKeys) {
      __syncthreads();  // qs written; the previous key tile's ks/vs/ps consumed
      for (int idx = threadIdx.x; idx < kPrefillKeys * half; idx += kThreads) {
        const int kk = idx / half, i = idx - kk * half;
        const int64_t j = kb + kk;
        float2 k = make_float2(0.0f, 0.0f), v = k;
        if (j < ph.hi) {
          const int64_t slot = g.Slot(j);
          const int pos = ph.KeyRotation(j);
          k = Storage<T>::PairToFloat2(reinterpret_cast<const Pair*>(k_head + slot * hd)[i]);
          if (a.alibi_slopes == nullptr) k = Rotate(k, a.rope_cos + int64_t{pos} * half, a.rope_sin + int64_t{pos} * half, i);
          v = Storage<T>::PairToFloat2(reinterpret_cast<const Pair*>(v_head + slot * hd)[i]);
        }
        ks[kk * row_stride + 2 * i] = k.x;
        ks[kk * row_stride + 2 * i + 1] = k.y;
        vs[kk * hd + 2 * i] = v.x;
        vs[kk * hd + 2 * i + 1] = v.y;
      }
      __syncthreads();

      // Scores of this thread's eight keys, masked per query.
      float sc[kQuarter];
#pragma unroll
      for (int kk = 0; kk < kQuarter; ++kk) sc[kk] = 0.0f;
      if (live) {
        const float* qrow = qs + r * row_stride;
        const float* krow = ks + c * kQuarter * row_stride;
        for (int d = 0; d < hd; ++d) {
          const float qd = qrow[d];
#pragma unroll
          for (int kk = 0; kk < kQuarter; ++kk) sc[kk] += qd * krow[kk * row_stride + d];
        }
      }
      float tile_max = -INFINITY;
#pragma unroll
      for (int kk = 0; kk < kQuarter; ++kk) {
        const int64_t j = kb + c * kQuarter + kk;
        if (!live || j >= ph.hi || !ph.Visible(g, t, j)) {
          sc[kk] = -INFINITY;
        } else if (a.alibi_slopes != nullptr) {
          sc[kk] -= slope * static_cast<float>(g.QueryPosition(t) - g.KeyPosition(j, t));
        }
        tile_max = fmaxf(tile_max, sc[kk]);
      }
      // The row's four threads are adjacent lanes of one warp.
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
      const float m_new = fmaxf(m, tile_max);
      const float alpha = m_new == -INFINITY ? 1.0f : __expf(m - m_new);
      float psum = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kQuarter; ++kk) {
        sc[kk] = m_new == -INFINITY ? 0.0f : __expf(sc[kk] - m_new);  // masked keys: exp(-inf) = 0
        psum += sc[kk];
        ps[r * kPsStride + c * kQuarter + kk] = sc[kk];
      }
      psum += __shfl_xor_sync(0xffffffffu, psum, 1);
      psum += __shfl_xor_sync(0xffffffffu, psum, 2);
      l = l * alpha + psum;
      m = m_new;
      __syncwarp();  // the row's probabilities are written by, and read by, its own four lanes

      const int n_keys = ph.hi - kb < kPrefillKeys ? static_cast<int>(ph.hi - kb) : kPrefillKeys;
#pragma unroll
      for (int i = 0; i < HDMAX / 4; ++i) acc[i] *= alpha;
      for (int kk = 0; kk < n_keys; ++kk) {
        const float p = ps[r * kPsStride + kk];
        const float* vrow = vs + kk * hd + c;
#pragma unroll
        for (int i = 0; i < HDMAX / 4; ++i) {
          if (c + 4 * i < hd) acc[i] += p * vrow[4 * i];
        }
      }
    }
  }

  // Every live query sees at least itself, so l > 0.
  if (live) {
    T* out = static_cast<T*>(a.out) + (int64_t{token} * a.n_heads + h0 + r % heads) * hd;
#pragma unroll
    for (int i = 0; i < HDMAX / 4; ++i) {
      if (c + 4 * i < hd) out[c + 4 * i] = Storage<T>::FromFloat(acc[i] / l);
    }
  }
}

// qs (rows, hd+1) | ks (keys, hd+1) | vs (keys, hd) | ps (rows, keys+1), fp32.
constexpr size_t SharedBytes(size_t hd) {
  return sizeof(float) *
         (kPrefillRows * (hd + 1) + kPrefillKeys * (hd + 1) + kPrefillKeys * hd + kPrefillRows * (kPrefillKeys + 1));
}

template <typename T, int HDMAX>
void Launch(const PrefillAttentionArgs& a, cudaStream_t stream) {
  // Above 48 KiB a kernel must opt in; once per instantiation, for its largest head_dim.
  static const bool opted_in = [] {
    if (SharedBytes(HDMAX) > 48 * 1024) {
      CUDA_CHECK(cudaFuncSetAttribute(PrefillAttentionKernel<T, HDMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(SharedBytes(HDMAX))));
    }
    return true;
  }();
  (void)opted_in;
  const int group = a.n_heads / a.n_kv_heads;
  const int heads = PrefillHeadsPerBlock(a.n_heads, a.n_kv_heads);
  const int chunks = (group + heads - 1) / heads;
  const dim3 grid(a.n_tiles, a.n_kv_heads * chunks);
  PrefillAttentionKernel<T, HDMAX><<<grid, kThreads, SharedBytes(a.head_dim), stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void LaunchPrefillAttention(const PrefillAttentionArgs& a, cudaStream_t stream) {
  SINKSERVE_REQUIRE(a.qkv != nullptr && a.pool != nullptr && a.seqs != nullptr);
  SINKSERVE_REQUIRE(a.n_tiles == 0 || a.tiles != nullptr);
  SINKSERVE_REQUIRE(a.alibi_slopes != nullptr || (a.rope_cos != nullptr && a.rope_sin != nullptr && a.rope_positions > 0));
  SINKSERVE_REQUIRE(a.out != nullptr);
  SINKSERVE_REQUIRE(a.n_heads > 0 && a.n_kv_heads > 0 && a.n_heads % a.n_kv_heads == 0);
  SINKSERVE_REQUIRE(a.head_dim > 0 && a.head_dim % 2 == 0 && a.head_dim <= kMaxPrefillHeadDim);
  SINKSERVE_REQUIRE(a.qkv_stride >= a.n_heads * a.head_dim && a.layer >= 0 && a.n_tiles >= 0);
  SINKSERVE_REQUIRE(a.n_kv_heads * ((a.n_heads / a.n_kv_heads + kPrefillRows - 1) / kPrefillRows) <= 65535);  // grid.y
  if (a.n_tiles == 0) return;
  DispatchDType(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.head_dim <= 16) {
      Launch<T, 16>(a, stream);
    } else if (a.head_dim <= 64) {
      Launch<T, 64>(a, stream);
    } else if (a.head_dim <= 128) {
      Launch<T, 128>(a, stream);
    } else {
      Launch<T, 256>(a, stream);
    }
  });
}

}  // namespace sinkserve::cuda
