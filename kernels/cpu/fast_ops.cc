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

// sum_i a[i] * b[i]. Four accumulators hide the FMA latency.
float DotSimd(const float* a, const float* b, int32_t n) {
  Vec16 acc[4] = {};
  int32_t i = 0;
  for (; i + 4 * simd::kLanes <= n; i += 4 * simd::kLanes) {
    for (int32_t u = 0; u < 4; ++u) {
      acc[u] += simd::Load(a + i + u * simd::kLanes) * simd::Load(b + i + u * simd::kLanes);
    }
  }
  for (; i + simd::kLanes <= n; i += simd::kLanes) acc[0] += simd::Load(a + i) * simd::Load(b + i);
  float sum = simd::HorizontalSum((acc[0] + acc[1]) + (acc[2] + acc[3]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
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

// scores[i] = q . k[:, i] for the slots of one run; k: (head_dim, slots).
// Four blocks of 16 slots at a time, so four independent FMA chains run
// down the head_dim loop.
void RunScores(const float* q, const float* k, int32_t slots, int32_t hd, const SlotRun& run, float* scores) {
  int32_t i = run.begin;
  for (; i + 4 * simd::kLanes <= run.end; i += 4 * simd::kLanes) {
    Vec16 acc[4] = {};
    for (int32_t d = 0; d < hd; ++d) {
      const float* kd = k + int64_t{d} * slots + i;
      for (int32_t u = 0; u < 4; ++u) acc[u] += q[d] * simd::Load(kd + u * simd::kLanes);
    }
    for (int32_t u = 0; u < 4; ++u) simd::Store(scores + i + u * simd::kLanes, acc[u]);
  }
  for (; i + simd::kLanes <= run.end; i += simd::kLanes) {
    Vec16 acc = {};
    for (int32_t d = 0; d < hd; ++d) acc += q[d] * simd::Load(k + int64_t{d} * slots + i);
    simd::Store(scores + i, acc);
  }
  for (; i < run.end; ++i) {
    float acc = 0.0f;
    for (int32_t d = 0; d < hd; ++d) acc += q[d] * k[int64_t{d} * slots + i];
    scores[i] = acc;
  }
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

void RotatedAttention(const RotatedAttentionArgs& a, int32_t head_begin, int32_t head_end) {
  const CacheGeometry& g = *a.geometry;
  const int32_t hd = a.head_dim;
  const int32_t slots = g.Slots();
  const int32_t group = a.n_heads / a.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  SlotRun runs[3];
  const int32_t n_runs = SlotRuns(g, a.t, runs);

  // scratch: scores (slots, indexed by slot) | the query rotated for one run (head_dim)
  float* scores = a.scratch;
  float* q = scores + slots;
  for (int32_t h = head_begin; h < head_end; ++h) {
    const int32_t kv = h / group;
    const float* k = a.k_cache + int64_t{kv} * hd * slots;  // (head_dim, slots)
    const float* v = a.v_cache + int64_t{kv} * hd * slots;  // (head_dim, slots)
    float max_score = -INFINITY;
    for (int32_t r = 0; r < n_runs; ++r) {
      for (int32_t d = 0; d < hd; ++d) q[d] = a.q[h * hd + d] * scale;
      Rope(q, hd, runs[r].position, *a.rope);
      RunScores(q, k, slots, hd, runs[r], scores);
      max_score = std::max(max_score, RunMax(scores, runs[r]));
    }
    float sum = 0.0f;
    for (int32_t r = 0; r < n_runs; ++r) sum += RunExpSum(scores, max_score, runs[r]);
    const float inv_sum = 1.0f / sum;
    for (int32_t d = 0; d < hd; ++d) {
      float acc = 0.0f;
      for (int32_t r = 0; r < n_runs; ++r) {
        const SlotRun& run = runs[r];
        acc += DotSimd(scores + run.begin, v + int64_t{d} * slots + run.begin, run.end - run.begin);
      }
      a.out[h * hd + d] = acc * inv_sum;
    }
  }
}

}  // namespace sinkserve::cpu
