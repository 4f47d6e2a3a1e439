#include "kernels/cpu/fast_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/simd.h"

namespace sinkserve::cpu {

using simd::Vec16;
static_assert(kMatMulColumns == simd::kLanes);

std::vector<float> TransposePadded(const std::vector<float>& w, int32_t n, int32_t k) {
  const int64_t n_pad = PaddedColumns(n);
  std::vector<float> t(static_cast<size_t>(k * n_pad), 0.0f);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) t[c * n_pad + r] = w[r * k + c];
  }
  return t;
}

namespace {

// A tile of kTokens tokens x kVecs * 16 columns, accumulated in registers:
// each step loads kVecs vectors of wt and broadcasts one input per token, so
// kTokens * kVecs independent FMA chains hide the FMA latency. `width` < 16
// only for the last, partial vector of a row (wt is zero-padded there).
template <int kTokens, int kVecs>
void MatMulTile(float* out, const float* in, const float* wt, int32_t n, int32_t n_pad, int32_t k, int32_t col) {
  Vec16 acc[kTokens][kVecs] = {};
  for (int32_t kk = 0; kk < k; ++kk) {
    Vec16 w[kVecs];
    for (int32_t v = 0; v < kVecs; ++v) w[v] = simd::Load(wt + int64_t{kk} * n_pad + col + v * simd::kLanes);
    for (int32_t t = 0; t < kTokens; ++t) {
      const float x = in[int64_t{t} * k + kk];
      for (int32_t v = 0; v < kVecs; ++v) acc[t][v] += x * w[v];
    }
  }
  for (int32_t t = 0; t < kTokens; ++t) {
    for (int32_t v = 0; v < kVecs; ++v) {
      const int32_t c = col + v * simd::kLanes;
      const int32_t width = std::min(simd::kLanes, n - c);
      std::memcpy(out + int64_t{t} * n + c, &acc[t][v], sizeof(float) * width);
    }
  }
}

// Every token over columns [col, col + kVecs * 16).
template <int kVecs>
void MatMulColumns(float* out, const float* in, const float* wt, int32_t tokens, int32_t n, int32_t n_pad,
                   int32_t k, int32_t col) {
  int32_t t = 0;
  for (; t + 4 <= tokens; t += 4) MatMulTile<4, kVecs>(out + int64_t{t} * n, in + int64_t{t} * k, wt, n, n_pad, k, col);
  for (; t < tokens; ++t) MatMulTile<1, kVecs>(out + int64_t{t} * n, in + int64_t{t} * k, wt, n, n_pad, k, col);
}

}  // namespace

void MatMulTransposed(float* out, const float* in, const float* wt, int32_t tokens, int32_t n, int32_t k,
                      int32_t n_begin, int32_t n_end) {
  const int32_t n_pad = PaddedColumns(n);
  int32_t col = n_begin;
  for (; col + 4 * kMatMulColumns <= n_end; col += 4 * kMatMulColumns) {
    MatMulColumns<4>(out, in, wt, tokens, n, n_pad, k, col);
  }
  for (; col < n_end; col += kMatMulColumns) MatMulColumns<1>(out, in, wt, tokens, n, n_pad, k, col);
}

void FastSwiGlu(float* out, const float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes) {
    const Vec16 g = simd::Load(gate + i);
    simd::Store(out + i, g / (1.0f + simd::Exp(-g)) * simd::Load(up + i));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + simd::Exp(-gate[i])) * up[i];
}

namespace {

// A run of cache slots [begin, end) whose keys share one query rotation.
struct SlotRun {
  int32_t begin;
  int32_t end;
  int32_t position;  // the query's rotation for this run
};

// The runs query t reads, in slot order (at most three). The window lo..t
// spans at most two laps of the ring: in slot order the older lap (if any)
// runs from Slot(lo) to the end of the ring, and t's lap from the ring's start
// (or Slot(lo)) to Slot(t). Adjacent runs with the same rotation merge, so
// before any eviction there is one run and the arithmetic is a dense cache's
// exactly.
int32_t SlotRuns(const CacheGeometry& g, int64_t t, SlotRun runs[3]) {
  const int64_t lap_shift = t < g.sinks ? 0 : (t - g.sinks) / g.ring * g.ring;  // lap * ring
  int32_t n = 0;
  auto add = [&](int32_t begin, int32_t end, int64_t position) {
    if (n > 0 && runs[n - 1].end == begin && runs[n - 1].position == position) {
      runs[n - 1].end = end;
    } else {
      runs[n++] = {begin, end, static_cast<int32_t>(position)};
    }
  };
  if (g.SinkCount(t) > 0) add(0, g.SinkCount(t), g.QueryPosition(t));
  if (g.WindowCount(t) > 0) {
    const int64_t lo = g.WindowBegin(t);
    const int32_t first = g.Slot(lo);
    const int32_t last = g.Slot(t);
    if (lo < g.sinks + lap_shift) {
      add(first, g.Slots(), t - lap_shift + g.ring);
      add(g.sinks, last + 1, t - lap_shift);
    } else {
      add(first, last + 1, t - lap_shift);
    }
  }
  return n;
}

float RunMax(const float* x, const SlotRun& run) {
  Vec16 lanes = simd::Splat(-INFINITY);
  int32_t i = run.begin;
  for (; i + simd::kLanes <= run.end; i += simd::kLanes) {
    const Vec16 v = simd::Load(x + i);
    lanes = lanes > v ? lanes : v;
  }
  float m = simd::HorizontalMax(lanes);
  for (; i < run.end; ++i) m = std::max(m, x[i]);
  return m;
}

// x[i] = exp(x[i] - shift) over the run; returns their sum.
float RunExpSum(float* x, float shift, const SlotRun& run) {
  Vec16 acc = {};
  int32_t i = run.begin;
  for (; i + simd::kLanes <= run.end; i += simd::kLanes) {
    const Vec16 e = simd::Exp(simd::Load(x + i) - shift);
    simd::Store(x + i, e);
    acc += e;
  }
  float sum = simd::HorizontalSum(acc);
  for (; i < run.end; ++i) sum += (x[i] = simd::Exp(x[i] - shift));
  return sum;
}

}  // namespace

namespace {

// Attention for the G query heads first_head.. that share kv head `kv`.
// Working on the whole group at once, every key and value vector loaded from
// the cache serves G heads; two blocks of 16 slots per step keep 2G FMA
// chains in flight.
template <int G>
void GroupAttention(const RotatedAttentionArgs& a, int32_t first_head, int32_t kv, const SlotRun* runs,
                    int32_t n_runs) {
  const int32_t hd = a.head_dim;
  const int32_t slots = a.geometry->Slots();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* k = a.k_cache + int64_t{kv} * hd * slots;  // (head_dim, slots)
  const float* v = a.v_cache + int64_t{kv} * hd * slots;  // (head_dim, slots)
  // scratch: scores (G, slots), indexed by slot | rotated queries (G, head_dim)
  float* scores = a.scratch;
  float* q = scores + int64_t{G} * slots;
  constexpr int32_t L = simd::kLanes;

  float max_score[G];
  std::fill_n(max_score, G, -INFINITY);
  for (int32_t r = 0; r < n_runs; ++r) {
    const SlotRun& run = runs[r];
    for (int32_t g = 0; g < G; ++g) {
      for (int32_t d = 0; d < hd; ++d) q[g * hd + d] = a.q[(first_head + g) * hd + d] * scale;
      Rope(q + g * hd, hd, run.position, *a.rope);
    }
    int32_t i = run.begin;
    for (; i + 2 * L <= run.end; i += 2 * L) {
      Vec16 acc[G][2] = {};
      for (int32_t d = 0; d < hd; ++d) {
        const Vec16 k0 = simd::Load(k + int64_t{d} * slots + i);
        const Vec16 k1 = simd::Load(k + int64_t{d} * slots + i + L);
        for (int32_t g = 0; g < G; ++g) {
          acc[g][0] += q[g * hd + d] * k0;
          acc[g][1] += q[g * hd + d] * k1;
        }
      }
      for (int32_t g = 0; g < G; ++g) {
        simd::Store(scores + int64_t{g} * slots + i, acc[g][0]);
        simd::Store(scores + int64_t{g} * slots + i + L, acc[g][1]);
      }
    }
    for (; i < run.end; ++i) {
      for (int32_t g = 0; g < G; ++g) {
        float acc = 0.0f;
        for (int32_t d = 0; d < hd; ++d) acc += q[g * hd + d] * k[int64_t{d} * slots + i];
        scores[int64_t{g} * slots + i] = acc;
      }
    }
    for (int32_t g = 0; g < G; ++g) max_score[g] = std::max(max_score[g], RunMax(scores + int64_t{g} * slots, run));
  }
  float inv_sum[G];
  for (int32_t g = 0; g < G; ++g) {
    float sum = 0.0f;
    for (int32_t r = 0; r < n_runs; ++r) sum += RunExpSum(scores + int64_t{g} * slots, max_score[g], runs[r]);
    inv_sum[g] = 1.0f / sum;
  }

  // out[g][d] = sum over slots of p[g][slot] * v[d][slot] / sum[g]
  for (int32_t d = 0; d < hd; ++d) {
    const float* vd = v + int64_t{d} * slots;
    Vec16 acc[G][2] = {};
    float tail[G] = {};
    for (int32_t r = 0; r < n_runs; ++r) {
      int32_t i = runs[r].begin;
      for (; i + 2 * L <= runs[r].end; i += 2 * L) {
        const Vec16 v0 = simd::Load(vd + i);
        const Vec16 v1 = simd::Load(vd + i + L);
        for (int32_t g = 0; g < G; ++g) {
          acc[g][0] += simd::Load(scores + int64_t{g} * slots + i) * v0;
          acc[g][1] += simd::Load(scores + int64_t{g} * slots + i + L) * v1;
        }
      }
      for (; i < runs[r].end; ++i) {
        for (int32_t g = 0; g < G; ++g) tail[g] += scores[int64_t{g} * slots + i] * vd[i];
      }
    }
    for (int32_t g = 0; g < G; ++g) {
      a.out[(first_head + g) * hd + d] = (simd::HorizontalSum(acc[g][0] + acc[g][1]) + tail[g]) * inv_sum[g];
    }
  }
}

}  // namespace

void RotatedAttention(const RotatedAttentionArgs& a, int32_t head_begin, int32_t head_end) {
  SlotRun runs[3];
  const int32_t n_runs = SlotRuns(*a.geometry, a.t, runs);
  const int32_t group = a.n_heads / a.n_kv_heads;
  for (int32_t h = head_begin; h < head_end; h += group) {
    const int32_t kv = h / group;
    switch (group) {
      case 1: GroupAttention<1>(a, h, kv, runs, n_runs); break;
      case 2: GroupAttention<2>(a, h, kv, runs, n_runs); break;
      case 4: GroupAttention<4>(a, h, kv, runs, n_runs); break;
      case 8: GroupAttention<8>(a, h, kv, runs, n_runs); break;
      default:  // uncommon ratios: one head at a time
        for (int32_t i = 0; i < group; ++i) GroupAttention<1>(a, h + i, kv, runs, n_runs);
    }
  }
}

}  // namespace sinkserve::cpu
