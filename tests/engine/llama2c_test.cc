#include "engine/model/llama2c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "engine/model/model_loader.h"
#include "tests/random_model.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

using ::sinkserve::testing::SharedPath;

// A checkpoint whose i-th weight float is i, so each tensor's first value is
// its float offset in the weight section.
std::string Checkpoint(std::vector<int32_t> header, size_t n_floats) {
  std::string out(reinterpret_cast<const char*>(header.data()), header.size() * 4);
  for (size_t i = 0; i < n_floats; ++i) {
    const float f = static_cast<float>(i);
    out.append(reinterpret_cast<const char*>(&f), 4);
  }
  return out;
}

// dim 4, hidden 6, 2 layers, 2 heads, 1 kv head (head_size 2, kv_dim 2),
// vocab 5, seq_len 3. Float offsets of each group:
//   embedding 0, rms_att 20, wq 28, wk 60, wv 76, wo 92, rms_ffn 124,
//   w1 132, w2 180, w3 228, rms_final 276, freq_cis 280 (2 x 3), wcls 286.
constexpr size_t kSharedFloats = 286;
constexpr size_t kUnsharedFloats = 306;
std::string Tiny(bool shared) {
  return Checkpoint({4, 6, 2, 2, 1, shared ? 5 : -5, 3}, shared ? kSharedFloats : kUnsharedFloats);
}

TEST(Llama2cTest, ReadsEveryTensorFromItsOffset) {
  absl::StatusOr<Model> m = ParseLlama2cCheckpoint(Tiny(/*shared=*/true));
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.dim, 4);
  EXPECT_EQ(c.hidden_dim, 6);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 2);
  EXPECT_EQ(c.n_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 2);
  EXPECT_EQ(c.vocab_size, 5);
  EXPECT_EQ(c.max_seq_len, 3);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.norm_eps, 1e-5f);
  EXPECT_TRUE(c.tied_classifier);
  const ModelWeights& w = m->weights;
  EXPECT_EQ(testing::F32(w.token_embedding)[19], 19.0f);
  EXPECT_EQ(w.layers[0].attn_norm[0], 20.0f);
  EXPECT_EQ(w.layers[1].attn_norm[0], 24.0f);
  EXPECT_EQ(testing::F32(w.layers[0].wq)[0], 28.0f);
  EXPECT_EQ(testing::F32(w.layers[1].wq)[0], 44.0f);
  // wk is (kv_dim, dim) = (2, 4) per layer: row 1 of layer 1 starts at 60 + 8 + 4.
  EXPECT_EQ(testing::F32(w.layers[1].wk)[4], 72.0f);
  EXPECT_EQ(testing::F32(w.layers[0].wv)[0], 76.0f);
  EXPECT_EQ(testing::F32(w.layers[1].wo)[15], 92.0f + 16 + 15);
  EXPECT_EQ(w.layers[0].ffn_norm[0], 124.0f);
  EXPECT_EQ(testing::F32(w.layers[1].w1)[0], 132.0f + 24);
  EXPECT_EQ(testing::F32(w.layers[0].w2)[0], 180.0f);
  EXPECT_EQ(testing::F32(w.layers[1].w3)[23], 228.0f + 24 + 23);
  EXPECT_EQ(w.final_norm[3], 279.0f);
  EXPECT_TRUE(w.classifier.empty());
  EXPECT_EQ(&w.Classifier(), &w.token_embedding);
  EXPECT_FALSE(m->vocab.has_value());
  EXPECT_TRUE(m->ValidateWeights().ok());
}

TEST(Llama2cTest, NegativeVocabMeansUnsharedClassifierAfterFreqCis) {
  absl::StatusOr<Model> m = ParseLlama2cCheckpoint(Tiny(/*shared=*/false));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.vocab_size, 5);
  EXPECT_FALSE(m->config.tied_classifier);
  ASSERT_EQ(testing::F32(m->weights.classifier).size(), 20u);
  EXPECT_EQ(testing::F32(m->weights.classifier)[0], 286.0f);
  EXPECT_EQ(testing::F32(m->weights.Classifier())[19], 305.0f);
}

TEST(Llama2cTest, EveryTruncationAndAnyExtraByteFails) {
  for (bool shared : {true, false}) {
    const std::string bytes = Tiny(shared);
    for (size_t n = 0; n < bytes.size(); ++n) {
      std::vector<char> prefix(bytes.begin(), bytes.begin() + n);  // exact-size heap copy
      EXPECT_FALSE(ParseLlama2cCheckpoint(std::string_view(prefix.data(), n)).ok()) << n;
    }
    absl::StatusOr<Model> m = ParseLlama2cCheckpoint(bytes + '\0');
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
    const std::string expected = std::to_string(bytes.size());
    EXPECT_NE(m.status().message().find("implies " + expected + " bytes, file has " +
                                        std::to_string(bytes.size() + 1)),
              std::string::npos)
        << m.status();
  }
}

TEST(Llama2cTest, RejectsBadHeaders) {
  const int32_t kMin = std::numeric_limits<int32_t>::min();
  const int32_t kMax = std::numeric_limits<int32_t>::max();
  const std::vector<std::vector<int32_t>> bad = {
      {0, 6, 2, 2, 1, 5, 3},          // dim 0
      {-4, 6, 2, 2, 1, 5, 3},         // negative dim
      {4, 6, 2, 2, 1, 0, 3},          // vocab 0
      {4, 6, 2, 2, 1, kMin, 3},       // -INT32_MIN overflows
      {4, 6, 2, 3, 1, 5, 3},          // dim % n_heads != 0
      {4, 6, 2, 2, 3, 5, 3},          // n_heads % n_kv_heads != 0
      {4, 6, 2, 2, 1, 5, -1},         // seq_len
      {1 << 30, 6, 2, 2, 1, 1 << 30, 3},  // 2^60 embedding elements
      {4, kMax, kMax, 2, 1, 5, 3},    // absurd hidden x layers
      {1 << 18, 1, 1, 1, 1, 1, kMax}, // RoPE tables of 2^48 floats: size check, no allocation
  };
  for (const auto& h : bad) {
    absl::StatusOr<Model> m = ParseLlama2cCheckpoint(Checkpoint(h, 300));
    EXPECT_FALSE(m.ok()) << h[0] << " " << h[1] << " " << h[2] << " " << h[3] << " " << h[4]
                         << " " << h[5] << " " << h[6];
  }
  EXPECT_EQ(ParseLlama2cCheckpoint("").status().code(), absl::StatusCode::kDataLoss);
}

TEST(Llama2cTest, LoadsStories260K) {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  absl::StatusOr<Model> m = LoadModel(SharedPath("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_TRUE(c.tied_classifier);
  EXPECT_EQ(testing::F32(m->weights.layers[4].wk).size(), 32u * 64u);  // (kv_dim, dim)
  EXPECT_EQ(testing::F32(m->weights.layers[4].w2).size(), 64u * 172u);
  EXPECT_TRUE(m->ValidateWeights().ok());
}

TEST(Llama2cTest, Stories260KWithAnyTailCutFails) {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  absl::StatusOr<std::string> bytes = ReadFileBytes(SharedPath("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  for (size_t cut : {size_t{1}, size_t{3}, size_t{4}, size_t{4096}, bytes->size() - 28}) {
    absl::StatusOr<Model> m =
        ParseLlama2cCheckpoint(std::string_view(*bytes).substr(0, bytes->size() - cut));
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << cut;
  }
}

}  // namespace
}  // namespace sinkserve
