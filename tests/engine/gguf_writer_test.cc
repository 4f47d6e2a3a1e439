// gguf::Writer: files it writes parse back (gguf::Parse, LoadModel) with the
// same metadata, shapes and values; its mistakes are statuses. And
// sinkserve-make-model end to end: its models load, are reproducible from the
// seed, and bad flags end in one line and a non-zero exit.
#include "engine/model/gguf_writer.h"

#include <gtest/gtest.h>


#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/gguf.h"
#include "engine/model/model_loader.h"
#include "tests/run_tool.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

namespace fs = std::filesystem;
using gguf::TensorType;

// IEEE binary16 bits -> float, written independently of the code under test.
float HalfBitsToFloat(uint16_t h) {
  const int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  const float sign = (h & 0x8000) ? -1.0f : 1.0f;
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -24);
  if (exp == 31) return mant ? std::numeric_limits<float>::quiet_NaN() : sign * INFINITY;
  return sign * std::ldexp(static_cast<float>(mant + 1024), exp - 25);
}

TEST(GgufWriterTest, FloatToHalfRoundsToNearestEven) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);           // largest finite
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);           // below the tie
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);           // tie rounds to even: inf
  EXPECT_EQ(FloatToHalf(1e9f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-INFINITY), 0xfc00);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units: tie to even 2
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie to even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie to even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
  // Every finite half converts back to itself.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(FloatToHalf(HalfBitsToFloat(static_cast<uint16_t>(h))), h) << h;
  }
  // Random floats land on a nearest half.
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int i = 0; i < 100000; ++i) {
    const float x = normal(rng);
    const float y = HalfBitsToFloat(FloatToHalf(x));
    ASSERT_LE(std::abs(x - y), std::ldexp(std::abs(x), -11) + std::ldexp(1.0f, -25)) << x;
  }
}

// A small Llama model's tensors, in ggml order, with recognisable values.
struct TinyModel {
  static constexpr uint64_t kDim = 16, kHidden = 24, kLayers = 2, kHeads = 4, kKvHeads = 2, kVocab = 10;
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    std::vector<float> values;
  };
  std::vector<Tensor> tensors;

  explicit TinyModel(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    auto add = [&](std::string name, std::vector<uint64_t> dims) {
      uint64_t n = 1;
      for (uint64_t d : dims) n *= d;
      std::vector<float> v(n);
      for (float& x : v) x = normal(rng);
      tensors.push_back({std::move(name), std::move(dims), std::move(v)});
    };
    const uint64_t kv = kKvHeads * (kDim / kHeads);
    add("token_embd.weight", {kDim, kVocab});
    for (uint64_t l = 0; l < kLayers; ++l) {
      const std::string p = absl::StrCat("blk.", l, ".");
      add(p + "attn_norm.weight", {kDim});
      add(p + "attn_q.weight", {kDim, kDim});
      add(p + "attn_k.weight", {kDim, kv});
      add(p + "attn_v.weight", {kDim, kv});
      add(p + "attn_output.weight", {kDim, kDim});
      add(p + "ffn_norm.weight", {kDim});
      add(p + "ffn_gate.weight", {kDim, kHidden});
      add(p + "ffn_up.weight", {kDim, kHidden});
      add(p + "ffn_down.weight", {kHidden, kDim});
    }
    add("output_norm.weight", {kDim});
    add("output.weight", {kDim, kVocab});
  }
};

const std::vector<std::string> kTokens = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a", "b", "c", "d", "e", "f", "g"};

// Metadata of every kind the writer has, plus the llama keys LoadModel needs.
void AddTinyMetadata(gguf::Writer* w) {
  w->AddString("general.architecture", "llama");
  w->AddString("general.name", "tiny");
  w->AddUint32("llama.context_length", 128);
  w->AddUint32("llama.embedding_length", TinyModel::kDim);
  w->AddUint32("llama.block_count", TinyModel::kLayers);
  w->AddUint32("llama.feed_forward_length", TinyModel::kHidden);
  w->AddUint32("llama.attention.head_count", TinyModel::kHeads);
  w->AddUint32("llama.attention.head_count_kv", TinyModel::kKvHeads);
  w->AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  w->AddFloat32("llama.rope.freq_base", 500000.0f);
  w->AddString("tokenizer.ggml.model", "llama");
  w->AddStringArray("tokenizer.ggml.tokens", kTokens);
  std::vector<float> scores(kTokens.size());
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = -0.5f * i;
  w->AddFloat32Array("tokenizer.ggml.scores", scores);
  std::vector<int32_t> types(kTokens.size(), 1);
  types[0] = 2;
  types[1] = types[2] = 3;
  w->AddInt32Array("tokenizer.ggml.token_type", types);
  w->AddUint32("tokenizer.ggml.bos_token_id", 1);
  w->AddUint32("tokenizer.ggml.eos_token_id", 2);
  w->AddBool("tokenizer.ggml.add_bos_token", true);
  w->AddInt32("test.int32", -7);
  w->AddUint64("test.uint64", uint64_t{1} << 40);
  w->AddBool("test.false", false);
  w->AddString("test.empty", "");
}

void CheckRoundTrip(TensorType type) {
  const TinyModel model(11);
  gguf::Writer w;
  AddTinyMetadata(&w);
  for (const auto& t : model.tensors) w.AddTensor(t.name, t.dims, type, t.values);
  ASSERT_TRUE(w.status().ok()) << w.status();
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(bytes->size(), w.FileSize());
  EXPECT_EQ(bytes->size() % gguf::Writer::kAlignment, 0u);

  absl::StatusOr<gguf::File> f = gguf::Parse(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version, 3u);
  EXPECT_EQ(f->alignment, 32u);
  EXPECT_EQ(f->data_offset % 32, 0u);
  EXPECT_EQ(f->metadata.front().first, "general.alignment");
  EXPECT_EQ(*f->GetInt("general.alignment"), 32);
  EXPECT_EQ(*f->GetString("general.architecture"), "llama");
  EXPECT_EQ(*f->GetString("test.empty"), "");
  EXPECT_EQ(*f->GetInt("llama.embedding_length"), 16);
  EXPECT_EQ(f->Find("llama.embedding_length")->type, gguf::ValueType::kUint32);
  EXPECT_EQ(*f->GetInt("test.int32"), -7);
  EXPECT_EQ(f->Find("test.int32")->type, gguf::ValueType::kInt32);
  EXPECT_EQ(*f->GetInt("test.uint64"), int64_t{1} << 40);
  EXPECT_EQ(*f->GetFloat("llama.rope.freq_base"), 500000.0);
  EXPECT_FLOAT_EQ(static_cast<float>(*f->GetFloat("llama.attention.layer_norm_rms_epsilon")), 1e-6f);
  EXPECT_FALSE(*f->GetBool("test.false"));
  EXPECT_TRUE(*f->GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(*f->GetStringArray("tokenizer.ggml.tokens"), kTokens);
  EXPECT_EQ(f->GetFloatArray("tokenizer.ggml.scores")->at(3), -1.5f);
  EXPECT_EQ(f->GetIntArray("tokenizer.ggml.token_type")->at(1), 3);

  ASSERT_EQ(f->tensors.size(), model.tensors.size());
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    const auto& want = model.tensors[i];
    const gguf::TensorInfo& got = f->tensors[i];
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.dims, want.dims) << want.name;
    EXPECT_EQ(got.type, static_cast<uint32_t>(type)) << want.name;
    EXPECT_EQ(got.offset % 32, 0u) << want.name;
    absl::StatusOr<std::vector<float>> values = f->ReadTensorF32(got);
    ASSERT_TRUE(values.ok()) << values.status();
    ASSERT_EQ(values->size(), want.values.size());
    for (size_t j = 0; j < want.values.size(); ++j) {
      const float x = want.values[j], y = (*values)[j];
      if (type == TensorType::kF32) {
        ASSERT_EQ(y, x) << want.name << "[" << j << "]";
      } else {  // within half a unit in the last place of fp16
        ASSERT_LE(std::abs(x - y), std::ldexp(std::abs(x), -11) + std::ldexp(1.0f, -25))
            << want.name << "[" << j << "]";
      }
    }
  }

  // The file through the whole loader: config from metadata, vocab from tokenizer.*.
  testing::ScopedTempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const std::string path = (tmp.path() / "tiny.gguf").string();
  ASSERT_TRUE(w.WriteFile(path).ok());
  EXPECT_EQ(testing::ReadFile(path), *bytes);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  absl::StatusOr<Model> m = LoadModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.dim, 16);
  EXPECT_EQ(c.hidden_dim, 24);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.vocab_size, 10);
  EXPECT_EQ(c.max_seq_len, 128);
  EXPECT_FALSE(c.tied_classifier);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  ASSERT_TRUE(m->vocab.has_value());
  EXPECT_EQ(m->vocab->tokens, kTokens);
  EXPECT_EQ(m->vocab->bos_id, 1);
  EXPECT_EQ(m->vocab->eos_id, 2);
}

TEST(GgufWriterTest, F32RoundTripsExactly) { CheckRoundTrip(TensorType::kF32); }
TEST(GgufWriterTest, F16RoundTripsWithinHalfPrecision) { CheckRoundTrip(TensorType::kF16); }

TEST(GgufWriterTest, NoTensorsAndOddSizesStayAligned) {
  gguf::Writer empty;
  empty.AddString("general.architecture", "llama");
  absl::StatusOr<std::string> bytes = empty.Serialize();
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<gguf::File> f = gguf::Parse(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->tensors.empty());

  gguf::Writer w;  // 3, 5 and 7 elements: every tensor still starts aligned
  w.AddTensor("a", {3}, TensorType::kF32, std::vector<float>{1, 2, 3});
  w.AddTensor("b", {5}, TensorType::kF16, std::vector<float>{1, 2, 3, 4, 5});
  w.AddTensor("c", {7, 1, 1, 1}, TensorType::kF32, std::vector<float>(7, -1.0f));
  bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  f = gguf::Parse(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors[1].offset, 32u);
  EXPECT_EQ(f->tensors[2].offset, 64u);
  EXPECT_EQ(f->tensors[2].dims, (std::vector<uint64_t>{7, 1, 1, 1}));
  EXPECT_EQ(*f->ReadTensorF32(f->tensors[1]), (std::vector<float>{1, 2, 3, 4, 5}));
}

TEST(GgufWriterTest, MistakesAreStatusesAndTheFirstOneSticks) {
  const std::vector<float> four(4, 1.0f);
  auto first_error = [](auto&& build) {
    gguf::Writer w;
    build(w);
    w.AddString("later.key", "ignored after an error");
    absl::StatusOr<std::string> s = w.Serialize();
    EXPECT_FALSE(s.ok());
    EXPECT_FALSE(w.WriteFile("/nonexistent-dir/x.gguf").ok());
    return s.ok() ? std::string() : std::string(s.status().message());
  };
  EXPECT_NE(first_error([](gguf::Writer& w) { w.AddUint32("k", 1); w.AddString("k", "again"); }).find("duplicate metadata key 'k'"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor("t", {4}, TensorType::kF32, four); w.AddTensor("t", {4}, TensorType::kF32, four); }).find("duplicate tensor name 't'"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor("t", {2, 3}, TensorType::kF32, four); }).find("6 elements but 4 values"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor("t", {4}, TensorType::kQ8_0, four); }).find("Q8_0"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor("t", {}, TensorType::kF32, four); }).find("0 dims"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor("t", {1, 1, 1, 1, 4}, TensorType::kF32, four); }).find("5 dims"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor("t", {4, 0}, TensorType::kF32, four); }).find("zero dim"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor("t", {uint64_t{1} << 40, uint64_t{1} << 40}, TensorType::kF32, four); }).find("64 bits"), std::string::npos);
  EXPECT_NE(first_error([&](gguf::Writer& w) { w.AddTensor(std::string(64, 'n'), {4}, TensorType::kF32, four); }).find("64 bytes"), std::string::npos);
  EXPECT_NE(first_error([](gguf::Writer& w) { w.AddUint32("general.alignment", 64); }).find("general.alignment"), std::string::npos);
  EXPECT_NE(first_error([](gguf::Writer& w) { w.AddBool("", true); }).find("0 bytes"), std::string::npos);

  gguf::Writer w;  // a 63-byte name is ggml's limit and fine
  w.AddTensor(std::string(63, 'n'), {4}, TensorType::kF32, four);
  EXPECT_TRUE(w.Serialize().ok());
}

TEST(GgufWriterTest, CopyValueCopiesEveryTypeByteForByte) {
  gguf::Writer src;
  AddTinyMetadata(&src);
  absl::StatusOr<std::string> src_bytes = src.Serialize();
  ASSERT_TRUE(src_bytes.ok());
  absl::StatusOr<gguf::File> from = gguf::Parse(*src_bytes);
  ASSERT_TRUE(from.ok());

  gguf::Writer dst;
  for (const auto& [key, value] : from->metadata) {
    if (key != "general.alignment") {
      ASSERT_TRUE(dst.CopyValue(*from, key).ok()) << key;
    }
  }
  EXPECT_EQ(dst.CopyValue(*from, "no.such.key").code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> dst_bytes = dst.Serialize();
  ASSERT_TRUE(dst_bytes.ok()) << dst_bytes.status();
  EXPECT_EQ(*dst_bytes, *src_bytes);
}

TEST(GgufWriterTest, CopyValueKeepsARealTokenizer) {
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::string bytes = testing::ReadFile(testing::SharedPath("models/stories260K/stories260K.gguf"));
  absl::StatusOr<gguf::File> from = gguf::Parse(bytes);
  ASSERT_TRUE(from.ok()) << from.status();
  gguf::Writer w;
  for (const auto& [key, value] : from->metadata) {
    if (key.rfind("tokenizer.", 0) == 0) {
      ASSERT_TRUE(w.CopyValue(*from, key).ok()) << key;
    }
  }
  absl::StatusOr<std::string> out = w.Serialize();
  ASSERT_TRUE(out.ok());
  absl::StatusOr<gguf::File> f = gguf::Parse(*out);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<Vocab> want = gguf::VocabFromGguf(*from), got = gguf::VocabFromGguf(*f);
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_EQ(got->tokens, want->tokens);
  EXPECT_EQ(got->scores, want->scores);
  EXPECT_EQ(got->token_types, want->token_types);
  EXPECT_EQ(got->bos_id, want->bos_id);
  EXPECT_EQ(f->Find("tokenizer.ggml.padding_token_id")->type, gguf::ValueType::kUint32);
}

// --- sinkserve-make-model ----------------------------------------------------

using Result = testing::ToolResult;

class GgufWriterToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty()) << "cannot make a temporary directory";
    ASSERT_TRUE(fs::exists(testing::BinaryPath("sinkserve-make-model")))
        << "build the sinkserve-make-model target first";
  }
  Result Run(const std::string& tool, const std::vector<std::string>& args) {
    return testing::RunTool(tmp_.path(), tool, args);
  }
  std::string Path(const std::string& name) const { return (tmp_.path() / name).string(); }

  testing::ScopedTempDir tmp_;
};

const std::string kTok = "models/stories260K/tok512.bin";
const std::string kGguf = "models/stories260K/stories260K.gguf";

TEST_F(GgufWriterToolTest, WritesALoadableReproducibleModel) {
  REQUIRE_SHARED(kTok);
  const std::vector<std::string> args = {"--dim", "64", "--hidden", "96", "--layers", "2", "--heads", "4",
                                         "--kv-heads", "2", "--vocab-from", testing::SharedPath(kTok),
                                         "--context", "256", "--seed", "5"};
  std::vector<std::string> a = args;
  a.insert(a.end(), {"--out", Path("a.gguf")});
  Result r = Run("sinkserve-make-model", a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote "), std::string::npos) << r.out;

  absl::StatusOr<Model> m = LoadModel(Path("a.gguf"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.dim, 64);
  EXPECT_EQ(m->config.hidden_dim, 96);
  EXPECT_EQ(m->config.n_layers, 2);
  EXPECT_EQ(m->config.n_heads, 4);
  EXPECT_EQ(m->config.n_kv_heads, 2);
  EXPECT_EQ(m->config.head_dim, 16);
  EXPECT_EQ(m->config.max_seq_len, 256);
  EXPECT_EQ(m->config.vocab_size, 512);
  EXPECT_FALSE(m->config.tied_classifier);
  absl::StatusOr<Vocab> tok = LoadVocab(testing::SharedPath(kTok));
  ASSERT_TRUE(tok.ok() && m->vocab.has_value());
  EXPECT_EQ(m->vocab->tokens, tok->tokens);
  EXPECT_EQ(m->vocab->scores, tok->scores);
  EXPECT_EQ(m->vocab->token_types, tok->token_types);
  EXPECT_EQ(m->vocab->bos_id, 1);

  // The weights have make_model.py's scales: q ~ N(0, 1/dim), norms ~ 1.
  const std::string bytes = testing::ReadFile(Path("a.gguf"));
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f->GetInt("general.file_type"), 0);
  std::vector<float> q = *f->ReadTensorF32(*f->FindTensor("blk.1.attn_q.weight"));
  double sum_sq = 0;
  for (float x : q) sum_sq += double{x} * x;
  EXPECT_NEAR(std::sqrt(sum_sq / q.size()), 1.0 / 8.0, 0.01);
  std::vector<float> norm = *f->ReadTensorF32(*f->FindTensor("output_norm.weight"));
  for (float x : norm) EXPECT_NEAR(x, 1.0f, 0.5f);

  // Same seed, same bytes; another seed, other weights.
  a = args;
  a.insert(a.end(), {"--out", Path("b.gguf")});
  ASSERT_EQ(Run("sinkserve-make-model", a).exit_code, 0);
  EXPECT_EQ(testing::ReadFile(Path("b.gguf")), bytes);
  a.back() = Path("c.gguf");
  a[a.size() - 3] = "6";  // --seed
  ASSERT_EQ(Run("sinkserve-make-model", a).exit_code, 0);
  const std::string other = testing::ReadFile(Path("c.gguf"));
  EXPECT_EQ(other.size(), bytes.size());
  EXPECT_NE(other, bytes);
}

TEST_F(GgufWriterToolTest, F16TiedAndASyntheticVocab) {
  Result r = Run("sinkserve-make-model", {"--out", Path("m.gguf"), "--dim", "32", "--hidden", "48", "--layers",
                                          "1", "--heads", "2", "--vocab", "300", "--type", "f16", "--tied"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  absl::StatusOr<Model> m = LoadModel(Path("m.gguf"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->config.tied_classifier);
  EXPECT_EQ(m->config.vocab_size, 300);
  EXPECT_EQ(m->config.n_kv_heads, 2);  // defaults to --heads
  ASSERT_TRUE(m->vocab.has_value());
  EXPECT_EQ(m->vocab->tokens[3 + 0x41], "<0x41>");
  EXPECT_EQ(m->vocab->token_types[3 + 0x41], TokenType::kByte);

  const std::string bytes = testing::ReadFile(Path("m.gguf"));
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f->GetInt("general.file_type"), 1);
  EXPECT_EQ(f->FindTensor("output.weight"), nullptr);
  EXPECT_EQ(f->FindTensor("blk.0.ffn_down.weight")->type, static_cast<uint32_t>(TensorType::kF16));
  EXPECT_EQ(f->FindTensor("token_embd.weight")->type, static_cast<uint32_t>(TensorType::kF16));
  EXPECT_EQ(f->FindTensor("blk.0.attn_norm.weight")->type, static_cast<uint32_t>(TensorType::kF32));
}

TEST_F(GgufWriterToolTest, CopiesAGgufTokenizer) {
  REQUIRE_SHARED(kGguf);
  Result r = Run("sinkserve-make-model", {"--out", Path("m.gguf"), "--dim", "32", "--hidden", "32", "--layers",
                                          "1", "--heads", "2", "--vocab-from", testing::SharedPath(kGguf)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  absl::StatusOr<Model> m = LoadModel(Path("m.gguf"));
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<Model> src = LoadModel(testing::SharedPath(kGguf));
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(m->vocab->tokens, src->vocab->tokens);
  EXPECT_EQ(m->vocab->token_types, src->vocab->token_types);
}

TEST_F(GgufWriterToolTest, BadFlagsFailWithOneLine) {
  const std::vector<std::string> ok = {"--out", Path("x.gguf"), "--dim", "32", "--heads", "4", "--vocab", "16"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = ok;
    for (size_t i = 0; i + 1 < extra.size(); i += 2) {
      auto it = std::find(a.begin(), a.end(), extra[i]);
      if (it != a.end()) {
        *(it + 1) = extra[i + 1];
      } else {
        a.insert(a.end(), {extra[i], extra[i + 1]});
      }
    }
    return a;
  };
  auto expect_fail = [&](const std::vector<std::string>& args, const std::string& needle) {
    Result r = Run("sinkserve-make-model", args);
    EXPECT_GT(r.exit_code, 0) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("sinkserve-make-model: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(Path("x.gguf")));
  };
  expect_fail({"--dim", "32", "--vocab", "16"}, "--out");
  expect_fail(with({"--dim", "30"}), "--heads");
  expect_fail(with({"--dim", "-1"}), "--dim");
  expect_fail(with({"--dim", "abc"}), "--dim");
  expect_fail(with({"--kv-heads", "3"}), "--kv-heads");
  expect_fail(with({"--kv-heads", "8"}), "--kv-heads");
  expect_fail(with({"--dim", "36", "--heads", "12"}), "even");  // head_dim 3
  expect_fail(with({"--type", "q4_0"}), "--type");
  expect_fail(with({"--vocab", "2"}), "--vocab");
  expect_fail(with({"--vocab-from", Path("missing.bin")}), "exactly one");
  expect_fail({"--out", Path("x.gguf"), "--vocab-from", Path("missing.bin")}, "missing.bin");
  expect_fail(with({"--layers", "0"}), "--layers");
  expect_fail(with({"--bogus", "1"}), "--bogus");
  expect_fail(with({"--dim", "65536", "--hidden", "1048576", "--layers", "64"}), "GiB");
  std::ofstream(Path("junk.bin")) << "not a vocabulary";
  expect_fail({"--out", Path("x.gguf"), "--vocab-from", Path("junk.bin")}, "junk.bin");
  Result r = Run("sinkserve-make-model", with({"--out", Path("no/such/dir/x.gguf")}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace sinkserve
