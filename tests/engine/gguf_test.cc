#include "engine/model/gguf.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "engine/model/llama2c.h"
#include "engine/model/model_loader.h"
#include "tests/random_model.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

using ::sinkserve::gguf::ValueType;
using ::sinkserve::testing::SharedPath;

// --- A minimal in-memory GGUF v3 writer -------------------------------------

template <typename T>
void Put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void PutString(std::string& out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out += s;
}

std::string F32Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}
std::string U16Bytes(const std::vector<uint16_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(uint16_t));
}

class GgufWriter {
 public:
  // Raw key/value: `value` is the encoded value after the type field.
  GgufWriter& Kv(const std::string& key, ValueType type, const std::string& value) {
    PutString(kvs_, key);
    Put<uint32_t>(kvs_, static_cast<uint32_t>(type));
    kvs_ += value;
    ++n_kv_;
    return *this;
  }
  GgufWriter& U32(const std::string& key, uint32_t v) {
    std::string b;
    Put(b, v);
    return Kv(key, ValueType::kUint32, b);
  }
  GgufWriter& F32(const std::string& key, float v) {
    std::string b;
    Put(b, v);
    return Kv(key, ValueType::kFloat32, b);
  }
  GgufWriter& Bool(const std::string& key, bool v) {
    return Kv(key, ValueType::kBool, std::string(1, v ? '\1' : '\0'));
  }
  GgufWriter& Str(const std::string& key, const std::string& v) {
    std::string b;
    PutString(b, v);
    return Kv(key, ValueType::kString, b);
  }
  GgufWriter& StrArray(const std::string& key, const std::vector<std::string>& v) {
    std::string b;
    Put<uint32_t>(b, static_cast<uint32_t>(ValueType::kString));
    Put<uint64_t>(b, v.size());
    for (const auto& s : v) PutString(b, s);
    return Kv(key, ValueType::kArray, b);
  }
  GgufWriter& F32Array(const std::string& key, const std::vector<float>& v) {
    std::string b;
    Put<uint32_t>(b, static_cast<uint32_t>(ValueType::kFloat32));
    Put<uint64_t>(b, v.size());
    b += F32Bytes(v);
    return Kv(key, ValueType::kArray, b);
  }
  GgufWriter& I32Array(const std::string& key, const std::vector<int32_t>& v) {
    std::string b;
    Put<uint32_t>(b, static_cast<uint32_t>(ValueType::kInt32));
    Put<uint64_t>(b, v.size());
    for (int32_t x : v) Put(b, x);
    return Kv(key, ValueType::kArray, b);
  }
  // dims fastest-first (ggml ne order); `data` already in the tensor's type.
  GgufWriter& Tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                     std::string data) {
    tensors_.push_back({name, std::move(dims), type, std::move(data)});
    return *this;
  }

  std::string Build(uint64_t alignment = 32) const {
    std::string out = "GGUF";
    Put<uint32_t>(out, 3);
    Put<uint64_t>(out, tensors_.size());
    Put<uint64_t>(out, n_kv_);
    out += kvs_;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      PutString(out, t.name);
      Put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) Put(out, d);
      Put<uint32_t>(out, t.type);
      Put<uint64_t>(out, offset);
      offsets.push_back(offset);
      offset = (offset + t.data.size() + alignment - 1) / alignment * alignment;
    }
    if (tensors_.empty()) return out;
    out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    const size_t data_start = out.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      out.resize(data_start + offsets[i], '\0');
      out += tensors_[i].data;
    }
    return out;
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::string data;
  };
  std::string kvs_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

// Distinct deterministic values so a swapped tensor or transposed copy shows.
std::vector<float> Pattern(size_t n, float base) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = base + 0.001f * static_cast<float>(i);
  return v;
}

// A tiny llama: dim 4, hidden 6, 2 layers, 2 heads, 1 kv head (head_dim 2),
// vocab 5, context 16. Tensor k's values start at 100 * k.
struct TinyLlama {
  int dim = 4, hidden = 6, layers = 2, heads = 2, kv_heads = 1, vocab = 5, ctx = 16;
  bool with_output = true;
  bool with_vocab = true;

  GgufWriter Writer() const {
    GgufWriter w;
    w.Str("general.architecture", "llama")
        .Str("general.name", "tiny")
        .U32("llama.embedding_length", dim)
        .U32("llama.feed_forward_length", hidden)
        .U32("llama.block_count", layers)
        .U32("llama.attention.head_count", heads)
        .U32("llama.attention.head_count_kv", kv_heads)
        .U32("llama.context_length", ctx)
        .F32("llama.rope.freq_base", 500000.0f)
        .F32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
    if (with_vocab) {
      w.Str("tokenizer.ggml.model", "llama")
          .StrArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81" "a", "b"})
          .F32Array("tokenizer.ggml.scores", {0, 0, 0, -1, -2})
          .I32Array("tokenizer.ggml.token_type", {2, 3, 3, 1, 1})
          .U32("tokenizer.ggml.bos_token_id", 1)
          .U32("tokenizer.ggml.eos_token_id", 2)
          .U32("tokenizer.ggml.unknown_token_id", 0)
          .U32("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu)
          .Bool("tokenizer.ggml.add_bos_token", false)
          .Str("tokenizer.chat_template", "{{ messages }}");
    }
    const uint64_t d = dim, h = hidden, q = heads * (dim / heads), kv = kv_heads * (dim / heads);
    int k = 0;
    auto add = [&](const std::string& name, std::vector<uint64_t> ne) {
      uint64_t n = 1;
      for (uint64_t x : ne) n *= x;
      w.Tensor(name, ne, 0, F32Bytes(Pattern(n, 100.0f * k++)));
    };
    add("token_embd.weight", {d, static_cast<uint64_t>(vocab)});
    for (int l = 0; l < layers; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      add(p + "attn_norm.weight", {d});
      add(p + "attn_q.weight", {d, q});
      add(p + "attn_k.weight", {d, kv});
      add(p + "attn_v.weight", {d, kv});
      add(p + "attn_output.weight", {q, d});
      add(p + "ffn_norm.weight", {d});
      add(p + "ffn_gate.weight", {d, h});
      add(p + "ffn_down.weight", {h, d});
      add(p + "ffn_up.weight", {d, h});
    }
    add("output_norm.weight", {d});
    if (with_output) add("output.weight", {d, static_cast<uint64_t>(vocab)});
    return w;
  }
  std::string Bytes() const { return Writer().Build(); }
};

absl::StatusOr<Model> ParseModel(std::string_view bytes) {
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  if (!f.ok()) return f.status();
  return gguf::ModelFromGguf(*f);
}

// --- Container ---------------------------------------------------------------

TEST(GgufTest, ParsesMetadataOfEveryType) {
  std::string nested;  // array of 2 arrays of uint8: [[1, 2], [3]]
  Put<uint32_t>(nested, static_cast<uint32_t>(ValueType::kArray));
  Put<uint64_t>(nested, 2);
  Put<uint32_t>(nested, static_cast<uint32_t>(ValueType::kUint8));
  Put<uint64_t>(nested, 2);
  nested += "\x01\x02";
  Put<uint32_t>(nested, static_cast<uint32_t>(ValueType::kUint8));
  Put<uint64_t>(nested, 1);
  nested += "\x03";
  std::string i8(1, '\xfe'), i16, u64, i64, f64, u16;
  Put<int16_t>(i16, -300);
  Put<uint16_t>(u16, 60000);
  Put<uint64_t>(u64, uint64_t{1} << 40);
  Put<int64_t>(i64, -(int64_t{1} << 40));
  Put<double>(f64, 2.5);
  const std::string bytes = GgufWriter()
                                .Kv("u8", ValueType::kUint8, "\x07")
                                .Kv("i8", ValueType::kInt8, i8)
                                .Kv("u16", ValueType::kUint16, u16)
                                .Kv("i16", ValueType::kInt16, i16)
                                .U32("u32", 123456)
                                .Kv("u64", ValueType::kUint64, u64)
                                .Kv("i64", ValueType::kInt64, i64)
                                .F32("f32", 0.25f)
                                .Kv("f64", ValueType::kFloat64, f64)
                                .Bool("b", true)
                                .Str("s", "hello")
                                .StrArray("sa", {"x", "", "yz"})
                                .Kv("nested", ValueType::kArray, nested)
                                .Build();
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version, 3u);
  EXPECT_EQ(f->metadata.size(), 13u);
  EXPECT_EQ(*f->GetInt("u8"), 7);
  EXPECT_EQ(*f->GetInt("i8"), -2);
  EXPECT_EQ(*f->GetInt("u16"), 60000);
  EXPECT_EQ(*f->GetInt("i16"), -300);
  EXPECT_EQ(*f->GetInt("u32"), 123456);
  EXPECT_EQ(*f->GetInt("u64"), int64_t{1} << 40);
  EXPECT_EQ(*f->GetInt("i64"), -(int64_t{1} << 40));
  EXPECT_EQ(*f->GetFloat("f32"), 0.25);
  EXPECT_EQ(*f->GetFloat("f64"), 2.5);
  EXPECT_EQ(*f->GetBool("b"), true);
  EXPECT_EQ(*f->GetString("s"), "hello");
  EXPECT_EQ(*f->GetStringArray("sa"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(f->GetString("u32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f->GetInt("absent").status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<std::vector<gguf::Value>> outer = f->ArrayItems(*f->Find("nested"));
  ASSERT_TRUE(outer.ok()) << outer.status();
  ASSERT_EQ(outer->size(), 2u);
  absl::StatusOr<std::vector<gguf::Value>> first = f->ArrayItems((*outer)[0]);
  absl::StatusOr<std::vector<gguf::Value>> second = f->ArrayItems((*outer)[1]);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(first->size(), 2u);
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ(std::get<uint64_t>((*first)[1].data), 2u);
  EXPECT_EQ(std::get<uint64_t>((*second)[0].data), 3u);
}

TEST(GgufTest, ConvertsEachTensorTypeToF32) {
  // F16: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0, +inf.
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000, 0x7C00,
                                     0x3555};
  // BF16: the top halves of 1.0f, -2.5f, 3.140625f, 1e-38-ish.
  const std::vector<float> bf_src = {1.0f, -2.5f, 3.140625f, std::bit_cast<float>(0x00800000u)};
  std::vector<uint16_t> bf16;
  for (float x : bf_src) bf16.push_back(static_cast<uint16_t>(std::bit_cast<uint32_t>(x) >> 16));
  // Q8_0: two blocks of 32, scales 0.5 and -0.25, q = j - 16 and 127 - 8j.
  std::string q8;
  std::vector<float> q8_expected;
  for (int b = 0; b < 2; ++b) {
    Put<uint16_t>(q8, b == 0 ? 0x3800 : 0xB400);
    const float d = b == 0 ? 0.5f : -0.25f;
    for (int j = 0; j < 32; ++j) {
      const int8_t q = static_cast<int8_t>(b == 0 ? j - 16 : 127 - 8 * j);
      Put<int8_t>(q8, q);
      q8_expected.push_back(d * q);
    }
  }
  const std::vector<float> f32 = {1.5f, -0.0f, 3e38f, -7.25f};
  const std::string bytes = GgufWriter()
                                .Tensor("f32", {2, 2}, 0, F32Bytes(f32))
                                .Tensor("f16", {8}, 1, U16Bytes(f16))
                                .Tensor("bf16", {4}, 30, U16Bytes(bf16))
                                .Tensor("q8", {32, 2}, 8, q8)
                                .Build();
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data_offset % 32, 0u);

  EXPECT_EQ(*f->ReadTensorF32(*f->FindTensor("f32")), f32);
  absl::StatusOr<std::vector<float>> h = f->ReadTensorF32(*f->FindTensor("f16"));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ((*h)[0], 1.0f);
  EXPECT_EQ((*h)[1], -2.0f);
  EXPECT_EQ((*h)[2], 0.5f);
  EXPECT_EQ((*h)[3], 65504.0f);
  EXPECT_EQ((*h)[4], std::ldexp(1.0f, -24));
  EXPECT_EQ((*h)[5], 0.0f);
  EXPECT_TRUE(std::signbit((*h)[5]));
  EXPECT_TRUE(std::isinf((*h)[6]));
  EXPECT_NEAR((*h)[7], 0.33325195f, 1e-7);
  EXPECT_EQ(*f->ReadTensorF32(*f->FindTensor("bf16")), bf_src);
  EXPECT_EQ(*f->ReadTensorF32(*f->FindTensor("q8")), q8_expected);
}

TEST(GgufTest, UnsupportedTensorTypeIsUnimplementedNamingTheType) {
  const std::string bytes =
      GgufWriter().Tensor("w", {256}, /*Q2_K*/ 10, std::string(84, '\0')).Build();
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();  // the container is fine
  absl::StatusOr<std::vector<float>> t = f->ReadTensorF32(f->tensors[0]);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(t.status().message().find("Q2_K"), std::string::npos) << t.status();
}

// Found by gguf_fuzz: a zero-sized tensor must convert to an empty vector.
TEST(GgufTest, ZeroSizedTensorConvertsToEmpty) {
  const std::string bytes = GgufWriter()
                                .Tensor("z", {0, 4}, 0, "")
                                .Tensor("h", {4, 0}, 1, "")
                                .Tensor("a", {1}, 0, F32Bytes({7}))
                                .Build();
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  for (const char* name : {"z", "h"}) {
    absl::StatusOr<std::vector<float>> t = f->ReadTensorF32(*f->FindTensor(name));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(t->empty());
  }
  EXPECT_EQ(*f->ReadTensorF32(*f->FindTensor("a")), std::vector<float>{7});
}

TEST(GgufTest, HonoursGeneralAlignment) {
  const std::string bytes = GgufWriter()
                                .U32("general.alignment", 64)
                                .Tensor("a", {3}, 0, F32Bytes({1, 2, 3}))
                                .Tensor("b", {1}, 0, F32Bytes({4}))
                                .Build(64);
  absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->alignment, 64u);
  EXPECT_EQ(f->data_offset % 64, 0u);
  EXPECT_EQ(f->tensors[1].offset, 64u);
  EXPECT_EQ(*f->ReadTensorF32(f->tensors[1]), std::vector<float>{4});

  for (uint32_t bad : {0u, 3u, 48u}) {
    const std::string b = GgufWriter().U32("general.alignment", bad).Build();
    absl::StatusOr<gguf::File> g = gguf::Parse(b);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(g.status().message().find("alignment"), std::string::npos);
  }
}

TEST(GgufTest, RejectsWrongMagicAndVersion) {
  std::string bytes = GgufWriter().Str("k", "v").Build();
  std::string bad = bytes;
  bad[0] = 'X';
  absl::StatusOr<gguf::File> f = gguf::Parse(bad);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("magic"), std::string::npos) << f.status();
  bad = bytes;
  bad[4] = 2;  // v2 has the same layout as v3
  absl::StatusOr<gguf::File> v2 = gguf::Parse(bad);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version, 2u);
  EXPECT_EQ(*v2->GetString("k"), "v");
  for (uint32_t version : {0u, 1u, 4u, 0x03000000u}) {
    bad = bytes;
    std::memcpy(bad.data() + 4, &version, 4);
    EXPECT_FALSE(gguf::Parse(bad).ok()) << version;
  }
  EXPECT_FALSE(gguf::Parse("").ok());
  EXPECT_FALSE(gguf::Parse("GGU").ok());
}

// Overwrites the u64 at `offset`.
std::string WithU64(std::string bytes, size_t offset, uint64_t v) {
  std::memcpy(bytes.data() + offset, &v, 8);
  return bytes;
}

TEST(GgufTest, RejectsLyingCountsAndLengths) {
  const std::string bytes = GgufWriter().StrArray("arr", {"a", "b"}).Str("s", "xyz").Build();
  // Header: magic 0, version 4, n_tensors 8, n_kv 16; first key length at 24.
  const uint64_t huge = std::numeric_limits<uint64_t>::max();
  for (uint64_t v : {huge, uint64_t{1} << 40, uint64_t{3}}) {
    absl::StatusOr<gguf::File> f = gguf::Parse(WithU64(bytes, 16, v));
    EXPECT_FALSE(f.ok()) << "n_kv " << v;
  }
  EXPECT_FALSE(gguf::Parse(WithU64(bytes, 8, huge)).ok());
  EXPECT_FALSE(gguf::Parse(WithU64(bytes, 8, 1)).ok());
  absl::StatusOr<gguf::File> f = gguf::Parse(WithU64(bytes, 24, huge));  // key length
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("offset 24"), std::string::npos) << f.status();
  // Array count at 24 + 8 + 3 ("arr") + 4 (type) + 4 (elem type) = 43.
  for (uint64_t v : {huge, uint64_t{1} << 60, uint64_t{1000}}) {
    f = gguf::Parse(WithU64(bytes, 43, v));
    EXPECT_FALSE(f.ok()) << "array count " << v;
    EXPECT_NE(f.status().message().find("arr"), std::string::npos) << f.status();
  }
  // First element's string length at 51.
  EXPECT_FALSE(gguf::Parse(WithU64(bytes, 51, huge)).ok());
  EXPECT_FALSE(gguf::Parse(WithU64(bytes, 51, 1u << 20)).ok());
}

TEST(GgufTest, RejectsBadValueTypesAndDuplicates) {
  std::string bytes = GgufWriter().U32("k", 1).Build();
  std::string bad = bytes;
  bad[24 + 8 + 1] = 13;  // value type
  EXPECT_EQ(gguf::Parse(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(gguf::Parse(GgufWriter().Kv("b", ValueType::kBool, "\x02").Build()).ok());
  absl::StatusOr<gguf::File> dup = gguf::Parse(GgufWriter().U32("k", 1).U32("k", 2).Build());
  EXPECT_NE(dup.status().message().find("duplicate"), std::string::npos) << dup.status();
  EXPECT_FALSE(gguf::Parse(GgufWriter()
                               .Tensor("t", {1}, 0, F32Bytes({1}))
                               .Tensor("t", {1}, 0, F32Bytes({2}))
                               .Build())
                   .ok());
}

TEST(GgufTest, RejectsDeeplyNestedArrays) {
  auto nested = [](int depth) {
    std::string v;  // `depth` arrays, each holding one array, innermost empty u8
    for (int i = 0; i < depth; ++i) {
      Put<uint32_t>(v, static_cast<uint32_t>(i + 1 < depth ? ValueType::kArray : ValueType::kUint8));
      Put<uint64_t>(v, i + 1 < depth ? 1 : 0);
    }
    return GgufWriter().Kv("deep", ValueType::kArray, v).Build();
  };
  EXPECT_TRUE(gguf::Parse(nested(4)).ok());
  absl::StatusOr<gguf::File> f = gguf::Parse(nested(1000));
  EXPECT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("nested"), std::string::npos) << f.status();
}

TEST(GgufTest, RejectsBadTensorInfos) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, std::string data) {
    return gguf::Parse(GgufWriter().Tensor("t", std::move(dims), type, std::move(data)).Build());
  };
  EXPECT_TRUE(one({2, 2}, 0, F32Bytes({1, 2, 3, 4})).ok());
  absl::StatusOr<gguf::File> f = one({1, 1, 1, 1, 1}, 0, F32Bytes({1}));
  EXPECT_NE(f.status().message().find("dimensions"), std::string::npos) << f.status();
  f = one({uint64_t{1} << 32, uint64_t{1} << 32}, 0, F32Bytes({1}));
  EXPECT_NE(f.status().message().find("overflow"), std::string::npos) << f.status();
  f = one({uint64_t{1} << 63}, 0, F32Bytes({1}));
  EXPECT_FALSE(f.ok());
  f = one({uint64_t{1} << 40}, 0, F32Bytes({1}));  // claims 4 TiB of data
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("'t'"), std::string::npos) << f.status();
  f = one({2}, 99, F32Bytes({1, 2}));
  EXPECT_NE(f.status().message().find("unknown ggml type 99"), std::string::npos) << f.status();
  f = one({16}, 8, std::string(34, '\0'));  // Q8_0 row not a multiple of 32
  EXPECT_NE(f.status().message().find("block size"), std::string::npos) << f.status();

  // Data offset: past the end, unaligned, overlapping.
  const std::string bytes = GgufWriter()
                                .Tensor("a", {8}, 0, F32Bytes(Pattern(8, 0)))
                                .Tensor("b", {8}, 0, F32Bytes(Pattern(8, 1)))
                                .Build();
  // Second tensor info: 24 + (8+1 name + 4 n_dims + 8 dim + 4 type + 8 offset) = 57;
  // its offset field is at 57 + 8 + 1 + 4 + 8 + 4 = 82.
  ASSERT_TRUE(gguf::Parse(bytes).ok());
  ASSERT_EQ(gguf::Parse(bytes)->tensors[1].offset, 32u);
  EXPECT_EQ(gguf::Parse(WithU64(bytes, 82, 64)).status().code(), absl::StatusCode::kDataLoss);
  // Aligned, but offset + size wraps around uint64.
  EXPECT_EQ(gguf::Parse(WithU64(bytes, 82, std::numeric_limits<uint64_t>::max() - 31))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  f = gguf::Parse(WithU64(bytes, 82, 4));
  EXPECT_NE(f.status().message().find("alignment"), std::string::npos) << f.status();
  f = gguf::Parse(WithU64(bytes, 82, 0));
  EXPECT_NE(f.status().message().find("overlaps"), std::string::npos) << f.status();
}

TEST(GgufTest, EveryTruncationOfASyntheticModelFails) {
  const std::string bytes = TinyLlama().Bytes();
  ASSERT_TRUE(ParseModel(bytes).ok()) << ParseModel(bytes).status();
  for (size_t n = 0; n < bytes.size(); ++n) {
    // An exact-size heap copy, so a read past `n` is a real out-of-bounds read
    // under a sanitizer.
    std::vector<char> prefix(bytes.begin(), bytes.begin() + n);
    EXPECT_FALSE(ParseModel(std::string_view(prefix.data(), n)).ok()) << "prefix of " << n;
  }
}

// --- llama architecture --------------------------------------------------------

TEST(GgufLlamaTest, SyntheticModelMapsEveryTensor) {
  absl::StatusOr<Model> m = ParseModel(TinyLlama().Bytes());
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.dim, 4);
  EXPECT_EQ(c.hidden_dim, 6);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 2);
  EXPECT_EQ(c.n_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 2);
  EXPECT_EQ(c.vocab_size, 5);
  EXPECT_EQ(c.max_seq_len, 16);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FALSE(c.tied_classifier);
  // Tensor k starts at 100 k: 0 embd, then 9 per layer, then output_norm, output.
  const ModelWeights& w = m->weights;
  auto at = [](int k, int i) { return Pattern(i + 1, 100.0f * k)[i]; };
  EXPECT_EQ(testing::F32(w.token_embedding)[5], at(0, 5));
  EXPECT_EQ(w.layers[0].attn_norm[0], 100.0f);
  EXPECT_EQ(testing::F32(w.layers[0].wq)[0], 200.0f);
  EXPECT_EQ(testing::F32(w.layers[0].wk)[0], 300.0f);
  EXPECT_EQ(testing::F32(w.layers[0].wv)[0], 400.0f);
  EXPECT_EQ(testing::F32(w.layers[0].wo)[0], 500.0f);
  EXPECT_EQ(w.layers[0].ffn_norm[0], 600.0f);
  EXPECT_EQ(testing::F32(w.layers[0].w1)[0], 700.0f);
  EXPECT_EQ(testing::F32(w.layers[0].w2)[7], at(8, 7));
  EXPECT_EQ(testing::F32(w.layers[0].w3)[0], 900.0f);
  EXPECT_EQ(testing::F32(w.layers[1].w3)[0], 1800.0f);
  EXPECT_EQ(w.final_norm[0], 1900.0f);
  EXPECT_EQ(testing::F32(w.classifier)[0], 2000.0f);
  EXPECT_EQ(testing::F32(w.layers[1].wk).size(), 2u * 4u);  // (kv_dim, dim)
  EXPECT_EQ(testing::F32(w.layers[1].w2).size(), 4u * 6u);  // (dim, hidden)

  ASSERT_TRUE(m->vocab.has_value());
  EXPECT_EQ(m->vocab->type, VocabType::kSentencePiece);
  EXPECT_EQ(m->vocab->size(), 5);
  EXPECT_EQ(m->vocab->tokens[3], "\xE2\x96\x81" "a");
  EXPECT_EQ(m->vocab->scores[4], -2.0f);
  EXPECT_EQ(m->vocab->token_types[1], TokenType::kControl);
  EXPECT_EQ(m->vocab->bos_id, 1);
  EXPECT_EQ(m->vocab->eos_id, 2);
  EXPECT_EQ(m->vocab->unk_id, 0);
  EXPECT_EQ(m->vocab->pad_id, -1);
  EXPECT_FALSE(m->vocab->add_bos);
  EXPECT_TRUE(m->vocab->add_space_prefix);
  EXPECT_EQ(m->chat_template, "{{ messages }}");
}

TEST(GgufLlamaTest, MissingOutputMeansTiedClassifier) {
  TinyLlama t;
  t.with_output = false;
  t.with_vocab = false;
  absl::StatusOr<Model> m = ParseModel(t.Bytes());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->config.tied_classifier);
  EXPECT_TRUE(m->weights.classifier.empty());
  EXPECT_EQ(&m->weights.Classifier(), &m->weights.token_embedding);
  EXPECT_FALSE(m->vocab.has_value());
}

TEST(GgufLlamaTest, ShapeMismatchNamesTheTensor) {
  // Make the config disagree with the tensors: 2 kv heads instead of 1.
  std::string bytes = TinyLlama().Bytes();
  const std::string key = "llama.attention.head_count_kv";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  bytes[at + key.size() + 4] = 2;  // the u32 value after the type
  absl::StatusOr<Model> m = ParseModel(bytes);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("blk.0.attn_k.weight"), std::string::npos) << m.status();
}

TEST(GgufLlamaTest, RejectsBadConfigs) {
  auto with = [](const std::string& key, uint32_t v) {
    std::string bytes = TinyLlama().Bytes();
    const size_t at = bytes.find(key);
    EXPECT_NE(at, std::string::npos);
    std::memcpy(bytes.data() + at + key.size() + 4, &v, 4);
    return ParseModel(bytes);
  };
  EXPECT_FALSE(with("llama.attention.head_count_kv", 3).ok());  // 2 % 3 != 0
  EXPECT_FALSE(with("llama.attention.head_count", 0).ok());
  absl::StatusOr<Model> m = with("llama.block_count", 1000000000);
  EXPECT_NE(m.status().message().find("tensors"), std::string::npos) << m.status();
  m = with("llama.block_count", 3);  // 21 tensors, 30 needed
  EXPECT_NE(m.status().message().find("need 30 tensors"), std::string::npos) << m.status();
  m = with("tokenizer.ggml.bos_token_id", 5);
  EXPECT_NE(m.status().message().find("bos_token_id"), std::string::npos) << m.status();
  m = with("llama.rope.freq_base", 0x7FC00000u);  // NaN
  EXPECT_NE(m.status().message().find("rope_theta"), std::string::npos) << m.status();

  std::string bytes = TinyLlama().Bytes();
  std::string renamed = bytes;
  renamed[renamed.find("blk.1.ffn_up.weight") + 10] = 'q';
  m = ParseModel(renamed);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("blk.1.ffn_up.weight"), std::string::npos) << m.status();

  const size_t arch = bytes.find("general.architecture");
  std::memcpy(bytes.data() + arch + 20 + 4 + 8, "gpt2!", 5);
  m = ParseModel(bytes);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(m.status().message().find("gpt2!"), std::string::npos) << m.status();
}

TEST(GgufLlamaTest, ReadsRopeFrequencyFactorsAndLinearScaling) {
  // Llama 3.1 stores per-pair frequency divisors as rope_freqs.weight
  // (head_dim / 2 = 1 here); linear scaling divides every frequency.
  auto build = [](const std::string& scaling, float factor, float freq) {
    GgufWriter w = TinyLlama().Writer();
    w.Str("llama.rope.scaling.type", scaling).F32("llama.rope.scaling.factor", factor);
    w.Tensor("rope_freqs.weight", {1}, 0, F32Bytes({freq}));
    return ParseModel(w.Build());
  };
  absl::StatusOr<Model> m = build("linear", 8.0f, 4.0f);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FLOAT_EQ(m->config.rope_freq_scale, 0.125f);
  EXPECT_EQ(m->config.rope_freq_factors, std::vector<float>{4.0f});
  m = build("none", 1.0f, 1.0f);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.rope_freq_scale, 1.0f);
  m = build("yarn", 4.0f, 1.0f);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(m.status().message().find("yarn"), std::string::npos) << m.status();
  m = build("linear", 0.5f, 1.0f);
  EXPECT_NE(m.status().message().find("rope.scaling.factor"), std::string::npos) << m.status();
  m = build("none", 1.0f, 0.0f);
  EXPECT_NE(m.status().message().find("frequency factor"), std::string::npos) << m.status();
}

TEST(GgufModelConfigTest, ValidateRejectsAbsurdConfigs) {
  ModelConfig c;
  c.dim = 64, c.hidden_dim = 172, c.n_layers = 5, c.n_heads = 8, c.n_kv_heads = 4;
  c.head_dim = 8, c.vocab_size = 512, c.max_seq_len = 512;
  ASSERT_TRUE(c.Validate().ok());
  ModelConfig b = c;
  b.n_kv_heads = 3;
  EXPECT_FALSE(b.Validate().ok());
  b = c;
  b.max_seq_len = 0;
  EXPECT_FALSE(b.Validate().ok());
  b = c;
  b.dim = 1 << 30, b.vocab_size = 1 << 30;  // 2^60 embedding elements
  EXPECT_FALSE(b.Validate().ok());
  b = c;
  b.n_heads = 1 << 20, b.n_kv_heads = 1 << 20, b.head_dim = 1 << 20;  // q_dim overflows int32
  EXPECT_FALSE(b.Validate().ok());
  b = c;
  b.n_layers = std::numeric_limits<int32_t>::max(), b.dim = 1 << 16, b.hidden_dim = 1 << 16;
  EXPECT_FALSE(b.Validate().ok());
  b = c;
  b.rope_theta = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(b.Validate().ok());
  b = c;
  b.norm_eps = std::nanf("");
  EXPECT_FALSE(b.Validate().ok());
  b = c;
  b.head_dim = 7;
  EXPECT_FALSE(b.Validate().ok());
}

TEST(GgufModelConfigTest, AlibiSlopesFollowTheAlibiPaperAndLlamaCpp) {
  ModelConfig c;
  c.positions = PositionKind::kAlibi;
  c.max_alibi_bias = 8.0f;
  c.n_heads = 8;  // a power of two: 2^-1 .. 2^-8
  std::vector<float> slopes = c.AlibiSlopes();
  ASSERT_EQ(slopes.size(), 8u);
  for (int h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(slopes[h], std::exp2(-(h + 1.0f))) << h;
  c.n_heads = 12;  // 8 of the 8-head series, then every other one of the 16-head series
  slopes = c.AlibiSlopes();
  ASSERT_EQ(slopes.size(), 12u);
  EXPECT_FLOAT_EQ(slopes[7], std::exp2(-8.0f));
  for (int h = 8; h < 12; ++h) EXPECT_FLOAT_EQ(slopes[h], std::exp2(-0.5f - (h - 8))) << h;
}

TEST(GgufRealFileTest, LoadsSynthMptAsAlibiLayerNormGelu) {
  REQUIRE_SHARED("models/synthetic/synth-mpt-F32.gguf");
  absl::StatusOr<Model> m = LoadModel(SharedPath("models/synthetic/synth-mpt-F32.gguf"));
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.arch, "mpt");
  EXPECT_TRUE(c.alibi());
  EXPECT_EQ(c.norm, NormKind::kLayer);
  EXPECT_EQ(c.ffn, FfnKind::kGelu);
  EXPECT_EQ(c.max_alibi_bias, 8.0f);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_TRUE(c.tied_classifier);
  const LayerWeights& l = m->weights.layers[1];
  EXPECT_TRUE(l.w1.empty());
  EXPECT_TRUE(l.attn_norm_bias.empty());
  // The fused QKV rows, split in place: k starts q_dim rows into the same bytes.
  EXPECT_EQ(l.wk.data, l.wq.data + c.q_dim() * l.wq.row_bytes());
  EXPECT_EQ(l.wv.data, l.wk.data + c.kv_dim() * l.wk.row_bytes());
}

// --- Real files --------------------------------------------------------------

TEST(GgufRealFileTest, LoadsStories260K) {
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  absl::StatusOr<Model> m = LoadModel(SharedPath("models/stories260K/stories260K.gguf"));
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  // The GGUF conversion declares llama.context_length 2048; the llama2.c file
  // says seq_len 512 (the length it was trained with).
  EXPECT_EQ(c.max_seq_len, 2048);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  ASSERT_TRUE(m->vocab.has_value());
  EXPECT_EQ(m->vocab->type, VocabType::kSentencePiece);
  EXPECT_EQ(m->vocab->size(), 512);
  EXPECT_EQ(m->vocab->bos_id, 1);
  EXPECT_EQ(m->vocab->eos_id, 2);
  EXPECT_EQ(m->vocab->unk_id, 0);
  EXPECT_EQ(m->vocab->pad_id, -1);
  EXPECT_EQ(m->vocab->tokens[1], "<s>");
}

template <typename T>
bool SameBytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

bool SameBytes(const Weight& a, const Weight& b) {
  return a.type == b.type && a.rows == b.rows && a.cols == b.cols && a.bytes() == b.bytes() &&
         std::memcmp(a.data, b.data, static_cast<size_t>(a.bytes())) == 0;
}

TEST(GgufRealFileTest, Stories260KWeightsMatchTheLlama2cCheckpoint) {
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  absl::StatusOr<Model> g = LoadModel(SharedPath("models/stories260K/stories260K.gguf"));
  absl::StatusOr<Model> b = LoadModel(SharedPath("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const ModelWeights& gw = g->weights;
  const ModelWeights& bw = b->weights;
  EXPECT_TRUE(SameBytes(gw.token_embedding, bw.token_embedding));
  ASSERT_EQ(gw.layers.size(), bw.layers.size());
  for (size_t l = 0; l < gw.layers.size(); ++l) {
    const LayerWeights& x = gw.layers[l];
    const LayerWeights& y = bw.layers[l];
    EXPECT_TRUE(SameBytes(x.attn_norm, y.attn_norm)) << l;
    EXPECT_TRUE(SameBytes(x.wq, y.wq)) << l;
    EXPECT_TRUE(SameBytes(x.wk, y.wk)) << l;
    EXPECT_TRUE(SameBytes(x.wv, y.wv)) << l;
    EXPECT_TRUE(SameBytes(x.wo, y.wo)) << l;
    EXPECT_TRUE(SameBytes(x.ffn_norm, y.ffn_norm)) << l;
    EXPECT_TRUE(SameBytes(x.w1, y.w1)) << l;
    EXPECT_TRUE(SameBytes(x.w2, y.w2)) << l;
    EXPECT_TRUE(SameBytes(x.w3, y.w3)) << l;
  }
  EXPECT_TRUE(SameBytes(gw.final_norm, bw.final_norm));
  EXPECT_TRUE(SameBytes(gw.Classifier(), bw.Classifier()));
  EXPECT_TRUE(SameBytes(gw.classifier, gw.token_embedding));  // output.weight == token_embd
}

TEST(GgufRealFileTest, VocabOnlyFilesLoadViaLoadVocab) {
  REQUIRE_SHARED("models/vocab-tests/ggml-vocab-llama-spm.gguf");
  REQUIRE_SHARED("models/vocab-tests/ggml-vocab-gpt-2.gguf");
  absl::StatusOr<Vocab> spm = LoadVocab(SharedPath("models/vocab-tests/ggml-vocab-llama-spm.gguf"));
  ASSERT_TRUE(spm.ok()) << spm.status();
  EXPECT_EQ(spm->type, VocabType::kSentencePiece);
  EXPECT_EQ(spm->size(), 32000);
  EXPECT_EQ(spm->scores.size(), 32000u);
  EXPECT_EQ(spm->token_types.size(), 32000u);
  EXPECT_EQ(spm->bos_id, 1);
  EXPECT_EQ(spm->eos_id, 2);
  EXPECT_EQ(spm->unk_id, 0);
  EXPECT_TRUE(spm->add_bos);

  absl::StatusOr<Vocab> gpt2 = LoadVocab(SharedPath("models/vocab-tests/ggml-vocab-gpt-2.gguf"));
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_EQ(gpt2->type, VocabType::kGpt2);
  EXPECT_EQ(gpt2->size(), 50257);
  EXPECT_EQ(gpt2->merges.size(), 50000u);
  EXPECT_EQ(gpt2->merges[0], "\xC4\xA0 t");  // "Ġ t"
  EXPECT_EQ(gpt2->bos_id, 50256);
  EXPECT_EQ(gpt2->eos_id, 50256);
  EXPECT_TRUE(gpt2->scores.empty());
  EXPECT_FALSE(gpt2->add_space_prefix);

  // Not models: LoadModel says what is missing or unsupported.
  absl::StatusOr<Model> m = LoadModel(SharedPath("models/vocab-tests/ggml-vocab-llama-spm.gguf"));
  EXPECT_NE(m.status().message().find("token_embd.weight"), std::string::npos) << m.status();
  m = LoadModel(SharedPath("models/vocab-tests/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented) << m.status();
}

TEST(GgufRealFileTest, LoadVocabDetectsEachFormat) {
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  REQUIRE_SHARED("models/stories260K/tok512.model");
  for (const char* f : {"models/stories260K/stories260K.gguf", "models/stories260K/tok512.bin",
                        "models/stories260K/tok512.model"}) {
    absl::StatusOr<Vocab> v = LoadVocab(SharedPath(f));
    ASSERT_TRUE(v.ok()) << f << ": " << v.status();
    EXPECT_EQ(v->size(), 512) << f;
    EXPECT_EQ(v->tokens[1], "<s>") << f;
  }
}

TEST(GgufRealFileTest, EveryStories260KHeaderTruncationFails) {
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  absl::StatusOr<std::string> bytes =
      ReadFileBytes(SharedPath("models/stories260K/stories260K.gguf"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_TRUE(gguf::Parse(*bytes).ok());
  // Every cut inside the header and metadata, and a sample through the data.
  for (size_t n = 0; n < bytes->size(); n += n < 16384 ? 1 : 4093) {
    EXPECT_FALSE(gguf::Parse(std::string_view(*bytes).substr(0, n)).ok()) << n;
  }
}

TEST(GgufRealFileTest, MissingFileIsNotFound) {
  const std::string path = "/nonexistent/dir/model.gguf";
  absl::StatusOr<Model> m = LoadModel(path);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find(path), std::string::npos) << m.status();
  EXPECT_EQ(LoadVocab(path).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadFileBytes(path).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(LoadModel("/tmp").ok());
}

}  // namespace
}  // namespace sinkserve
