// GGUF architectures `llama`, `qwen2` and `mpt` -> Model, and
// `tokenizer.ggml.*` -> Vocab.
//
// GGUF lists dims fastest-first: a matrix with ne=[in, out] is row-major
// (out, in), which is our layout, so weights are used without transposes,
// in place in the file's mapping. GGUF llama q/k weights are already in the
// Meta interleaved RoPE layout (the converters un-permute HF checkpoints).
// qwen2 keeps HF's NEOX layout (rotation pairs (i, i + d/2) in a head), so
// its q/k rows (and biases) are permuted at load into the interleaved layout:
// q.k is unchanged by permuting both alike, and pair i keeps its frequency.
// mpt has no RoPE: ALiBi, LayerNorm (optionally with biases), a fused
// attn_qkv matrix (split here into q, k, v rows) and a GELU MLP.
#include <cmath>
#include <cstring>
#include <memory>
#include <limits>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model/gguf.h"
#include "engine/status_macros.h"

namespace sinkserve::gguf {
namespace {

// An optional integer key: nullopt when absent, an error when mistyped.
absl::StatusOr<std::optional<int64_t>> OptionalInt(const File& f, std::string_view key) {
  if (f.Find(key) == nullptr) return std::nullopt;
  ASSIGN_OR_RETURN(int64_t v, f.GetInt(key));
  return v;
}

// A size key that must fit a positive int32.
absl::StatusOr<int32_t> PositiveI32(std::string_view key, int64_t v) {
  if (v <= 0 || v > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: metadata '%s' is %d; must be in [1, 2^31)", key, v));
  }
  return static_cast<int32_t>(v);
}

absl::StatusOr<int32_t> RequiredSize(const File& f, std::string_view key) {
  ASSIGN_OR_RETURN(int64_t v, f.GetInt(key));
  return PositiveI32(key, v);
}

absl::StatusOr<int32_t> OptionalSize(const File& f, std::string_view key, int32_t fallback) {
  ASSIGN_OR_RETURN(std::optional<int64_t> v, OptionalInt(f, key));
  if (!v) return fallback;
  return PositiveI32(key, *v);
}

absl::StatusOr<float> OptionalFloat(const File& f, std::string_view key, float fallback) {
  if (f.Find(key) == nullptr) return fallback;
  ASSIGN_OR_RETURN(double v, f.GetFloat(key));
  return static_cast<float>(v);
}

std::string DimsString(const std::vector<uint64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

// Tensor `name` after checking its ggml dims equal `ne` (fastest first,
// trailing 1s ignored on both sides).
absl::StatusOr<const TensorInfo*> FindShaped(const File& f, const std::string& name, std::vector<uint64_t> ne) {
  const TensorInfo* t = f.FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrFormat("GGUF: tensor '%s' is missing", name));
  }
  std::vector<uint64_t> got = t->dims;
  while (!got.empty() && got.back() == 1) got.pop_back();
  while (!ne.empty() && ne.back() == 1) ne.pop_back();
  if (got != ne) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: tensor '%s' has ne=%s, the config implies ne=%s (ggml order, fastest first)",
        name, DimsString(t->dims), DimsString(ne)));
  }
  return t;
}

// Tensor `name` (ne = `ne`) as fp32: norms, biases, RoPE factors.
absl::StatusOr<std::vector<float>> LoadTensor(const File& f, const std::string& name, std::vector<uint64_t> ne) {
  ASSIGN_OR_RETURN(const TensorInfo* t, FindShaped(f, name, std::move(ne)));
  return f.ReadTensorF32(*t);
}

// Tensor `name` as a Weight of shape (rows, cols) (ne = [cols, rows]).
absl::StatusOr<Weight> LoadWeight(const File& f, const std::shared_ptr<const void>& storage, const std::string& name,
                                  uint64_t cols, uint64_t rows) {
  ASSIGN_OR_RETURN(const TensorInfo* t, FindShaped(f, name, {cols, rows}));
  return f.ReadWeight(*t, storage);
}

// The row order that turns NEOX RoPE pairs (i, i + d/2) of each head into
// interleaved pairs (2i, 2i + 1): new row h*d + 2i is old row h*d + i, new
// row h*d + 2i + 1 is old row h*d + i + d/2.
int64_t NeoxSourceRow(int64_t row, int32_t head_dim) {
  const int64_t head = row / head_dim, j = row % head_dim, half = head_dim / 2;
  return head * head_dim + (j % 2 == 0 ? j / 2 : half + j / 2);
}

Weight PermuteNeoxRows(const Weight& w, int32_t head_dim) {
  std::vector<uint8_t> rows(static_cast<size_t>(w.bytes()));
  const int64_t rb = w.row_bytes();
  for (int64_t r = 0; r < w.rows; ++r) std::memcpy(rows.data() + r * rb, w.row(NeoxSourceRow(r, head_dim)), rb);
  return Weight::Own(w.type, w.rows, w.cols, std::move(rows));
}

std::vector<float> PermuteNeox(const std::vector<float>& v, int32_t head_dim) {
  std::vector<float> out(v.size());
  for (size_t r = 0; r < v.size(); ++r) out[r] = v[NeoxSourceRow(static_cast<int64_t>(r), head_dim)];
  return out;
}

absl::StatusOr<ModelConfig> ReadConfig(const File& f, const std::string& arch) {
  ModelConfig c;
  c.arch = arch;
  // Every architecture key is "<arch>.<name>".
  const auto key = [&arch](std::string_view name) { return absl::StrCat(arch, ".", absl::string_view(name.data(), name.size())); };
  if (f.Find("general.name") != nullptr) {
    ASSIGN_OR_RETURN(c.name, f.GetString("general.name"));
  }
  ASSIGN_OR_RETURN(c.dim, RequiredSize(f, key("embedding_length")));
  ASSIGN_OR_RETURN(c.hidden_dim, RequiredSize(f, key("feed_forward_length")));
  ASSIGN_OR_RETURN(c.n_layers, RequiredSize(f, key("block_count")));
  ASSIGN_OR_RETURN(c.n_heads, RequiredSize(f, key("attention.head_count")));
  ASSIGN_OR_RETURN(c.n_kv_heads, OptionalSize(f, key("attention.head_count_kv"), c.n_heads));
  ASSIGN_OR_RETURN(c.max_seq_len, RequiredSize(f, key("context_length")));

  // head_dim: key_length, else the RoPE dimension count, else dim / n_heads.
  ASSIGN_OR_RETURN(std::optional<int64_t> key_length,
                   OptionalInt(f, key("attention.key_length")));
  ASSIGN_OR_RETURN(std::optional<int64_t> rope_dims, OptionalInt(f, key("rope.dimension_count")));
  if (key_length) {
    ASSIGN_OR_RETURN(c.head_dim, PositiveI32(key("attention.key_length"), *key_length));
  } else if (rope_dims) {
    ASSIGN_OR_RETURN(c.head_dim, PositiveI32(key("rope.dimension_count"), *rope_dims));
  } else {
    if (c.dim % c.n_heads != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: embedding_length %d is not a multiple of head_count %d and no key_length is "
          "given",
          c.dim, c.n_heads));
    }
    c.head_dim = c.dim / c.n_heads;
  }
  if (rope_dims && *rope_dims != c.head_dim) {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF: %s.rope.dimension_count %d != head_dim %d (partial RoPE is not supported)", arch,
        *rope_dims, c.head_dim));
  }
  ASSIGN_OR_RETURN(std::optional<int64_t> value_length,
                   OptionalInt(f, key("attention.value_length")));
  if (value_length && *value_length != c.head_dim) {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF: %s.attention.value_length %d != key length %d is not supported", arch, *value_length,
        c.head_dim));
  }
  if (f.Find(key("rope.scaling.type")) != nullptr) {
    ASSIGN_OR_RETURN(std::string scaling, f.GetString(key("rope.scaling.type")));
    if (scaling == "linear") {
      ASSIGN_OR_RETURN(double factor, f.GetFloat(key("rope.scaling.factor")));
      if (!(factor >= 1.0 && factor <= 1e6)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("GGUF: %s.rope.scaling.factor is %g; linear scaling needs [1, 1e6]", arch, factor));
      }
      c.rope_freq_scale = static_cast<float>(1.0 / factor);
    } else if (scaling != "none") {
      return absl::UnimplementedError(absl::StrCat("GGUF: RoPE scaling '", absl::CEscape(scaling.substr(0, 32)),
                                                   "' is not supported (none and linear are)"));
    }
  }
  if (f.FindTensor("rope_freqs.weight") != nullptr) {
    // Llama 3.1: per-pair frequency divisors, head_dim / 2 of them.
    ASSIGN_OR_RETURN(c.rope_freq_factors,
                     LoadTensor(f, "rope_freqs.weight", {static_cast<uint64_t>(c.head_dim / 2)}));
  }
  ASSIGN_OR_RETURN(c.rope_theta, OptionalFloat(f, key("rope.freq_base"), 10000.0f));
  if (arch == "mpt") {
    c.positions = PositionKind::kAlibi;
    c.norm = NormKind::kLayer;
    c.ffn = FfnKind::kGelu;
    ASSIGN_OR_RETURN(c.norm_eps, OptionalFloat(f, key("attention.layer_norm_epsilon"), 1e-5f));
    ASSIGN_OR_RETURN(const double max_bias, f.GetFloat(key("attention.max_alibi_bias")));
    c.max_alibi_bias = static_cast<float>(max_bias);
    ASSIGN_OR_RETURN(float clamp, OptionalFloat(f, key("attention.clamp_kqv"), 0.0f));
    if (clamp != 0.0f) {
      return absl::UnimplementedError(
          absl::StrFormat("GGUF: %s.attention.clamp_kqv is %g; clamping q, k and v is not supported", arch, clamp));
    }
  } else {
    ASSIGN_OR_RETURN(c.norm_eps, OptionalFloat(f, key("attention.layer_norm_rms_epsilon"), 1e-5f));
  }

  // The vocabulary size is the embedding's row count.
  const TensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) return absl::NotFoundError("GGUF: tensor 'token_embd.weight' is missing");
  if (embd->dims.size() != 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: tensor 'token_embd.weight' has ne=%s, expected [dim, vocab]",
        DimsString(embd->dims)));
  }
  // Parse() guarantees every dim fits int64.
  ASSIGN_OR_RETURN(c.vocab_size,
                   PositiveI32("token_embd.weight rows", static_cast<int64_t>(embd->dims[1])));
  ASSIGN_OR_RETURN(std::optional<int64_t> vocab_key, OptionalInt(f, key("vocab_size")));
  if (vocab_key && *vocab_key != c.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: %s.vocab_size is %d but token_embd.weight has %d rows", arch,
                        *vocab_key, c.vocab_size));
  }
  c.tied_classifier = f.FindTensor("output.weight") == nullptr;
  RETURN_IF_ERROR(c.Validate());
  return c;
}

// A LayerNorm bias: empty when the file has none.
absl::StatusOr<std::vector<float>> OptionalNormBias(const File& f, const std::string& name, uint64_t dim) {
  if (f.FindTensor(name) == nullptr) return std::vector<float>();
  return LoadTensor(f, name, {dim});
}

absl::StatusOr<LayerWeights> LoadLayer(const File& f, const std::shared_ptr<const void>& storage,
                                       const ModelConfig& c, int l) {
  const uint64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  auto name = [l](std::string_view part, std::string_view kind = "weight") {
    return absl::StrCat("blk.", l, ".", absl::string_view(part.data(), part.size()), ".",
                        absl::string_view(kind.data(), kind.size()));
  };
  LayerWeights w;
  ASSIGN_OR_RETURN(w.attn_norm, LoadTensor(f, name("attn_norm"), {dim}));
  if (c.arch == "mpt") {
    // Tensors this loader would otherwise ignore, and so compute wrongly without.
    for (const char* part : {"attn_qkv", "attn_output", "ffn_up", "ffn_down"}) {
      if (f.FindTensor(name(part, "bias")) != nullptr) {
        return absl::UnimplementedError(absl::StrFormat("GGUF: mpt tensor '%s' is not supported", name(part, "bias")));
      }
    }
    for (const char* part : {"attn_q_norm", "attn_k_norm"}) {
      if (f.FindTensor(name(part)) != nullptr) {
        return absl::UnimplementedError(absl::StrFormat("GGUF: mpt tensor '%s' (q/k LayerNorm) is not supported", name(part)));
      }
    }
    ASSIGN_OR_RETURN(w.attn_norm_bias, OptionalNormBias(f, name("attn_norm", "bias"), dim));
    ASSIGN_OR_RETURN(const Weight qkv, LoadWeight(f, storage, name("attn_qkv"), dim, q + 2 * kv));
    w.wq = qkv.Rows(0, q);
    w.wk = qkv.Rows(q, kv);
    w.wv = qkv.Rows(q + kv, kv);
    ASSIGN_OR_RETURN(w.wo, LoadWeight(f, storage, name("attn_output"), q, dim));
    ASSIGN_OR_RETURN(w.ffn_norm, LoadTensor(f, name("ffn_norm"), {dim}));
    ASSIGN_OR_RETURN(w.ffn_norm_bias, OptionalNormBias(f, name("ffn_norm", "bias"), dim));
    ASSIGN_OR_RETURN(w.w3, LoadWeight(f, storage, name("ffn_up"), dim, hidden));
    ASSIGN_OR_RETURN(w.w2, LoadWeight(f, storage, name("ffn_down"), hidden, dim));
    return w;
  }
  ASSIGN_OR_RETURN(w.wq, LoadWeight(f, storage, name("attn_q"), dim, q));
  ASSIGN_OR_RETURN(w.wk, LoadWeight(f, storage, name("attn_k"), dim, kv));
  ASSIGN_OR_RETURN(w.wv, LoadWeight(f, storage, name("attn_v"), dim, kv));
  ASSIGN_OR_RETURN(w.wo, LoadWeight(f, storage, name("attn_output"), q, dim));
  ASSIGN_OR_RETURN(w.ffn_norm, LoadTensor(f, name("ffn_norm"), {dim}));
  ASSIGN_OR_RETURN(w.w1, LoadWeight(f, storage, name("ffn_gate"), dim, hidden));
  ASSIGN_OR_RETURN(w.w2, LoadWeight(f, storage, name("ffn_down"), hidden, dim));
  ASSIGN_OR_RETURN(w.w3, LoadWeight(f, storage, name("ffn_up"), dim, hidden));
  if (c.arch == "qwen2") {
    ASSIGN_OR_RETURN(w.bq, LoadTensor(f, name("attn_q", "bias"), {q}));
    ASSIGN_OR_RETURN(w.bk, LoadTensor(f, name("attn_k", "bias"), {kv}));
    ASSIGN_OR_RETURN(w.bv, LoadTensor(f, name("attn_v", "bias"), {kv}));
    w.wq = PermuteNeoxRows(w.wq, c.head_dim);
    w.wk = PermuteNeoxRows(w.wk, c.head_dim);
    w.bq = PermuteNeox(w.bq, c.head_dim);
    w.bk = PermuteNeox(w.bk, c.head_dim);
  }
  return w;
}

// A special-token id: absent or all-ones (llama.cpp's "none") -> -1.
absl::StatusOr<int32_t> SpecialId(const File& f, std::string_view key, int32_t n_vocab) {
  const Value* v = f.Find(key);
  if (v == nullptr) return -1;
  if (const auto* u = std::get_if<uint64_t>(&v->data);
      u && (*u == 0xFFFFFFFFu || *u == std::numeric_limits<uint64_t>::max())) {
    return -1;
  }
  ASSIGN_OR_RETURN(int64_t id, f.GetInt(key));
  if (id < 0) return -1;
  if (id >= n_vocab) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s is %d, outside the vocabulary of %d tokens", key, id, n_vocab));
  }
  return static_cast<int32_t>(id);
}

absl::StatusOr<bool> OptionalBool(const File& f, std::string_view key, bool fallback) {
  if (f.Find(key) == nullptr) return fallback;
  return f.GetBool(key);
}

}  // namespace

absl::StatusOr<Vocab> VocabFromGguf(const File& f) {
  Vocab v;
  ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  if (model == "llama") {
    v.type = VocabType::kSentencePiece;
  } else if (model == "gpt2") {
    v.type = VocabType::kGpt2;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "GGUF: tokenizer.ggml.model '", model, "' is not supported (only 'llama' and 'gpt2')"));
  }
  ASSIGN_OR_RETURN(v.tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  if (v.tokens.empty() || v.tokens.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: tokenizer.ggml.tokens has %d entries", v.tokens.size()));
  }
  const size_t n = v.tokens.size();
  if (f.Find("tokenizer.ggml.scores") != nullptr) {
    ASSIGN_OR_RETURN(v.scores, f.GetFloatArray("tokenizer.ggml.scores"));
    if (v.scores.size() != n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: tokenizer.ggml.scores has %d entries for %d tokens", v.scores.size(), n));
    }
  }
  if (f.Find("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: tokenizer.ggml.token_type has %d entries for %d tokens", types.size(), n));
    }
    v.token_types.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 0 || types[i] > static_cast<int64_t>(TokenType::kByte)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "GGUF: tokenizer.ggml.token_type[%d] is %d, not a known token type", i, types[i]));
      }
      v.token_types.push_back(static_cast<TokenType>(types[i]));
    }
  }
  if (f.Find("tokenizer.ggml.merges") != nullptr) {
    ASSIGN_OR_RETURN(v.merges, f.GetStringArray("tokenizer.ggml.merges"));
  }
  if (v.type == VocabType::kGpt2 && v.merges.empty()) {
    return absl::InvalidArgumentError("GGUF: a gpt2 tokenizer needs tokenizer.ggml.merges");
  }
  const int32_t n_vocab = static_cast<int32_t>(n);
  ASSIGN_OR_RETURN(v.bos_id, SpecialId(f, "tokenizer.ggml.bos_token_id", n_vocab));
  ASSIGN_OR_RETURN(v.eos_id, SpecialId(f, "tokenizer.ggml.eos_token_id", n_vocab));
  ASSIGN_OR_RETURN(v.unk_id, SpecialId(f, "tokenizer.ggml.unknown_token_id", n_vocab));
  ASSIGN_OR_RETURN(v.pad_id, SpecialId(f, "tokenizer.ggml.padding_token_id", n_vocab));
  // Defaults follow llama.cpp: SentencePiece adds BOS and a dummy space prefix,
  // GPT-2 byte-level BPE does neither.
  const bool spm = v.type == VocabType::kSentencePiece;
  ASSIGN_OR_RETURN(v.add_bos, OptionalBool(f, "tokenizer.ggml.add_bos_token", spm));
  ASSIGN_OR_RETURN(v.add_space_prefix, OptionalBool(f, "tokenizer.ggml.add_space_prefix", spm));
  RETURN_IF_ERROR(ReadGgufVocabExtras(f, v));  // pre-tokenizer name, EOT/EOM ids
  return v;
}

absl::StatusOr<Model> ModelFromGguf(const File& f, const std::shared_ptr<const void>& storage) {
  ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != "llama" && arch != "qwen2" && arch != "mpt") {
    return absl::UnimplementedError(absl::StrCat("GGUF: architecture '", absl::CEscape(arch.substr(0, 64)),
                                                 "' is not supported (llama, qwen2 and mpt are)"));
  }
  if (f.FindTensor("pos_embd.weight") != nullptr) {
    return absl::UnimplementedError("GGUF: learned position embeddings (pos_embd.weight) are not supported");
  }
  Model m;
  ASSIGN_OR_RETURN(m.config, ReadConfig(f, arch));
  const ModelConfig& c = m.config;
  // Refuse before allocating per-layer storage when the tensors cannot exist.
  const uint64_t per_layer = arch == "qwen2" ? 12 : arch == "mpt" ? 6 : 9;
  const uint64_t needed = per_layer * static_cast<uint64_t>(c.n_layers) + 2 + (c.tied_classifier ? 0 : 1);
  if (f.tensors.size() < needed) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %d layers need %d tensors but the file has %d", c.n_layers, needed,
        f.tensors.size()));
  }
  const uint64_t dim = c.dim, vocab = c.vocab_size;
  ASSIGN_OR_RETURN(m.weights.token_embedding, LoadWeight(f, storage, "token_embd.weight", dim, vocab));
  m.weights.layers.reserve(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    ASSIGN_OR_RETURN(LayerWeights w, LoadLayer(f, storage, c, l));
    m.weights.layers.push_back(std::move(w));
  }
  ASSIGN_OR_RETURN(m.weights.final_norm, LoadTensor(f, "output_norm.weight", {dim}));
  if (c.norm == NormKind::kLayer) {
    ASSIGN_OR_RETURN(m.weights.final_norm_bias, OptionalNormBias(f, "output_norm.bias", dim));
  }
  if (!c.tied_classifier) {
    ASSIGN_OR_RETURN(m.weights.classifier, LoadWeight(f, storage, "output.weight", dim, vocab));
  }
  if (f.Find("tokenizer.ggml.model") != nullptr) {
    ASSIGN_OR_RETURN(Vocab v, VocabFromGguf(f));
    if (v.size() != c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: the vocabulary has %d tokens but token_embd.weight has %d rows", v.size(),
          c.vocab_size));
    }
    m.vocab = std::move(v);
  }
  if (f.Find("tokenizer.chat_template") != nullptr) {
    ASSIGN_OR_RETURN(m.chat_template, f.GetString("tokenizer.chat_template"));
  }
  RETURN_IF_ERROR(m.ValidateWeights());
  return m;
}

}  // namespace sinkserve::gguf
