// llama2.c tokenizer.bin and SentencePiece .model parsers: real files agree
// with each other, and hostile inputs give errors, never crashes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/model/model_loader.h"
#include "engine/text/tokenizer.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

using ::sinkserve::testing::SharedPath;

void ExpectSameVocab(const Vocab& a, const Vocab& b) {
  ASSERT_EQ(a.tokens.size(), b.tokens.size());
  int token_mismatches = 0, score_mismatches = 0, type_mismatches = 0;
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    token_mismatches += a.tokens[i] != b.tokens[i];
    score_mismatches += a.scores[i] != b.scores[i];
    type_mismatches += a.token_types[i] != b.token_types[i];
    if (a.tokens[i] != b.tokens[i] && token_mismatches < 5) {
      ADD_FAILURE() << "token " << i << ": \"" << a.tokens[i] << "\" vs \"" << b.tokens[i] << "\"";
    }
  }
  EXPECT_EQ(token_mismatches, 0);
  EXPECT_EQ(score_mismatches, 0);
  EXPECT_EQ(type_mismatches, 0);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  EXPECT_EQ(a.unk_id, b.unk_id);
  EXPECT_EQ(a.add_space_prefix, b.add_space_prefix);
}

TEST(VocabFile, Stories260KBinAndModelAgree) {
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  REQUIRE_SHARED("models/stories260K/tok512.model");
  auto bin = ParseLlama2cTokenizer(::sinkserve::testing::ReadFile(SharedPath("models/stories260K/tok512.bin")), 512);
  auto model = ParseSentencePieceModel(::sinkserve::testing::ReadFile(SharedPath("models/stories260K/tok512.model")));
  ASSERT_TRUE(bin.ok()) << bin.status();
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(bin->size(), 512);
  ExpectSameVocab(*bin, *model);
  EXPECT_EQ(model->tokens[1], "<s>");
  EXPECT_EQ(model->tokens[2], "</s>");
  EXPECT_EQ(model->token_types[0], TokenType::kUnknown);
  EXPECT_EQ(model->token_types[1], TokenType::kControl);
  EXPECT_EQ(model->token_types[3 + 0x0A], TokenType::kByte);
  EXPECT_EQ(model->tokens[3 + 0x0A], "<0x0A>");
  EXPECT_EQ(model->token_types[300], TokenType::kNormal);
  EXPECT_EQ(model->pad_id, -1);  // stored as a 10-byte negative varint or defaulted
}

TEST(VocabFile, Llama2BinAndModelAgree) {
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.bin");
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  auto bin = ParseLlama2cTokenizer(::sinkserve::testing::ReadFile(SharedPath("models/llama2-tokenizer/tokenizer.bin")));
  auto model = ParseSentencePieceModel(::sinkserve::testing::ReadFile(SharedPath("models/llama2-tokenizer/tokenizer.model")));
  ASSERT_TRUE(bin.ok()) << bin.status();
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->size(), 32000);
  ExpectSameVocab(*bin, *model);
  EXPECT_EQ(model->tokens[29871], "\xE2\x96\x81");  // "▁"
}

TEST(VocabFile, Llama2cExpectedSizeMismatch) {
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  auto bin = ParseLlama2cTokenizer(::sinkserve::testing::ReadFile(SharedPath("models/stories260K/tok512.bin")), 32000);
  ASSERT_FALSE(bin.ok());
  EXPECT_NE(bin.status().message().find("32000"), std::string::npos) << bin.status();
}

// ---- llama2.c tokenizer.bin, synthetic -------------------------------------

void PutI32(std::string& out, int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void PutF32(std::string& out, float v) { out.append(reinterpret_cast<const char*>(&v), 4); }

// A 5-token file; `boundaries` gets the byte offsets where a record ends.
std::string SyntheticLlama2c(std::vector<size_t>* boundaries) {
  std::string out;
  PutI32(out, 8);
  const std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n", "<0x41>", " hi"};
  for (size_t i = 0; i < pieces.size(); ++i) {
    PutF32(out, -static_cast<float>(i));
    PutI32(out, static_cast<int32_t>(pieces[i].size()));
    out += pieces[i];
    if (boundaries) boundaries->push_back(out.size());
  }
  return out;
}

TEST(VocabFile, Llama2cSyntheticParses) {
  auto vocab = ParseLlama2cTokenizer(SyntheticLlama2c(nullptr), 5);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->tokens,
            (std::vector<std::string>{"<unk>", "<s>", "</s>", "<0x41>", "\xE2\x96\x81hi"}));
  EXPECT_EQ(vocab->scores[4], -4.0f);
  EXPECT_EQ(vocab->token_types,
            (std::vector<TokenType>{TokenType::kUnknown, TokenType::kControl, TokenType::kControl,
                                    TokenType::kByte, TokenType::kNormal}));
  EXPECT_EQ(vocab->bos_id, 1);
  EXPECT_EQ(vocab->eos_id, 2);
  EXPECT_EQ(vocab->unk_id, 0);
}

TEST(VocabFile, Llama2cEveryTruncation) {
  std::vector<size_t> boundaries;
  const std::string full = SyntheticLlama2c(&boundaries);
  for (size_t len = 0; len < full.size(); ++len) {
    const std::string_view prefix(full.data(), len);
    // With the size known, every truncation is an error.
    EXPECT_FALSE(ParseLlama2cTokenizer(prefix, 5).ok()) << "length " << len;
    // Without it, only a cut exactly between records is a (smaller) valid file.
    auto vocab = ParseLlama2cTokenizer(prefix);
    const auto at = std::find(boundaries.begin(), boundaries.end(), len);
    if (at == boundaries.end()) {
      EXPECT_FALSE(vocab.ok()) << "length " << len;
    } else {
      ASSERT_TRUE(vocab.ok()) << vocab.status();
      EXPECT_EQ(vocab->size(), at - boundaries.begin() + 1);
    }
  }
}

TEST(VocabFile, Llama2cHostileLengths) {
  for (int32_t len : {-1, -2147483647 - 1, 2147483647, 6}) {
    std::string file;
    PutI32(file, 8);
    PutF32(file, 0.0f);
    PutI32(file, len);
    file += "abcde";  // 5 bytes: every `len` above lies
    auto vocab = ParseLlama2cTokenizer(file);
    ASSERT_FALSE(vocab.ok()) << "len " << len;
    EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(vocab.status().message().find("length"), std::string::npos) << vocab.status();
  }
  std::string header_only;
  PutI32(header_only, 8);
  EXPECT_FALSE(ParseLlama2cTokenizer(header_only).ok());  // no tokens
  std::string bad_max;
  PutI32(bad_max, -3);
  PutF32(bad_max, 0.0f);
  PutI32(bad_max, 1);
  bad_max += "a";
  EXPECT_FALSE(ParseLlama2cTokenizer(bad_max).ok());
}

// ---- SentencePiece .model, synthetic ---------------------------------------

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void PutTag(std::string& out, uint32_t field, uint32_t wire_type) { PutVarint(out, (field << 3) | wire_type); }
void PutBytes(std::string& out, uint32_t field, std::string_view bytes) {
  PutTag(out, field, 2);
  PutVarint(out, bytes.size());
  out += bytes;
}
void PutFixed32Field(std::string& out, uint32_t field, float v) {
  PutTag(out, field, 5);
  PutF32(out, v);
}
void PutVarintField(std::string& out, uint32_t field, int64_t v) {
  PutTag(out, field, 0);
  PutVarint(out, static_cast<uint64_t>(v));
}

std::string Piece(std::string_view text, float score, int type) {
  std::string p;
  PutBytes(p, 1, text);
  PutFixed32Field(p, 2, score);
  if (type != 1) PutVarintField(p, 3, type);
  return p;
}

// Pieces <unk> <s> </s> <0x41> ▁hi hi, a trainer spec with pad_id -1 (a
// 10-byte varint) and add_dummy_prefix=false, plus unknown fields of every
// wire type. `boundaries` gets the end offset of each top-level field.
std::string SyntheticModel(std::vector<size_t>* boundaries) {
  std::string out;
  auto mark = [&] { if (boundaries) boundaries->push_back(out.size()); };
  std::string unk = Piece("<unk>", 0.0f, 2);
  PutTag(unk, 9, 1);  // unknown fixed64 inside a piece
  unk.append(8, '\x7F');
  PutBytes(out, 1, unk);
  mark();
  PutBytes(out, 1, Piece("<s>", 0.0f, 3));
  mark();
  PutBytes(out, 1, Piece("</s>", 0.0f, 3));
  mark();
  PutVarintField(out, 7, 12345);  // unknown varint at the top level
  mark();
  PutTag(out, 8, 3);  // unknown group holding a varint and a nested group
  PutVarintField(out, 1, 5);
  PutTag(out, 2, 3);
  PutFixed32Field(out, 3, 1.0f);
  PutTag(out, 2, 4);
  PutTag(out, 8, 4);
  mark();
  PutBytes(out, 1, Piece("<0x41>", 0.0f, 6));
  mark();
  PutBytes(out, 1, Piece("\xE2\x96\x81hi", -1.5f, 1));
  mark();
  PutBytes(out, 1, Piece("hi", -2.0f, 1));
  mark();
  std::string trainer;
  PutVarintField(trainer, 3, 2);  // model_type BPE (ignored)
  PutVarintField(trainer, 40, 0);
  PutVarintField(trainer, 41, 1);
  PutVarintField(trainer, 42, 2);
  PutVarintField(trainer, 43, -1);
  PutFixed32Field(trainer, 99, 3.0f);  // unknown fixed32
  PutBytes(out, 2, trainer);
  mark();
  std::string normalizer;
  PutBytes(normalizer, 1, "identity");
  PutVarintField(normalizer, 3, 0);
  PutBytes(out, 3, normalizer);
  mark();
  PutBytes(out, 5, "denormalizer spec, skipped");
  mark();
  return out;
}

TEST(VocabFile, SentencePieceSyntheticParses) {
  auto vocab = ParseSentencePieceModel(SyntheticModel(nullptr));
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->tokens,
            (std::vector<std::string>{"<unk>", "<s>", "</s>", "<0x41>", "\xE2\x96\x81hi", "hi"}));
  EXPECT_EQ(vocab->scores, (std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f, -1.5f, -2.0f}));
  EXPECT_EQ(vocab->token_types,
            (std::vector<TokenType>{TokenType::kUnknown, TokenType::kControl, TokenType::kControl,
                                    TokenType::kByte, TokenType::kNormal, TokenType::kNormal}));
  EXPECT_EQ(vocab->pad_id, -1);
  EXPECT_EQ(vocab->bos_id, 1);
  EXPECT_FALSE(vocab->add_space_prefix);
  // And it drives a tokenizer: no dummy prefix, h+i -> hi, ▁+hi -> ▁hi, "A"
  // through byte fallback, "z" (no piece, no byte token) as <unk>.
  auto tok = Tokenizer::Create(*vocab);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode(" hiAz", true), (std::vector<int32_t>{1, 4, 3, 0}));
  EXPECT_EQ((*tok)->Encode("hi", false), (std::vector<int32_t>{5}));
}

TEST(VocabFile, SentencePieceEveryTruncation) {
  std::vector<size_t> boundaries;
  const std::string full = SyntheticModel(&boundaries);
  for (size_t len = 0; len < full.size(); ++len) {
    auto vocab = ParseSentencePieceModel(std::string_view(full.data(), len));
    // A cut between top-level fields is a shorter but well-formed message;
    // it parses when it still holds a piece and the special ids fit.
    const bool boundary = std::find(boundaries.begin(), boundaries.end(), len) != boundaries.end();
    if (!boundary) {
      EXPECT_FALSE(vocab.ok()) << "length " << len;
    } else if (vocab.ok()) {
      EXPECT_GE(vocab->size(), 1);
    }
  }
  // Cuts right after the first and third piece: the first is too few pieces
  // for bos_id 1, the second is fine.
  EXPECT_FALSE(ParseSentencePieceModel(std::string_view(full.data(), boundaries[0])).ok());
  auto three = ParseSentencePieceModel(std::string_view(full.data(), boundaries[2]));
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(three->size(), 3);
}

absl::Status ParseStatus(const std::string& bytes) { return ParseSentencePieceModel(bytes).status(); }

TEST(VocabFile, SentencePieceHostileInputs) {
  const std::string valid_piece = [] {
    std::string s;
    PutBytes(s, 1, Piece("a", 0.0f, 1));
    return s;
  }();
  auto expect_error = [](const std::string& bytes, const char* needle) {
    const absl::Status s = ParseStatus(bytes);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s << " (wanted \"" << needle << "\")";
  };
  expect_error("", "no pieces");
  expect_error(valid_piece + std::string(10, '\xFF') + "\x01", "varint");  // 11-byte varint
  expect_error(valid_piece + std::string(9, '\xFF') + "\x02", "overflow");  // > 64 bits
  expect_error(valid_piece + "\x80\x80", "truncated varint");
  {
    std::string huge;
    PutTag(huge, 1, 2);
    PutVarint(huge, 0xFFFFFFFFFFFFull);
    expect_error(huge + "abc", "exceeds");
    std::string huge_unknown = valid_piece;
    PutTag(huge_unknown, 77, 2);
    PutVarint(huge_unknown, ~0ull);
    expect_error(huge_unknown, "exceeds");
  }
  {
    std::string s = valid_piece;
    PutVarintField(s, 1, 5);  // pieces must be length-delimited
    expect_error(s, "wire type");
  }
  {
    std::string s = valid_piece;
    PutTag(s, 9, 6);  // wire types 6 and 7 do not exist
    expect_error(s, "invalid wire type");
    s = valid_piece;
    PutTag(s, 9, 7);
    expect_error(s, "invalid wire type");
  }
  {
    std::string s = valid_piece;
    PutTag(s, 9, 4);  // stray end-group
    expect_error(s, "end-group");
    s = valid_piece;
    PutTag(s, 9, 3);  // unterminated group
    PutVarintField(s, 1, 1);
    expect_error(s, "unterminated group");
    s = valid_piece;
    PutTag(s, 9, 3);
    PutTag(s, 10, 4);  // ends the wrong group
    expect_error(s, "mismatched");
    s = valid_piece;
    for (int i = 0; i < 100; ++i) PutTag(s, 9, 3);  // nesting bomb
    expect_error(s, "nested");
  }
  {
    std::string s = valid_piece;
    PutTag(s, 0, 0);  // field number 0 is invalid
    PutVarint(s, 1);
    expect_error(s, "field number");
  }
  {
    std::string piece;
    PutBytes(piece, 1, "x");
    PutVarintField(piece, 3, 9);  // no such piece type
    std::string s;
    PutBytes(s, 1, piece);
    expect_error(s, "type");
    std::string truncated_score;
    PutBytes(truncated_score, 1, "x");
    PutTag(truncated_score, 2, 5);
    truncated_score += "ab";
    s.clear();
    PutBytes(s, 1, truncated_score);
    expect_error(s, "fixed32");
  }
  {
    std::string s = valid_piece;
    std::string trainer;
    PutVarintField(trainer, 41, 7);  // bos_id past the single piece
    PutBytes(s, 2, trainer);
    expect_error(s, "bos_id");
  }
}

// Random corruption of a real model: any result is fine except a crash, and
// an accepted vocabulary must be internally consistent.
TEST(VocabFile, SentencePieceRandomCorruption) {
  REQUIRE_SHARED("models/stories260K/tok512.model");
  const std::string original = ::sinkserve::testing::ReadFile(SharedPath("models/stories260K/tok512.model"));
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::string bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    if (iter % 3 == 0) bytes.resize(rng() % bytes.size());
    auto vocab = ParseSentencePieceModel(bytes);
    if (!vocab.ok()) {
      ++rejected;
      continue;
    }
    EXPECT_EQ(vocab->scores.size(), vocab->tokens.size());
    EXPECT_EQ(vocab->token_types.size(), vocab->tokens.size());
    EXPECT_LT(vocab->bos_id, vocab->size());
  }
  EXPECT_GT(rejected, 0);
}

// ---------------------------------------------------------------------------
// ReadGgufVocabExtras: tokenizer.ggml.pre and the EOT/EOM ids.

// A parsed GGUF holding only metadata, built in memory.
gguf::File MetadataFile(std::vector<std::pair<std::string, gguf::Value>> kvs) {
  gguf::File f;
  for (auto& [key, value] : kvs) {
    f.key_index[key] = f.metadata.size();
    f.metadata.emplace_back(key, std::move(value));
  }
  return f;
}

gguf::Value U32(uint64_t v) { return {gguf::ValueType::kUint32, v}; }
gguf::Value Str(std::string v) { return {gguf::ValueType::kString, std::move(v)}; }

Vocab TenTokens() {
  Vocab v;
  v.type = VocabType::kGpt2;
  for (int i = 0; i < 10; ++i) v.tokens.push_back(std::string(1, static_cast<char>('a' + i)));
  return v;
}

TEST(VocabFile, GgufExtrasReadPreAndEndIds) {
  Vocab v = TenTokens();
  const gguf::File f = MetadataFile({{"tokenizer.ggml.pre", Str("qwen2")},
                                     {"tokenizer.ggml.eot_token_id", U32(7)},
                                     {"tokenizer.ggml.eom_token_id", U32(0xFFFFFFFFu)}});
  ASSERT_TRUE(ReadGgufVocabExtras(f, v).ok());
  EXPECT_EQ(v.pre, "qwen2");
  EXPECT_EQ(v.eot_id, 7);
  EXPECT_EQ(v.eom_id, -1);  // all ones is llama.cpp's "none"
  ASSERT_TRUE(ReadGgufVocabExtras(f, v).ok());  // idempotent
  EXPECT_EQ(v.eot_id, 7);

  Vocab absent = TenTokens();
  ASSERT_TRUE(ReadGgufVocabExtras(MetadataFile({}), absent).ok());
  EXPECT_EQ(absent.pre, "");
  EXPECT_EQ(absent.eot_id, -1);
  EXPECT_EQ(absent.eom_id, -1);
}

TEST(VocabFile, GgufExtrasRejectBadValues) {
  Vocab v = TenTokens();
  absl::Status s = ReadGgufVocabExtras(MetadataFile({{"tokenizer.ggml.pre", U32(3)}}), v);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = ReadGgufVocabExtras(MetadataFile({{"tokenizer.ggml.eot_token_id", U32(10)}}), v);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("eot_token_id"), absl::string_view::npos) << s;
  s = ReadGgufVocabExtras(MetadataFile({{"tokenizer.ggml.eom_token_id", Str("7")}}), v);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(VocabFile, GgufExtrasOfTheVocabTestFiles) {
  for (auto [name, pre] : {std::pair<const char*, const char*>{"ggml-vocab-gpt-2.gguf", "gpt-2"},
                           {"ggml-vocab-refact.gguf", "refact"},
                           {"ggml-vocab-llama-spm.gguf", "default"}}) {
    const std::string relative = std::string("models/vocab-tests/") + name;
    REQUIRE_SHARED(relative);
    const std::string bytes = ::sinkserve::testing::ReadFile(SharedPath(relative));
    absl::StatusOr<gguf::File> f = gguf::Parse(bytes);
    ASSERT_TRUE(f.ok()) << f.status();
    absl::StatusOr<Vocab> v = gguf::VocabFromGguf(*f);
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_TRUE(ReadGgufVocabExtras(*f, *v).ok());
    EXPECT_EQ(v->pre, pre) << name;
    EXPECT_TRUE(Tokenizer::Create(*std::move(v)).ok()) << name;
  }
}

}  // namespace
}  // namespace sinkserve
