// Llama-family model description: architecture parameters and fp32 host weights.
//
// Every loader (llama2.c .bin, GGUF) produces this one struct; backends read it
// once at construction (the CPU backend uses it in place, the CUDA backend
// uploads it). Weight matrices are row-major (out_features, in_features), as in
// llama2.c and GGUF, so y = W x reads one contiguous row per output.
//
// q/k projections use the Meta (interleaved-pair) RoPE layout: rotation pairs
// are (2i, 2i+1) inside each head. Loaders of HF-layout files permute at load.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/vocab.h"

namespace sinkserve {

struct ModelConfig {
  std::string arch = "llama";
  std::string name;            // human-readable, for logs and ServerInfo
  int32_t dim = 0;             // residual width
  int32_t hidden_dim = 0;      // SwiGLU inner width
  int32_t n_layers = 0;
  int32_t n_heads = 0;         // query heads
  int32_t n_kv_heads = 0;      // key/value heads (GQA when < n_heads)
  int32_t head_dim = 0;        // usually dim / n_heads
  int32_t vocab_size = 0;
  int32_t max_seq_len = 0;     // the model's trained context
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tied_classifier = false;  // classifier == token embedding

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
  // Checks that every size is positive, head counts divide, and products fit.
  absl::Status Validate() const;
};

struct LayerWeights {
  std::vector<float> attn_norm;  // (dim)
  std::vector<float> wq;         // (n_heads * head_dim, dim)
  std::vector<float> wk;         // (n_kv_heads * head_dim, dim)
  std::vector<float> wv;         // (n_kv_heads * head_dim, dim)
  std::vector<float> wo;         // (dim, n_heads * head_dim)
  std::vector<float> ffn_norm;   // (dim)
  std::vector<float> w1;         // gate: (hidden_dim, dim)
  std::vector<float> w2;         // down: (dim, hidden_dim)
  std::vector<float> w3;         // up:   (hidden_dim, dim)
};

struct ModelWeights {
  std::vector<float> token_embedding;  // (vocab_size, dim)
  std::vector<LayerWeights> layers;    // (n_layers)
  std::vector<float> final_norm;       // (dim)
  std::vector<float> classifier;       // (vocab_size, dim); empty when tied

  // The classifier matrix, whichever buffer holds it.
  const std::vector<float>& Classifier() const {
    return classifier.empty() ? token_embedding : classifier;
  }
};

struct Model {
  ModelConfig config;
  ModelWeights weights;
  std::optional<Vocab> vocab;   // present when the model file carries one (GGUF)
  std::string chat_template;    // GGUF tokenizer.chat_template, if any

  // Checks that every weight buffer has the size its config implies.
  absl::Status ValidateWeights() const;
};

}  // namespace sinkserve
