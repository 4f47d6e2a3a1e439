// Random tiny Llama models for tests that need weights but not a file.
#pragma once

#include <random>

#include "engine/model/model.h"

namespace sinkserve::testing {

inline ModelConfig TinyConfig(int32_t dim = 32, int32_t n_heads = 4, int32_t n_kv_heads = 2, int32_t n_layers = 2,
                              int32_t vocab = 64, int32_t hidden = 48, int32_t context = 4096) {
  ModelConfig c;
  c.name = "random-tiny";
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = dim / n_heads;
  c.vocab_size = vocab;
  c.max_seq_len = context;
  c.rope_theta = 10000.0f;
  c.norm_eps = 1e-5f;
  c.tied_classifier = false;
  return c;
}

// Weights ~ N(0, scale^2); norms near 1 so activations stay well scaled.
inline Model RandomModel(const ModelConfig& c, uint64_t seed, float scale = 0.2f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  auto fill = [&](std::vector<float>& v, int64_t n, float offset = 0.0f) {
    v.resize(n);
    for (float& x : v) x = offset + normal(rng);
  };
  auto matrix = [&](Weight& w, int64_t rows, int64_t cols) {
    std::vector<float> v;
    fill(v, rows * cols);
    w = Weight::FromF32(std::move(v), rows, cols);
  };
  Model m;
  m.config = c;
  matrix(m.weights.token_embedding, c.vocab_size, c.dim);
  m.weights.layers.resize(c.n_layers);
  for (LayerWeights& l : m.weights.layers) {
    fill(l.attn_norm, c.dim, 1.0f);
    matrix(l.wq, c.q_dim(), c.dim);
    matrix(l.wk, c.kv_dim(), c.dim);
    matrix(l.wv, c.kv_dim(), c.dim);
    matrix(l.wo, c.dim, c.q_dim());
    fill(l.ffn_norm, c.dim, 1.0f);
    matrix(l.w1, c.hidden_dim, c.dim);
    matrix(l.w2, c.dim, c.hidden_dim);
    matrix(l.w3, c.hidden_dim, c.dim);
  }
  fill(m.weights.final_norm, c.dim, 1.0f);
  if (!c.tied_classifier) matrix(m.weights.classifier, c.vocab_size, c.dim);
  return m;
}

// A weight's values as fp32, for tests that index them.
inline std::vector<float> F32(const Weight& w) { return w.ToF32(); }

inline std::vector<int32_t> RandomTokens(int32_t n, int32_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

}  // namespace sinkserve::testing
