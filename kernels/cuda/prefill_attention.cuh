// Sink + window attention for prefill chunks: tiles of consecutive queries of
// one session share every key and value they load, where the decode kernel
// (attention.cuh) reads a session's keys once per query.
//
// A block takes one tile (up to kPrefillRows rows, a row being one query head
// of one token) of one kv head, and walks the keys the tile can see through
// shared memory in tiles of kPrefillKeys, with an online softmax per row. The
// visible set is per query, exactly as in engine/cache_geometry.h: query t
// sees the sinks 0..SinkCount(t)-1 and the window WindowBegin(t)..t.
//
// Positions: RoPE scores depend only on the query-key position difference.
// For a sink key j that difference is QueryPosition(t) - j, so sinks are
// rotated by j and queries by QueryPosition(t), as in the decode kernel. For
// a window key it is t - j for every query (both sit in the window, in age
// order), so window keys are rotated by j - o and queries by t - o, with the
// tile's own origin o = WindowBegin(first query). The key tile is then
// rotated once for all its queries, and every angle stays below
// window + queries_per_tile: exact after millions of tokens. This equals the
// decode kernel's rotation in exact arithmetic and differs by fp32 rounding.
// ALiBi models (alibi_slopes set) rotate nothing and add -slope[h] *
// (QueryPosition(t) - KeyPosition(j, t)) to each visible key's score.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/step_desc.h"

namespace sinkserve::cuda {

inline constexpr int32_t kPrefillRows = 32;  // query rows (token, head) per block
inline constexpr int32_t kPrefillKeys = 32;  // keys per shared-memory tile

// One block's queries: `count` consecutive tokens of batch entry `seq`,
// starting at flat token `first`.
struct PrefillTile {
  int32_t seq = 0;
  int32_t first = 0;
  int32_t count = 0;
};

struct PrefillAttentionArgs {
  DType dtype;
  const float* qkv;          // (tokens, qkv_stride) fp32, un-rotated q at columns [0, n_heads * head_dim)
  int32_t qkv_stride = 0;
  const void* pool;          // KV pool base; layout per session in step_desc.h
  const SeqDesc* seqs;       // (n_seqs) device
  const PrefillTile* tiles;  // (n_tiles) device; count <= PrefillQueriesPerTile()
  int32_t n_tiles = 0;
  const float* rope_cos;     // (rope_positions, head_dim / 2) device
  const float* rope_sin;     // (rope_positions, head_dim / 2) device
  int32_t rope_positions = 0;  // must be >= PrefillRopePositions() of every session
  const float* alibi_slopes = nullptr;  // (n_heads) device: ALiBi instead of RoPE; null = RoPE
  void* out;                 // (tokens, n_heads * head_dim) storage dtype; only the tiles' rows are written
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;      // even, <= kMaxPrefillHeadDim
  int32_t layer = 0;
};

inline constexpr int32_t kMaxPrefillHeadDim = 256;

// Query heads of one kv head a block takes at once, and tokens per tile.
inline int32_t PrefillHeadsPerBlock(int32_t n_heads, int32_t n_kv_heads) {
  const int32_t group = n_heads / n_kv_heads;
  return group < kPrefillRows ? group : kPrefillRows;
}
inline int32_t PrefillQueriesPerTile(int32_t n_heads, int32_t n_kv_heads) {
  return kPrefillRows / PrefillHeadsPerBlock(n_heads, n_kv_heads);
}

// RoPE table rows the prefill kernel reads for a session of this geometry:
// cache positions below sinks + window, and window offsets below
// window + queries_per_tile - 1.
inline int32_t PrefillRopePositions(const CacheGeometry& g, int32_t queries_per_tile) {
  const int32_t offsets = g.window + queries_per_tile - 1;
  return offsets > g.MaxPositions() ? offsets : g.MaxPositions();
}

void LaunchPrefillAttention(const PrefillAttentionArgs& args, cudaStream_t stream);

}  // namespace sinkserve::cuda
