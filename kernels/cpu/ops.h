// fp32 reference ops for the forward pass (Llama and MPT layers). The CPU backend is built
// from these, and the CUDA kernel tests use them as their oracle, so each op
// is written to be read: plain loops, shapes in comments.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/cache_geometry.h"

namespace sinkserve::cpu {

// out[i] = x[i] / rms(x) * weight[i]. x, out: (n); weight: (n).
void RmsNorm(float* out, const float* x, const float* weight, int32_t n, float eps);

// LayerNorm: out[i] = (x[i] - mean(x)) / sqrt(var(x) + eps) * weight[i]
// + bias[i]; bias may be null. Mean and variance are summed in double.
void LayerNorm(float* out, const float* x, const float* weight, const float* bias, int32_t n, float eps);

// Dot product of two length-n vectors, 16 lanes of fp32 accumulators.
float Dot(const float* a, const float* b, int32_t n);

// out (rows_out, n) = in (rows_out, k) . w^T, w: (n, k) row-major.
// Computes rows [n_begin, n_end) of every token; the caller splits n.
void MatMulRows(float* out, const float* in, const float* w, int32_t tokens, int32_t n,
                int32_t k, int32_t n_begin, int32_t n_end);

// x[i] = silu(gate[i]) * up[i], in place on gate. (n)
void SwiGlu(float* gate, const float* up, int64_t n);

// x[i] = gelu(x[i]) in place, the tanh form GPT-2, MPT and llama.cpp use:
// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). (n)
void Gelu(float* x, int64_t n);

// cos/sin of RoPE angles for positions [0, positions): pos * theta^(-2i/head_dim),
// computed in double from the integer position, so every angle is exact to
// fp32 rounding whatever the session's age.
struct RopeTable {
  int32_t head_dim = 0;
  int32_t positions = 0;
  std::vector<float> cos;  // (positions, head_dim / 2)
  std::vector<float> sin;  // (positions, head_dim / 2)

  // Pair i turns by position * theta^(-2i/head_dim) * freq_scale /
  // freq_factors[i] (Llama 3.1's rope_freqs; linear scaling sets
  // freq_scale); no factors and scale 1 is plain RoPE.
  void Build(int32_t head_dim, int32_t positions, float theta, float freq_scale = 1.0f,
             const std::vector<float>& freq_factors = {});
};

// Rotates one head vector in place by position `pos` (interleaved pairs 2i, 2i+1).
void Rope(float* x, int32_t head_dim, int32_t pos, const RopeTable& table);

// Attention for one query token over a sink+window cache.
struct AttentionArgs {
  const CacheGeometry* geometry;
  int64_t t;                // absolute index of the query token
  const float* q;           // (n_heads, head_dim) un-rotated query
  const float* k_cache;     // (slots, n_kv_heads, head_dim) un-rotated keys
  const float* v_cache;     // (slots, n_kv_heads, head_dim)
  float* out;               // (n_heads, head_dim)
  int32_t n_heads;
  int32_t n_kv_heads;
  int32_t head_dim;
  const RopeTable* rope;
  // Scratch of at least KeyCount(t) * (head_dim + 2) + head_dim floats.
  float* scratch;
  // ALiBi instead of RoPE: a slope per query head (n_heads); null for RoPE.
  const float* alibi_slopes = nullptr;
  // Query t's own key and value, (n_kv_heads, head_dim) each, un-rotated,
  // instead of the cache's slot Slot(t) (a contrastive candidate, which is
  // not appended); null: from the cache. Both or neither.
  const float* self_k = nullptr;
  const float* self_v = nullptr;
};
// Query t sees the sinks and the window (cache_geometry.h). With RoPE, q is
// rotated by QueryPosition(t) and each key by its KeyPosition(j, t); with
// ALiBi nothing is rotated and head h's score for key j gains
// -slope[h] * (QueryPosition(t) - KeyPosition(j, t)): the distance inside
// the cache, never more than sinks + window - 1.
void Attention(const AttentionArgs& args, int32_t head_begin, int32_t head_end);

// Floats of scratch Attention needs for one query.
inline int64_t AttentionScratch(const CacheGeometry& g, int32_t head_dim) {
  return static_cast<int64_t>(g.sinks + g.window) * (head_dim + 1) + 2 * head_dim;
}

}  // namespace sinkserve::cpu
