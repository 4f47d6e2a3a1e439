// ModelConfig::Validate and Model::ValidateWeights: the last line of defence
// between a (possibly hostile) model file and code that indexes weights.
#include "engine/model/model.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace sinkserve {
namespace {

// A model larger than this many weights is refused as absurd (4 TiB of fp32).
constexpr int64_t kMaxElements = int64_t{1} << 40;

// a * b, false on int64 overflow or when the product exceeds kMaxElements.
bool MulCapped(int64_t a, int64_t b, int64_t* out) {
  return !__builtin_mul_overflow(a, b, out) && *out <= kMaxElements;
}

absl::Status CheckSize(const char* what, const std::vector<float>& v, int64_t expected) {
  if (static_cast<int64_t>(v.size()) == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("weights: %s has %d floats, expected %d", what, v.size(), expected));
}

absl::Status CheckShape(const std::string& what, const Weight& w, int64_t rows, int64_t cols) {
  if (w.empty() || w.rows != rows || w.cols != cols) {
    return absl::InvalidArgumentError(absl::StrFormat("weights: %s is (%d, %d), expected (%d, %d)", what,
                                                      w.rows, w.cols, rows, cols));
  }
  if (!IsWeightType(w.type)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("weights: %s has type %s, which no backend runs", what, GgmlTypeName(static_cast<uint32_t>(w.type))));
  }
  const GgmlTypeTraits* t = FindGgmlType(static_cast<uint32_t>(w.type));
  if (cols % t->block != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "weights: %s has rows of %d values, not a multiple of the %s block of %d", what, cols, t->name, t->block));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  const struct {
    const char* name;
    int32_t value;
  } sizes[] = {{"dim", dim},           {"hidden_dim", hidden_dim}, {"n_layers", n_layers},
               {"n_heads", n_heads},   {"n_kv_heads", n_kv_heads}, {"head_dim", head_dim},
               {"vocab_size", vocab_size}, {"max_seq_len", max_seq_len}};
  for (const auto& s : sizes) {
    if (s.value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("model config: %s is %d, must be positive", s.name, s.value));
    }
  }
  if (n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model config: n_heads %d is not a multiple of n_kv_heads %d", n_heads, n_kv_heads));
  }
  if (!alibi() && head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model config: head_dim %d is odd; RoPE rotates pairs", head_dim));
  }
  if (alibi() && !(std::isfinite(max_alibi_bias) && max_alibi_bias > 0.0f && max_alibi_bias <= 1024.0f)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model config: max_alibi_bias %g must be in (0, 1024]", max_alibi_bias));
  }
  // q_dim() and kv_dim() are int32; every matrix and the whole model must stay
  // well inside int64 and below kMaxElements.
  int64_t q, per_layer = 0, total = 0, m;
  if (!MulCapped(n_heads, head_dim, &q) || q > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model config: n_heads * head_dim = %d * %d does not fit int32", n_heads, head_dim));
  }
  const int64_t kv = static_cast<int64_t>(n_kv_heads) * head_dim;  // <= q
  const int64_t matrices[] = {q, kv, kv, q, hidden_dim, hidden_dim, hidden_dim};
  for (int64_t rows : matrices) {
    if (!MulCapped(rows, dim, &m) || __builtin_add_overflow(per_layer, m, &per_layer)) {
      return absl::InvalidArgumentError("model config: a layer's weight count overflows");
    }
  }
  if (!MulCapped(per_layer + 2 * int64_t{dim}, n_layers, &total) ||
      !MulCapped(vocab_size, dim, &m) || __builtin_add_overflow(total, 2 * m, &total) ||
      total > kMaxElements) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model config: dim %d, hidden_dim %d, n_layers %d, vocab_size %d imply more than 2^40 "
        "weights",
        dim, hidden_dim, n_layers, vocab_size));
  }
  if (!std::isfinite(rope_theta) || rope_theta <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model config: rope_theta %g must be finite and positive", rope_theta));
  }
  if (!std::isfinite(rope_freq_scale) || rope_freq_scale <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model config: rope_freq_scale %g must be finite and positive", rope_freq_scale));
  }
  if (!rope_freq_factors.empty()) {
    if (static_cast<int64_t>(rope_freq_factors.size()) != head_dim / 2) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "model config: %d RoPE frequency factors for head_dim %d (want head_dim / 2)", rope_freq_factors.size(),
          head_dim));
    }
    for (float f : rope_freq_factors) {
      if (!std::isfinite(f) || f <= 0.0f) {
        return absl::InvalidArgumentError(
            absl::StrFormat("model config: a RoPE frequency factor is %g; each must be finite and positive", f));
      }
    }
  }
  if (!std::isfinite(norm_eps) || norm_eps < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model config: norm_eps %g must be finite and >= 0", norm_eps));
  }
  return absl::OkStatus();
}

std::vector<float> ModelConfig::AlibiSlopes() const {
  int32_t pow2 = 1;
  while (pow2 * 2 <= n_heads) pow2 *= 2;
  const double m0 = std::exp2(-static_cast<double>(max_alibi_bias) / pow2);
  const double m1 = std::exp2(-static_cast<double>(max_alibi_bias) / 2.0 / pow2);
  std::vector<float> slopes(static_cast<size_t>(n_heads));
  for (int32_t h = 0; h < n_heads; ++h) {
    slopes[h] = static_cast<float>(h < pow2 ? std::pow(m0, h + 1) : std::pow(m1, 2 * (h - pow2) + 1));
  }
  return slopes;
}

absl::Status Model::ValidateWeights() const {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const ModelConfig& c = config;
  const int64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  const int64_t vocab = c.vocab_size;
  if (absl::Status s = CheckShape("token_embedding", weights.token_embedding, vocab, dim); !s.ok()) return s;
  if (static_cast<int64_t>(weights.layers.size()) != c.n_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "weights: %d layers, config says %d", weights.layers.size(), c.n_layers));
  }
  const bool biased = weights.has_attention_bias();
  const bool gated = c.ffn == FfnKind::kSwiGlu;
  // A norm's shift is optional (LayerNorm only), but all or none.
  const bool shifted = !weights.final_norm_bias.empty();
  if (shifted && c.norm != NormKind::kLayer) {
    return absl::InvalidArgumentError("weights: norm biases need LayerNorm");
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = weights.layers[l];
    const std::string layer = absl::StrFormat("layer %d ", l);
    const struct {
      const char* name;
      const Weight& w;
      int64_t rows, cols;
    } matrices[] = {{"wq", w.wq, q, dim},      {"wk", w.wk, kv, dim},         {"wv", w.wv, kv, dim},
                    {"wo", w.wo, dim, q},      {"w2", w.w2, dim, hidden},     {"w3", w.w3, hidden, dim}};
    for (const auto& m : matrices) {
      if (absl::Status s = CheckShape(layer + m.name, m.w, m.rows, m.cols); !s.ok()) return s;
    }
    if (gated) {
      if (absl::Status s = CheckShape(layer + "w1", w.w1, hidden, dim); !s.ok()) return s;
    } else if (!w.w1.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("weights: %sw1 (a gate) is present in a GELU MLP", layer));
    }
    const struct {
      const char* name;
      const std::vector<float>& v;
      int64_t n;
    } vectors[] = {{"attn_norm", w.attn_norm, dim}, {"ffn_norm", w.ffn_norm, dim},
                   {"bq", w.bq, biased ? q : 0},    {"bk", w.bk, biased ? kv : 0},
                   {"bv", w.bv, biased ? kv : 0},   {"attn_norm_bias", w.attn_norm_bias, shifted ? dim : 0},
                   {"ffn_norm_bias", w.ffn_norm_bias, shifted ? dim : 0}};
    for (const auto& v : vectors) {
      if (absl::Status s = CheckSize((layer + v.name).c_str(), v.v, v.n); !s.ok()) return s;
    }
  }
  if (absl::Status s = CheckSize("final_norm", weights.final_norm, dim); !s.ok()) return s;
  if (c.tied_classifier) {
    if (!weights.classifier.empty()) {
      return absl::InvalidArgumentError(
          "weights: tied_classifier is set but a separate classifier is present");
    }
  } else if (absl::Status s = CheckShape("classifier", weights.classifier, vocab, dim); !s.ok()) {
    return s;
  }
  return absl::OkStatus();
}

}  // namespace sinkserve
