// Model description: architecture parameters and host weights.
//
// Two families share it. Llama and Qwen2: RMSNorm, SwiGLU MLP, RoPE. MPT:
// LayerNorm, GELU MLP, ALiBi (a per-head linear bias on the key's distance
// instead of rotating q and k); its fused QKV matrix is split into wq, wk
// and wv at load.
//
// Every loader (llama2.c .bin, GGUF) produces this one struct; backends read it
// once at construction (the CPU backend uses it in place, the CUDA backend
// uploads it). Weight matrices are row-major (out_features, in_features), as in
// llama2.c and GGUF, so y = W x reads one contiguous row per output, and keep
// the file's type (engine/model/weight.h): fp32, fp16, bf16 or ggml blocks.
// Norm weights and biases are fp32.
//
// q/k projections use the Meta (interleaved-pair) RoPE layout: rotation pairs
// are (2i, 2i+1) inside each head. Loaders of files in another layout (HF,
// or NEOX half-split RoPE as in qwen2) permute the q/k rows at load.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/vocab.h"
#include "engine/model/weight.h"

namespace sinkserve {

// How positions reach attention, how layers normalize, what the MLP is.
enum class PositionKind { kRope, kAlibi };
enum class NormKind { kRms, kLayer };
enum class FfnKind { kSwiGlu, kGelu };

struct ModelConfig {
  std::string arch = "llama";
  std::string name;            // human-readable, for logs and ServerInfo
  int32_t dim = 0;             // residual width
  int32_t hidden_dim = 0;      // MLP inner width
  int32_t n_layers = 0;
  int32_t n_heads = 0;         // query heads
  int32_t n_kv_heads = 0;      // key/value heads (GQA when < n_heads)
  int32_t head_dim = 0;        // usually dim / n_heads
  int32_t vocab_size = 0;
  int32_t max_seq_len = 0;     // the model's trained context
  float rope_theta = 10000.0f;
  // RoPE frequency adjustments: pair i's frequency is multiplied by
  // rope_freq_scale (linear scaling: 1 / factor) and divided by
  // rope_freq_factors[i] (Llama 3.1's rope_freqs, head_dim / 2 of them;
  // empty: none).
  float rope_freq_scale = 1.0f;
  std::vector<float> rope_freq_factors;
  float norm_eps = 1e-5f;
  bool tied_classifier = false;  // classifier == token embedding
  PositionKind positions = PositionKind::kRope;
  NormKind norm = NormKind::kRms;
  FfnKind ffn = FfnKind::kSwiGlu;
  // ALiBi: head h's bias on a key at distance d from the query is
  // -AlibiSlopes()[h] * d, the slopes a geometric series set by this bound
  // (MPT's alibi_bias_max, llama.cpp's max_alibi_bias).
  float max_alibi_bias = 0.0f;

  bool alibi() const { return positions == PositionKind::kAlibi; }

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
  // Checks that every size is positive, head counts divide, and products fit.
  absl::Status Validate() const;
  // ALiBi's slope for each query head (n_heads), as llama.cpp computes them:
  // with n = the largest power of two <= n_heads, heads h < n take
  // 2^(-max_alibi_bias * (h + 1) / n) and the rest interleave the series of
  // half that bound, 2^(-max_alibi_bias / 2 * (2 (h - n) + 1) / n).
  std::vector<float> AlibiSlopes() const;
};

struct LayerWeights {
  std::vector<float> attn_norm;  // (dim)
  std::vector<float> attn_norm_bias;  // (dim) LayerNorm's shift; empty when none
  Weight wq;                     // (n_heads * head_dim, dim)
  Weight wk;                     // (n_kv_heads * head_dim, dim)
  Weight wv;                     // (n_kv_heads * head_dim, dim)
  Weight wo;                     // (dim, n_heads * head_dim)
  std::vector<float> ffn_norm;   // (dim)
  std::vector<float> ffn_norm_bias;  // (dim); empty when none
  Weight w1;                     // gate: (hidden_dim, dim); empty for a GELU MLP
  Weight w2;                     // down: (dim, hidden_dim)
  Weight w3;                     // up:   (hidden_dim, dim)
  // Attention biases (qwen2), added after the projections; empty when the
  // model has none.
  std::vector<float> bq;         // (n_heads * head_dim)
  std::vector<float> bk;         // (n_kv_heads * head_dim)
  std::vector<float> bv;         // (n_kv_heads * head_dim)
};

struct ModelWeights {
  Weight token_embedding;            // (vocab_size, dim)
  std::vector<LayerWeights> layers;  // (n_layers)
  std::vector<float> final_norm;     // (dim)
  std::vector<float> final_norm_bias;  // (dim); empty when none
  Weight classifier;                 // (vocab_size, dim); empty when tied

  // The classifier matrix, whichever buffer holds it.
  const Weight& Classifier() const { return classifier.empty() ? token_embedding : classifier; }
  // True when the layers carry attention biases.
  bool has_attention_bias() const { return !layers.empty() && !layers[0].bq.empty(); }
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
