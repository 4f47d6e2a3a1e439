#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>

namespace sinkserve::cpu {

void RmsNorm(float* out, const float* x, const float* weight, int32_t n, float eps) {
  float ss = 0.0f;
  for (int32_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int32_t i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

void LayerNorm(float* out, const float* x, const float* weight, const float* bias, int32_t n, float eps) {
  double sum = 0.0;
  for (int32_t i = 0; i < n; ++i) sum += x[i];
  const float mean = static_cast<float>(sum / n);
  double squares = 0.0;
  for (int32_t i = 0; i < n; ++i) squares += static_cast<double>(x[i] - mean) * (x[i] - mean);
  const float scale = static_cast<float>(1.0 / std::sqrt(squares / n + eps));
  for (int32_t i = 0; i < n; ++i) out[i] = weight[i] * ((x[i] - mean) * scale) + (bias != nullptr ? bias[i] : 0.0f);
}

float Dot(const float* a, const float* b, int32_t n) {
  // Sixteen independent lanes: the compiler maps them onto SIMD registers,
  // and the split breaks the add dependency chain. An 8-lane step serves
  // short vectors (head_dim 8) and tails.
  float acc[16] = {};
  int32_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int32_t j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (; i + 8 <= n; i += 8) {
    for (int32_t j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int32_t j = 0; j < 8; ++j) sum += acc[j] + acc[j + 8];
  return sum;
}

void MatMulRows(float* out, const float* in, const float* w, int32_t tokens, int32_t n,
                int32_t k, int32_t n_begin, int32_t n_end) {
  // Rows of w outer, tokens inner: each weight row is read from memory once
  // per call and reused from L1 for every token of the batch.
  for (int32_t r = n_begin; r < n_end; ++r) {
    const float* wr = w + static_cast<int64_t>(r) * k;
    for (int32_t t = 0; t < tokens; ++t) {
      out[static_cast<int64_t>(t) * n + r] = Dot(wr, in + static_cast<int64_t>(t) * k, k);
    }
  }
}

void Gelu(float* x, int64_t n) {
  constexpr float kSqrt2OverPi = 0.79788456080286535588f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * v * (1.0f + 0.044715f * v * v)));
  }
}

void SwiGlu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void RopeTable::Build(int32_t dim, int32_t n_positions, float theta, float freq_scale,
                      const std::vector<float>& freq_factors) {
  head_dim = dim;
  positions = n_positions;
  const int32_t half = dim / 2;
  cos.resize(static_cast<size_t>(n_positions) * half);
  sin.resize(static_cast<size_t>(n_positions) * half);
  for (int32_t p = 0; p < n_positions; ++p) {
    for (int32_t i = 0; i < half; ++i) {
      double freq = std::pow(static_cast<double>(theta), -2.0 * i / dim);
      if (!freq_factors.empty()) freq /= freq_factors[i];
      if (freq_scale != 1.0f) freq *= freq_scale;
      const double angle = static_cast<double>(p) * freq;
      cos[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
      sin[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void Rope(float* x, int32_t head_dim, int32_t pos, const RopeTable& table) {
  const int32_t half = head_dim / 2;
  const float* c = table.cos.data() + static_cast<size_t>(pos) * half;
  const float* s = table.sin.data() + static_cast<size_t>(pos) * half;
  for (int32_t i = 0; i < half; ++i) {
    const float x0 = x[2 * i];
    const float x1 = x[2 * i + 1];
    x[2 * i] = x0 * c[i] - x1 * s[i];
    x[2 * i + 1] = x0 * s[i] + x1 * c[i];
  }
}

void Attention(const AttentionArgs& a, int32_t head_begin, int32_t head_end) {
  const CacheGeometry& g = *a.geometry;
  const int32_t hd = a.head_dim;
  const int32_t kv_stride = a.n_kv_heads * hd;  // floats per cache slot
  const int32_t group = a.n_heads / a.n_kv_heads;
  const int32_t n_sinks = g.SinkCount(a.t);
  const int64_t lo = g.WindowBegin(a.t);
  const int32_t n_keys = g.KeyCount(a.t);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // scratch layout: rotated keys (n_keys, hd) | scores (n_keys) | q (hd)
  float* keys = a.scratch;
  float* scores = keys + static_cast<int64_t>(n_keys) * hd;
  float* q = scores + n_keys;
  const int32_t q_pos = g.QueryPosition(a.t);

  int32_t prev_kv = -1;
  for (int32_t h = head_begin; h < head_end; ++h) {
    const int32_t kv = h / group;
    if (kv != prev_kv) {
      // Rotate this kv head's keys once for every query head that shares it.
      for (int32_t i = 0; i < n_keys; ++i) {
        const int64_t j = i < n_sinks ? i : lo + (i - n_sinks);
        const float* src = j == a.t && a.self_k != nullptr ? a.self_k + kv * hd
                                                            : a.k_cache + static_cast<int64_t>(g.Slot(j)) * kv_stride + kv * hd;
        float* dst = keys + static_cast<int64_t>(i) * hd;
        for (int32_t d = 0; d < hd; ++d) dst[d] = src[d];
        if (a.alibi_slopes == nullptr) Rope(dst, hd, g.KeyPosition(j, a.t), *a.rope);
      }
      prev_kv = kv;
    }
    for (int32_t d = 0; d < hd; ++d) q[d] = a.q[h * hd + d];
    if (a.alibi_slopes == nullptr) Rope(q, hd, q_pos, *a.rope);

    float max_score = -INFINITY;
    for (int32_t i = 0; i < n_keys; ++i) {
      scores[i] = Dot(q, keys + static_cast<int64_t>(i) * hd, hd) * scale;
      if (a.alibi_slopes != nullptr) {
        const int64_t j = i < n_sinks ? i : lo + (i - n_sinks);
        scores[i] -= a.alibi_slopes[h] * static_cast<float>(q_pos - g.KeyPosition(j, a.t));
      }
      max_score = std::max(max_score, scores[i]);
    }
    float sum = 0.0f;
    for (int32_t i = 0; i < n_keys; ++i) {
      scores[i] = std::exp(scores[i] - max_score);
      sum += scores[i];
    }
    float* out = a.out + h * hd;
    for (int32_t d = 0; d < hd; ++d) out[d] = 0.0f;
    const float inv_sum = 1.0f / sum;
    for (int32_t i = 0; i < n_keys; ++i) {
      const int64_t j = i < n_sinks ? i : lo + (i - n_sinks);
      const float* v = j == a.t && a.self_v != nullptr ? a.self_v + kv * hd
                                                       : a.v_cache + static_cast<int64_t>(g.Slot(j)) * kv_stride + kv * hd;
      const float p = scores[i] * inv_sum;
      for (int32_t d = 0; d < hd; ++d) out[d] += p * v[d];
    }
  }
}

}  // namespace sinkserve::cpu
