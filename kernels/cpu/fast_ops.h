// The CPU backend's fast paths: exact equivalents of the reference ops in
// kernels/cpu/ops.h, arranged for SIMD. Tests hold them to the reference.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/cache_geometry.h"
#include "kernels/cpu/ops.h"

namespace sinkserve::cpu {

// Columns of a transposed weight, padded to whole SIMD tiles.
inline constexpr int32_t kMatMulColumns = 16;
inline int32_t PaddedColumns(int32_t n) { return (n + kMatMulColumns - 1) / kMatMulColumns * kMatMulColumns; }

// w (n, k) row-major, transposed to (k, PaddedColumns(n)) with zero padding.
std::vector<float> TransposePadded(const std::vector<float>& w, int32_t n, int32_t k);

// out (tokens, n) = in (tokens, k) . wt, with wt = TransposePadded(w, n, k).
// Computes columns [n_begin, n_end) of every token; n_begin must be a
// multiple of kMatMulColumns so callers can split the columns across threads.
// Each step broadcasts one input value against a row of wt, so no output
// needs a horizontal reduction, and a tile of tokens shares every load of wt.
void MatMulTransposed(float* out, const float* in, const float* wt, int32_t tokens, int32_t n, int32_t k,
                      int32_t n_begin, int32_t n_end);

// The CPU backend's fast path, an exact equivalent of Attention that never
// rotates a key at attention time. RoPE scores depend only on the position
// difference: (R(a) q) . (R(b) k) = q . R(b - a) k. So each key is rotated
// once, when appended, by its slot index (a sink's slot is its cache position;
// window token j's slot is j - lap * ring, lap = (j - sinks) / ring), and the
// query is rotated three ways instead: by QueryPosition(t) for the sinks, and
// by t - lap * ring for each of the (at most two) laps of the ring the window
// spans. Every angle is a small integer (< sinks + 2 * ring) times a
// frequency, so it is as exact after a million tokens as after ten. Until
// the first eviction everything sits in lap 0 and the arithmetic is the same
// as a dense cache's, bit for bit.
//
// The cache is stored slot-minor, (n_kv_heads, head_dim, slots), zero-filled
// and followed by kCachePadding floats, so scores
// for a run of slots are head_dim contiguous axpys and the weighted sum of
// values is head_dim contiguous dot products: both vectorize fully even at
// head_dim 8, where a per-key dot product would be all reduction overhead.
struct RotatedAttentionArgs {
  const CacheGeometry* geometry;
  int64_t t;                // absolute index of the query token
  const float* q;           // (n_heads, head_dim) un-rotated query
  const float* k_cache;     // (n_kv_heads, head_dim, slots) keys rotated by their slot index
  const float* v_cache;     // (n_kv_heads, head_dim, slots)
  float* out;               // (n_heads, head_dim)
  int32_t n_heads;
  int32_t n_kv_heads;
  int32_t head_dim;
  const RopeTable* rope;    // positions >= RotatedRopePositions(geometry)
  float* scratch;           // >= RotatedAttentionScratch(geometry, head_dim, group) floats
  // ALiBi instead of RoPE (keys stored un-rotated): a slope per query head.
  // A key's distance from the query is a position difference as well, so
  // the runs' positions give it exactly: cpu::Attention's bias, bounded by
  // sinks + window however old the session.
  const float* alibi_slopes = nullptr;
  // A contrastive candidate (cpu::AttentionArgs::self_k): query t's own key
  // and value, (n_kv_heads, head_dim) each, key un-rotated, used instead of
  // slot Slot(t), which is not read. Both or neither.
  const float* self_k = nullptr;
  const float* self_v = nullptr;
};
// Heads [head_begin, head_end) must cover whole GQA groups (multiples of
// n_heads / n_kv_heads).
void RotatedAttention(const RotatedAttentionArgs& args, int32_t head_begin, int32_t head_end);

// One head's row of scores: every key, each of the (at most three) runs of
// slots padded to whole 16-lane blocks.
inline int32_t RotatedScoreRow(const CacheGeometry& g) { return g.sinks + g.window + 3 * 16; }

// Floats of scratch RotatedAttention needs: scores and a rotated query for
// every head of one GQA group.
inline int64_t RotatedAttentionScratch(const CacheGeometry& g, int32_t head_dim, int32_t group) {
  return int64_t{group} * (RotatedScoreRow(g) + head_dim);
}

// Floats a cache buffer needs past its last slot: attention reads whole
// 16-lane blocks, up to 15 floats beyond the last key it uses.
inline constexpr int32_t kCachePadding = 16;

// out[i] = exp(x[i]) for softmax arguments (x <= 0 or -inf), exactly as
// RotatedAttention computes them: within a few ulp, and exactly 0 below -87.
// Compiled with the backend's -march, so tests see the backend's code path.
void SoftmaxExp(float* out, const float* x, int64_t n);

// out[i] = gelu(x[i]) (cpu::Gelu's tanh form), with a vectorized exp. (n)
void FastGelu(float* out, const float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i], with a vectorized exp. (n)
void FastSwiGlu(float* out, const float* gate, const float* up, int64_t n);

// RoPE table size RotatedAttention needs.
inline int32_t RotatedRopePositions(const CacheGeometry& g) { return g.sinks + 2 * g.ring; }

}  // namespace sinkserve::cpu
