// sinkserve-make-model: writes a random-weight GGUF (arch llama) of any shape,
// for tests and benchmarks against llama.cpp. Names, metadata keys and weight
// scales follow ../shared/tools/make_model.py (the script that made the
// fixtures in ../shared/models/synthetic), so llama.cpp loads the file:
//   token_embd ~ N(0, 1) (tied: N(0, (4/sqrt(dim))^2), since it is then the
//   classifier too); q, k, v, output, gate, up ~ N(0, 1/dim); down ~
//   N(0, 1/hidden); norms ~ 1 + N(0, 0.01); output ~ N(0, 16/dim).
// With --type f16 the matrices are F16 and the norm vectors stay F32, as
// llama.cpp's converters write them.
//
// The vocabulary is copied from --vocab-from (a GGUF: every tokenizer.* key
// byte for byte; a llama2.c tokenizer.bin or SentencePiece .model: through
// LoadVocab), or made up with --vocab N: <unk> <s> </s>, the 256 byte pieces
// when there is room, then "▁tok<i>" pieces.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "engine/model/gguf.h"
#include "engine/model/gguf_writer.h"
#include "engine/model/model_loader.h"
#include "engine/status_macros.h"
#include "common/runtime.h"

namespace sinkserve {
namespace {

constexpr char kTool[] = "sinkserve-make-model";
// The writer holds the whole file in memory; stay well inside a 24 GiB box.
constexpr uint64_t kMaxFileBytes = uint64_t{8} << 30;

struct Shape {
  int64_t dim = 0;
  int64_t hidden = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t context = 0;
  int64_t vocab = 0;  // set by the vocabulary
  bool tied = false;
  gguf::TensorType type = gguf::TensorType::kF32;

  int64_t head_dim() const { return dim / heads; }
  int64_t kv_dim() const { return kv_heads * head_dim(); }
  uint64_t Params() const {
    const uint64_t d = dim, h = hidden, kv = kv_dim();
    const uint64_t layer = 2 * d + 2 * d * d + 2 * d * kv + 3 * d * h;
    return uint64_t(vocab) * d * (tied ? 1 : 2) + d + uint64_t(layers) * layer;
  }
};

absl::StatusOr<Shape> ParseShape(const Flags& flags) {
  Shape s;
  ASSIGN_OR_RETURN(s.dim, flags.IntInRange("dim", 256, 2, 65536));
  ASSIGN_OR_RETURN(s.hidden, flags.IntInRange("hidden", 4 * s.dim, 1, 1 << 20));
  ASSIGN_OR_RETURN(s.layers, flags.IntInRange("layers", 2, 1, 4096));
  ASSIGN_OR_RETURN(s.heads, flags.IntInRange("heads", 8, 1, 4096));
  ASSIGN_OR_RETURN(s.kv_heads, flags.IntInRange("kv-heads", s.heads, 1, s.heads));
  ASSIGN_OR_RETURN(s.context, flags.IntInRange("context", 2048, 1, 1 << 24));
  if (s.dim % s.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--dim %d is not a multiple of --heads %d", s.dim, s.heads));
  }
  if (s.heads % s.kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--heads %d is not a multiple of --kv-heads %d", s.heads, s.kv_heads));
  }
  if (s.head_dim() % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("head_dim = dim / heads = %d must be even (RoPE rotates pairs)", s.head_dim()));
  }
  const std::string type = flags.String("type", "f32");
  if (type == "f32") {
    s.type = gguf::TensorType::kF32;
  } else if (type == "f16") {
    s.type = gguf::TensorType::kF16;
  } else {
    return absl::InvalidArgumentError(absl::StrFormat("--type must be f32 or f16, got '%s'", type));
  }
  s.tied = flags.Switch("tied");
  return s;
}

// tokenizer.* from a parsed Vocab, in the keys llama.cpp reads.
void AddVocab(const Vocab& v, gguf::Writer* w) {
  w->AddString("tokenizer.ggml.model", v.type == VocabType::kGpt2 ? "gpt2" : "llama");
  w->AddStringArray("tokenizer.ggml.tokens", v.tokens);
  if (!v.scores.empty()) w->AddFloat32Array("tokenizer.ggml.scores", v.scores);
  if (!v.token_types.empty()) {
    std::vector<int32_t> types(v.token_types.size());
    for (size_t i = 0; i < types.size(); ++i) types[i] = static_cast<int32_t>(v.token_types[i]);
    w->AddInt32Array("tokenizer.ggml.token_type", types);
  }
  if (!v.merges.empty()) w->AddStringArray("tokenizer.ggml.merges", v.merges);
  for (auto [key, id] : {std::pair<const char*, int32_t>{"tokenizer.ggml.bos_token_id", v.bos_id},
                         {"tokenizer.ggml.eos_token_id", v.eos_id},
                         {"tokenizer.ggml.unknown_token_id", v.unk_id},
                         {"tokenizer.ggml.padding_token_id", v.pad_id}}) {
    if (id >= 0) w->AddUint32(key, static_cast<uint32_t>(id));
  }
  w->AddBool("tokenizer.ggml.add_bos_token", v.add_bos);
  w->AddBool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
}

// A made-up SentencePiece vocabulary of n >= 3 pieces.
Vocab SyntheticVocab(int64_t n) {
  Vocab v;
  v.type = VocabType::kSentencePiece;
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  const bool bytes = n >= 3 + 256;
  for (int64_t i = 3; i < n; ++i) {
    if (bytes && i < 3 + 256) {
      v.tokens.push_back(absl::StrFormat("<0x%02X>", i - 3));
      v.token_types.push_back(TokenType::kByte);
    } else {
      v.tokens.push_back(absl::StrCat("\xe2\x96\x81tok", i));  // U+2581 + "tok<i>"
      v.token_types.push_back(TokenType::kNormal);
    }
  }
  v.scores.resize(n);
  for (int64_t i = 0; i < n; ++i) v.scores[i] = -static_cast<float>(i);
  return v;
}

// Writes the tokenizer metadata; returns the vocabulary size.
absl::StatusOr<int64_t> AddTokenizer(const Flags& flags, gguf::Writer* w) {
  if (flags.Has("vocab-from") == flags.Has("vocab")) {
    return absl::InvalidArgumentError("give exactly one of --vocab-from FILE or --vocab N");
  }
  if (flags.Has("vocab")) {
    ASSIGN_OR_RETURN(int64_t n, flags.IntInRange("vocab", 0, 3, 1 << 22));
    AddVocab(SyntheticVocab(n), w);
    return n;
  }
  const std::string path = flags.String("vocab-from");
  ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  if (bytes.size() < 4 || bytes.compare(0, 4, "GGUF") != 0) {
    ASSIGN_OR_RETURN(Vocab v, LoadVocab(path));
    AddVocab(v, w);
    return v.size();
  }
  absl::StatusOr<gguf::File> file = gguf::Parse(bytes);
  if (!file.ok()) return absl::Status(file.status().code(), absl::StrCat(path, ": ", file.status().message()));
  absl::StatusOr<Vocab> v = gguf::VocabFromGguf(*file);  // validates what is copied
  if (!v.ok()) return absl::Status(v.status().code(), absl::StrCat(path, ": ", v.status().message()));
  for (const auto& [key, value] : file->metadata) {
    if (absl::StartsWith(key, "tokenizer.")) RETURN_IF_ERROR(w->CopyValue(*file, key));
  }
  return v->size();
}

// Random weights in make_model.py's order and scales.
class WeightMaker {
 public:
  WeightMaker(const Shape& s, uint64_t seed, gguf::Writer* w) : s_(s), rng_(seed), w_(w) {}

  void Matrix(const std::string& name, int64_t rows, int64_t cols, float scale) {
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (float& x : v) x = scale * normal_(rng_);
    w_->AddTensor(name, {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)}, s_.type, v);
  }

  void Norm(const std::string& name) {
    std::vector<float> v(static_cast<size_t>(s_.dim));
    for (float& x : v) x = 1.0f + 0.1f * normal_(rng_);
    w_->AddTensor(name, {static_cast<uint64_t>(s_.dim)}, gguf::TensorType::kF32, v);
  }

  void All() {
    const int64_t d = s_.dim, q = s_.heads * s_.head_dim(), kv = s_.kv_dim();
    const float inv_d = 1.0f / std::sqrt(static_cast<float>(d));
    const float inv_h = 1.0f / std::sqrt(static_cast<float>(s_.hidden));
    Matrix("token_embd.weight", s_.vocab, d, s_.tied ? 4.0f * inv_d : 1.0f);
    for (int64_t l = 0; l < s_.layers; ++l) {
      const std::string p = absl::StrCat("blk.", l, ".");
      Norm(p + "attn_norm.weight");
      Matrix(p + "attn_q.weight", q, d, inv_d);
      Matrix(p + "attn_k.weight", kv, d, inv_d);
      Matrix(p + "attn_v.weight", kv, d, inv_d);
      Matrix(p + "attn_output.weight", d, q, inv_d);
      Norm(p + "ffn_norm.weight");
      Matrix(p + "ffn_gate.weight", s_.hidden, d, inv_d);
      Matrix(p + "ffn_up.weight", s_.hidden, d, inv_d);
      Matrix(p + "ffn_down.weight", d, s_.hidden, inv_h);
    }
    Norm("output_norm.weight");
    if (!s_.tied) Matrix("output.weight", s_.vocab, d, 4.0f * inv_d);
  }

 private:
  const Shape& s_;
  std::mt19937_64 rng_;
  std::normal_distribution<float> normal_{0.0f, 1.0f};
  gguf::Writer* w_;
};

absl::Status Run(int argc, char** argv) {
  Flags flags({"out", "dim", "hidden", "layers", "heads", "kv-heads", "vocab-from", "vocab", "context",
               "seed", "type", "name"},
              {"tied"});
  RETURN_IF_ERROR(flags.Parse(argc, argv));
  ASSIGN_OR_RETURN(std::string out, flags.Required("out"));
  ASSIGN_OR_RETURN(Shape shape, ParseShape(flags));
  ASSIGN_OR_RETURN(int64_t seed, flags.IntInRange("seed", 0, 0, INT64_MAX));

  gguf::Writer w;
  w.AddString("general.architecture", "llama");
  w.AddString("general.name", flags.String("name", "sinkserve-random-llama"));
  ASSIGN_OR_RETURN(shape.vocab, AddTokenizer(flags, &w));
  const uint64_t bytes_per = shape.type == gguf::TensorType::kF32 ? 4 : 2;
  if (shape.Params() > kMaxFileBytes / bytes_per) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d parameters would take %.1f GiB; the limit is %d GiB", shape.Params(),
        static_cast<double>(shape.Params() * bytes_per) / (1 << 30), kMaxFileBytes >> 30));
  }
  w.AddUint32("llama.context_length", static_cast<uint32_t>(shape.context));
  w.AddUint32("llama.embedding_length", static_cast<uint32_t>(shape.dim));
  w.AddUint32("llama.block_count", static_cast<uint32_t>(shape.layers));
  w.AddUint32("llama.feed_forward_length", static_cast<uint32_t>(shape.hidden));
  w.AddUint32("llama.rope.dimension_count", static_cast<uint32_t>(shape.head_dim()));
  w.AddUint32("llama.attention.head_count", static_cast<uint32_t>(shape.heads));
  w.AddUint32("llama.attention.head_count_kv", static_cast<uint32_t>(shape.kv_heads));
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddFloat32("llama.rope.freq_base", 10000.0f);
  // llama_ftype: 0 = all F32, 1 = mostly F16.
  w.AddUint32("general.file_type", shape.type == gguf::TensorType::kF32 ? 0 : 1);
  WeightMaker(shape, static_cast<uint64_t>(seed), &w).All();
  RETURN_IF_ERROR(w.WriteFile(out));
  absl::PrintF("wrote %s: llama dim=%d hidden=%d layers=%d heads=%d kv_heads=%d vocab=%d%s, %s, %d parameters, %d bytes\n",
               out, shape.dim, shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.vocab,
               shape.tied ? " tied" : "", shape.type == gguf::TensorType::kF32 ? "F32" : "F16", shape.Params(),
               w.FileSize());
  return absl::OkStatus();
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::ToolMain(sinkserve::kTool, sinkserve::Run, argc, argv); }
