// llama2.c checkpoint parser. See llama2c.h for the layout.
#include "engine/model/llama2c.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve {
namespace {

constexpr uint64_t kHeaderBytes = 7 * sizeof(int32_t);

// Hands out consecutive fp32 arrays from the weight section. The caller has
// already checked that the file holds exactly the floats it will ask for;
// Take() still refuses to run past the end.
class FloatCursor {
 public:
  explicit FloatCursor(std::string_view bytes) : bytes_(bytes), pos_(kHeaderBytes) {}

  absl::Status Take(uint64_t n, const char* what, std::vector<float>* out) {
    if (n > (bytes_.size() - pos_) / sizeof(float)) {
      return absl::DataLossError(absl::StrFormat(
          "llama2.c: %s needs %d floats at offset %d, file has %d bytes", what, n, pos_,
          bytes_.size()));
    }
    out->resize(n);
    if (n > 0) std::memcpy(out->data(), bytes_.data() + pos_, n * sizeof(float));
    pos_ += n * sizeof(float);
    return absl::OkStatus();
  }

  // A (rows, cols) fp32 matrix.
  absl::Status TakeMatrix(uint64_t rows, uint64_t cols, const char* what, Weight* out) {
    std::vector<float> values;
    RETURN_IF_ERROR(Take(rows * cols, what, &values));
    *out = Weight::FromF32(std::move(values), static_cast<int64_t>(rows), static_cast<int64_t>(cols));
    return absl::OkStatus();
  }

  // One (n_layers, per_layer) group, split into the layers' `field`.
  absl::Status TakeLayers(std::vector<LayerWeights>& layers, std::vector<float> LayerWeights::*field,
                          uint64_t per_layer, const char* what) {
    for (LayerWeights& l : layers) RETURN_IF_ERROR(Take(per_layer, what, &(l.*field)));
    return absl::OkStatus();
  }
  absl::Status TakeLayers(std::vector<LayerWeights>& layers, Weight LayerWeights::*field, uint64_t rows,
                          uint64_t cols, const char* what) {
    for (LayerWeights& l : layers) RETURN_IF_ERROR(TakeMatrix(rows, cols, what, &(l.*field)));
    return absl::OkStatus();
  }

  void Skip(uint64_t n_floats) { pos_ += n_floats * sizeof(float); }
  uint64_t pos() const { return pos_; }

 private:
  std::string_view bytes_;
  uint64_t pos_;
};

// Total float count a header implies, overflow-checked; false on overflow.
bool ExpectedFloats(const ModelConfig& c, bool shared, uint64_t* out) {
  const uint64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers, vocab = c.vocab_size;
  const uint64_t q = c.q_dim(), kv = c.kv_dim(), seq = c.max_seq_len, hs = c.head_dim;
  // Validate() has bounded every weight product by 2^40, so only the RoPE
  // tables (seq_len * head_size) can still overflow.
  uint64_t rope;
  if (__builtin_mul_overflow(seq, hs, &rope)) return false;
  const uint64_t per_layer = dim + q * dim + 2 * kv * dim + dim * q + dim + 3 * hidden * dim;
  uint64_t total = vocab * dim + layers * per_layer + dim + (shared ? 0 : vocab * dim);
  // Two tables of seq_len * head_size / 2 (run.c's integer arithmetic).
  if (__builtin_add_overflow(total, 2 * (rope / 2), &total)) return false;
  return total <= std::numeric_limits<uint64_t>::max() / sizeof(float) ? (*out = total, true)
                                                                       : false;
}

}  // namespace

absl::StatusOr<Model> ParseLlama2cCheckpoint(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes) {
    return absl::DataLossError(absl::StrFormat(
        "llama2.c: file is %d bytes, shorter than the 28-byte header", bytes.size()));
  }
  int32_t h[7];
  std::memcpy(h, bytes.data(), sizeof(h));
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                          "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    // vocab_size may be negative (unshared classifier), but not INT32_MIN or 0.
    const bool bad = i == 5 ? (h[i] == 0 || h[i] == std::numeric_limits<int32_t>::min())
                            : h[i] <= 0;
    if (bad) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "llama2.c: header %s (offset %d) is %d", names[i], 4 * i, h[i]));
    }
  }
  Model m;
  ModelConfig& c = m.config;
  c.arch = "llama";
  c.name = "llama2.c";
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  const bool shared = h[5] > 0;
  c.vocab_size = shared ? h[5] : -h[5];
  c.max_seq_len = h[6];
  c.rope_theta = 10000.0f;
  c.norm_eps = 1e-5f;
  c.tied_classifier = shared;
  if (c.dim % c.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "llama2.c: dim %d is not a multiple of n_heads %d", c.dim, c.n_heads));
  }
  c.head_dim = c.dim / c.n_heads;
  RETURN_IF_ERROR(c.Validate());

  uint64_t floats;
  if (!ExpectedFloats(c, shared, &floats)) {
    return absl::InvalidArgumentError("llama2.c: header implies a file size that overflows");
  }
  const uint64_t expected = kHeaderBytes + floats * sizeof(float);
  if (bytes.size() != expected) {
    return absl::DataLossError(absl::StrFormat(
        "llama2.c: header (dim %d, hidden %d, layers %d, heads %d, kv_heads %d, vocab %d, seq %d) "
        "implies %d bytes, file has %d",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], expected, bytes.size()));
  }

  const uint64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  const uint64_t vocab = c.vocab_size;
  ModelWeights& w = m.weights;
  FloatCursor cur(bytes);
  RETURN_IF_ERROR(cur.TakeMatrix(vocab, dim, "token_embedding", &w.token_embedding));
  w.layers.resize(c.n_layers);  // bounded: the file holds every layer's floats
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::attn_norm, dim, "rms_att"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::wq, q, dim, "wq"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::wk, kv, dim, "wk"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::wv, kv, dim, "wv"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::wo, dim, q, "wo"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::ffn_norm, dim, "rms_ffn"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::w1, hidden, dim, "w1"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::w2, dim, hidden, "w2"));
  RETURN_IF_ERROR(cur.TakeLayers(w.layers, &LayerWeights::w3, hidden, dim, "w3"));
  RETURN_IF_ERROR(cur.Take(dim, "rms_final", &w.final_norm));
  const uint64_t rope_half = static_cast<uint64_t>(c.max_seq_len) * c.head_dim / 2;
  cur.Skip(2 * rope_half);  // freq_cis_real, freq_cis_imag: we compute RoPE ourselves
  if (!shared) RETURN_IF_ERROR(cur.TakeMatrix(vocab, dim, "wcls", &w.classifier));
  if (cur.pos() != bytes.size()) {
    return absl::InternalError("llama2.c: weight walk did not end at the file end");
  }
  RETURN_IF_ERROR(m.ValidateWeights());
  return m;
}

}  // namespace sinkserve
