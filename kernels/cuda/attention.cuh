// Sink + window attention, one query per block: the step's decode tokens and
// small chunks (attention_plan.h routes large prefill chunks to the tiled
// kernel in prefill_attention.cuh). Any token works here; causality falls
// out of the geometry, since token t sees only keys <= t.
//
// Query t of a session sees the sinks 0..SinkCount(t)-1 and the window
// WindowBegin(t)..t (engine/cache_geometry.h). Keys sit un-rotated in the
// cache; key j is rotated by KeyPosition(j, t) and the query by
// QueryPosition(t) at attention time, from one fp32 cos/sin table built on the
// host in double precision (the table cpu::RopeTable builds). All positions
// are < sinks + window, so angles never grow with the session's age. ALiBi
// models (alibi_slopes set) rotate nothing: head h's score for key j gains
// -slope[h] * (QueryPosition(t) - KeyPosition(j, t)), a distance inside the
// cache, as cpu::Attention defines it.
//
// FlashDecoding-style split-K: when tokens x kv heads cannot fill the GPU,
// each query's key range is cut into `splits` pieces processed by separate
// blocks, each leaving (max, sum, unnormalised output) in `partial`; a second
// kernel merges them. With splits == 1 the first kernel writes `out` directly.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/step_desc.h"

namespace sinkserve::cuda {

struct AttentionArgs {
  DType dtype;
  const float* qkv;          // (tokens, qkv_stride) fp32, un-rotated q at columns [0, n_heads * head_dim)
  int32_t qkv_stride = 0;
  const void* pool;          // KV pool base; layout per session in step_desc.h
  const SeqDesc* seqs;       // (n_seqs) device
  const int32_t* token_seq;  // (step tokens) device: batch entry of each token
  const int32_t* token_list = nullptr;  // (tokens) device: the step tokens to attend for; null = 0 .. tokens-1
  const float* rope_cos;     // (rope_positions, head_dim / 2) device; unused with ALiBi
  const float* rope_sin;     // (rope_positions, head_dim / 2) device
  int32_t rope_positions = 0;  // must be >= every session's MaxPositions()
  const float* alibi_slopes = nullptr;  // (n_heads) device: ALiBi instead of RoPE; null = RoPE
  void* out;                 // (step tokens, n_heads * head_dim) storage dtype, rows by step token
  float* partial = nullptr;  // >= AttentionPartialFloats(...) when splits > 1
  int64_t partial_floats = 0;
  int32_t tokens = 0;         // queries in this launch (entries of token_list when given)
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;      // even, <= kMaxAttentionHeadDim
  int32_t layer = 0;
  int32_t splits = 1;        // >= 1; AttentionSplits picks one
};

inline constexpr int32_t kMaxAttentionHeadDim = 256;

// Floats of split-K scratch for a launch: (tokens, n_heads, splits, head_dim + 2).
inline int64_t AttentionPartialFloats(int32_t tokens, int32_t n_heads, int32_t head_dim, int32_t splits) {
  return splits <= 1 ? 0 : int64_t{tokens} * n_heads * splits * (head_dim + 2);
}

// Splits that fill `num_sms` SMs for a step of `tokens` queries whose largest
// key count is `max_keys`, bounded so the scratch fits `partial_floats`.
// Depends only on shapes, never on data, so a captured graph stays valid.
int32_t AttentionSplits(int32_t tokens, int32_t n_heads, int32_t n_kv_heads, int32_t head_dim, int32_t max_keys,
                        int32_t num_sms, int64_t partial_floats);

void LaunchAttention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace sinkserve::cuda
