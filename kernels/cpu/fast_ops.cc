#include "kernels/cpu/fast_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

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
// each step loads kVecs vectors of wt and broadcasts one input per token, and
// kTokens * kVecs independent FMA chains hide the FMA latency. Every tile
// shape sums over k in the same order, so a token's result does not depend
// on which tile, slice or thread computed it: batching is bitwise invariant.
// `width` < 16 only for the last, partial vector of a row (wt is zero-padded
// there).
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

// kTokens tokens over columns [col, col + kVecs * 16), in tiles at most
// kMaxVecs vectors wide (so kTokens * kMaxVecs accumulators fit in registers).
template <int kTokens, int kVecs, int kMaxVecs>
void MatMulTokens(float* out, const float* in, const float* wt, int32_t n, int32_t n_pad, int32_t k, int32_t col) {
  constexpr int kStep = kVecs < kMaxVecs ? kVecs : kMaxVecs;
  for (int32_t v = 0; v < kVecs; v += kStep) MatMulTile<kTokens, kStep>(out, in, wt, n, n_pad, k, col + v * simd::kLanes);
}

// Every token over columns [col, col + kVecs * 16): tiles of four tokens
// (four vectors wide, sixteen accumulators), then the one to three left over
// together (a single token goes eight vectors wide, so it still has eight
// FMA chains in flight).
template <int kVecs>
void MatMulColumns(float* out, const float* in, const float* wt, int32_t tokens, int32_t n, int32_t n_pad,
                   int32_t k, int32_t col) {
  int32_t t = 0;
  for (; t + 4 <= tokens; t += 4) MatMulTokens<4, kVecs, 4>(out + int64_t{t} * n, in + int64_t{t} * k, wt, n, n_pad, k, col);
  float* o = out + int64_t{t} * n;
  const float* x = in + int64_t{t} * k;
  switch (tokens - t) {
    case 3: MatMulTokens<3, kVecs, 4>(o, x, wt, n, n_pad, k, col); break;
    case 2: MatMulTokens<2, kVecs, 4>(o, x, wt, n, n_pad, k, col); break;
    case 1: MatMulTokens<1, kVecs, 8>(o, x, wt, n, n_pad, k, col); break;
    default: break;
  }
}

}  // namespace

void MatMulTransposed(float* out, const float* in, const float* wt, int32_t tokens, int32_t n, int32_t k,
                      int32_t n_begin, int32_t n_end) {
  const int32_t n_pad = PaddedColumns(n);
  int32_t col = n_begin;
  for (; col + 8 * kMatMulColumns <= n_end; col += 8 * kMatMulColumns) {
    MatMulColumns<8>(out, in, wt, tokens, n, n_pad, k, col);
  }
  for (; col + 4 * kMatMulColumns <= n_end; col += 4 * kMatMulColumns) {
    MatMulColumns<4>(out, in, wt, tokens, n, n_pad, k, col);
  }
  for (; col < n_end; col += kMatMulColumns) MatMulColumns<1>(out, in, wt, tokens, n, n_pad, k, col);
}

void SoftmaxExp(float* out, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes) simd::Store(out + i, simd::ExpNonPositive(simd::Load(x + i)));
  if (i < n) {  // the tail through one vector padded with -inf
    float tail[simd::kLanes];
    std::fill(std::begin(tail), std::end(tail), -INFINITY);
    std::copy(x + i, x + n, tail);
    const Vec16 e = simd::ExpNonPositive(simd::Load(tail));
    std::memcpy(out + i, &e, sizeof(float) * (n - i));
  }
}

void FastGelu(float* out, const float* x, int64_t n) {
  // tanh(u) = 1 - 2 / (exp(2u) + 1): exact at both ends (exp overflows to
  // inf, or underflows to 0).
  constexpr float kSqrt2OverPi = 0.79788456080286535588f;
  const auto gelu = [](auto v) {
    const auto u = kSqrt2OverPi * v * (1.0f + 0.044715f * v * v);
    return 0.5f * v * (2.0f - 2.0f / (simd::Exp(2.0f * u) + 1.0f));
  };
  int64_t i = 0;
  for (; i + simd::kLanes <= n; i += simd::kLanes) simd::Store(out + i, gelu(simd::Load(x + i)));
  for (; i < n; ++i) out[i] = gelu(x[i]);
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

// Scores live in a compact row per head: run r's keys at [offset_r, offset_r +
// length_r), each run starting on a whole block and its last block padded
// with -inf, so every loop below works on whole 16-lane blocks. Blocks read
// up to 15 cache floats past a run's end; those are finite (the cache is
// zero-filled and padded at its end) and their weight is exactly 0.
constexpr int32_t L = simd::kLanes;
inline int32_t Blocks(int32_t n) { return (n + L - 1) / L; }

// Attention for the G query heads first_head.. that share kv head `kv`.
// Working on the whole group at once, every key and value vector loaded from
// the cache serves G heads. HD > 0 fixes head_dim at compile time (small
// heads); 0 means any head_dim.
template <int G, int HD>
void GroupAttention(const RotatedAttentionArgs& a, int32_t first_head, int32_t kv, const SlotRun* runs,
                    int32_t n_runs) {
  const int32_t hd = a.head_dim;
  const int32_t slots = a.geometry->Slots();
  const int32_t row = RotatedScoreRow(*a.geometry);  // floats per head's score row
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* k = a.k_cache + int64_t{kv} * hd * slots;  // (head_dim, slots)
  const float* v = a.v_cache + int64_t{kv} * hd * slots;  // (head_dim, slots)
  // scratch: scores (G, row) | rotated queries (G, head_dim)
  float* scores = a.scratch;
  float* q = scores + int64_t{G} * row;
  // Blocks of 16 keys worked on together, so a small group of large heads
  // still has four independent FMA chains (one head alone would wait on one
  // chain of head_dim FMAs per block). Small heads (HD > 0) keep one block:
  // there the kernel is throughput bound, and spanning measured 2-4% slower
  // (bench/cpu/NOTES.md).
  constexpr int32_t kSpan = HD > 0 || G >= 4 ? 1 : 4 / G;

  int32_t offset[3] = {};
  Vec16 max_lanes[G];
  for (int32_t g = 0; g < G; ++g) max_lanes[g] = simd::Splat(-INFINITY);
  for (int32_t r = 0, off = 0; r < n_runs; off += Blocks(runs[r].end - runs[r].begin) * L, ++r) {
    const SlotRun& run = runs[r];
    const int32_t n = run.end - run.begin;
    offset[r] = off;
    for (int32_t g = 0; g < G; ++g) {
      for (int32_t d = 0; d < hd; ++d) q[g * hd + d] = a.q[(first_head + g) * hd + d] * scale;
      if (a.alibi_slopes == nullptr) Rope(q + g * hd, hd, run.position, *a.rope);
    }
    // kSpan blocks at a time: G * kSpan independent FMA chains over d.
    const auto score_blocks = [&]<int kSpan>(int32_t b) {
      Vec16 acc[G][kSpan] = {};
      for (int32_t d = 0; d < hd; ++d) {
        for (int32_t j = 0; j < kSpan; ++j) {
          const Vec16 kd = simd::Load(k + int64_t{d} * slots + run.begin + (b + j) * L);
          for (int32_t g = 0; g < G; ++g) acc[g][j] += q[g * hd + d] * kd;
        }
      }
      for (int32_t j = 0; j < kSpan; ++j) {
        if (a.alibi_slopes != nullptr) {
          // The key in slot s is run.position - s behind the query (see
          // SlotRuns), so its bias is slope * (s - run.position).
          const Vec16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
          const Vec16 behind = lane + static_cast<float>(run.begin + (b + j) * L - run.position);
          for (int32_t g = 0; g < G; ++g) acc[g][j] += a.alibi_slopes[first_head + g] * behind;
        }
        if ((b + j + 1) * L > n) {  // the padded last block
          const simd::IVec16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
          const auto valid = lane < n - (b + j) * L;
          for (int32_t g = 0; g < G; ++g) acc[g][j] = valid ? acc[g][j] : simd::Splat(-INFINITY);
        }
        for (int32_t g = 0; g < G; ++g) {
          simd::Store(scores + int64_t{g} * row + off + (b + j) * L, acc[g][j]);
          max_lanes[g] = max_lanes[g] > acc[g][j] ? max_lanes[g] : acc[g][j];
        }
      }
    };
    int32_t b = 0;
    for (; b + kSpan <= Blocks(n); b += kSpan) score_blocks.template operator()<kSpan>(b);
    for (; b < Blocks(n); ++b) score_blocks.template operator()<1>(b);
  }
  const int32_t used = n_runs == 0 ? 0 : offset[n_runs - 1] + Blocks(runs[n_runs - 1].end - runs[n_runs - 1].begin) * L;

  // A candidate's own key (args.self_k) sits at distance 0: its score is
  // q.k with neither rotated (both would turn by the same angle), no ALiBi
  // bias. Its weight joins the softmax and its value the sum below.
  float self_weight[G] = {};
  float inv_sum[G];
  for (int32_t g = 0; g < G; ++g) {
    float max_score = simd::HorizontalMax(max_lanes[g]);
    float self_score = 0.0f;
    if (a.self_k != nullptr) {
      for (int32_t d = 0; d < hd; ++d) self_score += a.q[(first_head + g) * hd + d] * scale * a.self_k[kv * hd + d];
      max_score = std::max(max_score, self_score);
    }
    float* s = scores + int64_t{g} * row;
    Vec16 sum = {};
    for (int32_t i = 0; i < used; i += L) {
      const Vec16 e = simd::ExpNonPositive(simd::Load(s + i) - max_score);
      simd::Store(s + i, e);
      sum += e;
    }
    if (a.self_k != nullptr) self_weight[g] = std::exp(self_score - max_score);
    inv_sum[g] = 1.0f / (simd::HorizontalSum(sum) + self_weight[g]);
  }
  // The own value's share of output dim d for head g.
  const auto self_value = [&](int32_t g, int32_t d) {
    return a.self_v != nullptr ? self_weight[g] * a.self_v[kv * hd + d] : 0.0f;
  };

  // out[g][d] = sum over keys of p[g][key] * v[d][key's slot] / sum[g]
  if constexpr (HD > 0) {
    // Small heads: all G * HD accumulators stay in registers, so each block
    // loads its probabilities once and each value vector once.
    Vec16 acc[G][HD] = {};
    for (int32_t r = 0; r < n_runs; ++r) {
      for (int32_t b = 0; b < Blocks(runs[r].end - runs[r].begin); ++b) {
        Vec16 p[G];
        for (int32_t g = 0; g < G; ++g) p[g] = simd::Load(scores + int64_t{g} * row + offset[r] + b * L);
        for (int32_t d = 0; d < HD; ++d) {
          const Vec16 vb = simd::Load(v + int64_t{d} * slots + runs[r].begin + b * L);
          for (int32_t g = 0; g < G; ++g) acc[g][d] += p[g] * vb;
        }
      }
    }
    for (int32_t g = 0; g < G; ++g) {
      for (int32_t d = 0; d < HD; ++d) {
        a.out[(first_head + g) * HD + d] = (simd::HorizontalSum(acc[g][d]) + self_value(g, d)) * inv_sum[g];
      }
    }
  } else {
    for (int32_t d = 0; d < hd; ++d) {
      const float* vd = v + int64_t{d} * slots;
      Vec16 acc[G][kSpan] = {};
      for (int32_t r = 0; r < n_runs; ++r) {
        const auto add_blocks = [&]<int kBlocks>(int32_t b) {
          for (int32_t j = 0; j < kBlocks; ++j) {
            const Vec16 vb = simd::Load(vd + runs[r].begin + (b + j) * L);
            for (int32_t g = 0; g < G; ++g) {
              acc[g][j] += simd::Load(scores + int64_t{g} * row + offset[r] + (b + j) * L) * vb;
            }
          }
        };
        int32_t b = 0;
        for (; b + kSpan <= Blocks(runs[r].end - runs[r].begin); b += kSpan) add_blocks.template operator()<kSpan>(b);
        for (; b < Blocks(runs[r].end - runs[r].begin); ++b) add_blocks.template operator()<1>(b);
      }
      for (int32_t g = 0; g < G; ++g) {
        Vec16 total = acc[g][0];
        for (int32_t j = 1; j < kSpan; ++j) total += acc[g][j];
        a.out[(first_head + g) * hd + d] = (simd::HorizontalSum(total) + self_value(g, d)) * inv_sum[g];
      }
    }
  }
}

}  // namespace

void RotatedAttention(const RotatedAttentionArgs& a, int32_t head_begin, int32_t head_end) {
  SlotRun runs[3];
  int32_t n_runs = SlotRuns(*a.geometry, a.t, runs);
  if (a.self_k != nullptr) {
    // The query's own slot is the last of the last run; its key comes from self_k.
    if (--runs[n_runs - 1].end == runs[n_runs - 1].begin) --n_runs;
  }
  const int32_t group = a.n_heads / a.n_kv_heads;
  // Head dim 8 (the stories models) gets registers-only value sums.
  auto run = [&]<int HD>() {
    for (int32_t h = head_begin; h < head_end; h += group) {
      const int32_t kv = h / group;
      switch (group) {
        case 1: GroupAttention<1, HD>(a, h, kv, runs, n_runs); break;
        case 2: GroupAttention<2, HD>(a, h, kv, runs, n_runs); break;
        case 4: GroupAttention<4, HD>(a, h, kv, runs, n_runs); break;
        case 8:
          if constexpr (HD == 0) {  // 8 x head_dim 8 accumulators would not fit in registers
            GroupAttention<8, HD>(a, h, kv, runs, n_runs);
            break;
          }
          [[fallthrough]];
        default:  // other ratios: one head at a time
          for (int32_t i = 0; i < group; ++i) GroupAttention<1, HD>(a, h + i, kv, runs, n_runs);
      }
    }
  };
  if (a.head_dim == 8) {
    run.template operator()<8>();
  } else {
    run.template operator()<0>();
  }
}

}  // namespace sinkserve::cpu
