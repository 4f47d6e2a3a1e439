#include "engine/text/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/model/gguf.h"
#include "engine/model/model_loader.h"
#include "engine/text/stream_decoder.h"
#include "engine/text/unicode.h"
#include "tests/build_flavor.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

using ::sinkserve::testing::SharedPath;

struct TestCase {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's vocab test vectors: `.inp` holds texts each followed by
// "\n__ggml_vocab_test__\n"; `.out` one line of space-separated ids per text.
std::vector<TestCase> LoadVectors(const std::string& base) {
  const std::string inp = ::sinkserve::testing::ReadFile(base + ".inp");
  const std::string out = ::sinkserve::testing::ReadFile(base + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<TestCase> cases;
  for (size_t pos = 0; pos < inp.size();) {
    size_t end = inp.find(sep, pos);
    if (end == std::string::npos) end = inp.size();
    cases.push_back({inp.substr(pos, end - pos), {}});
    pos = end + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  for (size_t i = 0; std::getline(lines, line); ++i) {
    if (i >= cases.size()) {
      ADD_FAILURE() << "more .out lines than .inp texts in " << base;
      break;
    }
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) cases[i].ids.push_back(id);
  }
  return cases;
}

std::unique_ptr<Tokenizer> MakeTokenizer(absl::StatusOr<Vocab> vocab) {
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  if (!vocab.ok()) return nullptr;
  auto tokenizer = Tokenizer::Create(*std::move(vocab));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

// A vocab-test GGUF's vocabulary with the optional keys too (tokenizer.ggml.pre,
// EOT/EOM ids). ReadGgufVocabExtras is idempotent, so this stays right once
// gguf::VocabFromGguf calls it itself.
absl::StatusOr<Vocab> LoadGgufVocab(const std::string& path) {
  const std::string bytes = ::sinkserve::testing::ReadFile(path);
  absl::StatusOr<gguf::File> file = gguf::Parse(bytes);
  if (!file.ok()) return file.status();
  absl::StatusOr<Vocab> vocab = gguf::VocabFromGguf(*file);
  if (!vocab.ok()) return vocab.status();
  if (absl::Status s = ReadGgufVocabExtras(*file, *vocab); !s.ok()) return s;
  return vocab;
}

std::unique_ptr<Tokenizer> LoadSpmModel(const std::string& relative) {
  return MakeTokenizer(ParseSentencePieceModel(::sinkserve::testing::ReadFile(SharedPath(relative))));
}

std::unique_ptr<Tokenizer> LoadLlama2cBin(const std::string& relative) {
  return MakeTokenizer(ParseLlama2cTokenizer(::sinkserve::testing::ReadFile(SharedPath(relative))));
}

std::string Decode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string text;
  int32_t prev = -1;
  for (int32_t id : ids) {
    text += tok.DecodeToken(prev, id);
    prev = id;
  }
  return text;
}

std::string Join(const std::vector<int32_t>& ids) { return absl::StrJoin(ids, " "); }

// Runs every vector; returns how many passed and reports each failure.
int RunVectors(const Tokenizer& tok, const std::vector<TestCase>& cases) {
  int passed = 0;
  for (const TestCase& c : cases) {
    const std::vector<int32_t> got = tok.Encode(c.text, /*add_bos=*/false);
    if (got == c.ids) {
      ++passed;
    } else {
      ADD_FAILURE() << "text \"" << c.text << "\"\n  want: " << Join(c.ids) << "\n  got:  " << Join(got);
    }
  }
  return passed;
}

TEST(TokenizerSpm, Llama2cPromptOnceUponATime) {
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  std::vector<std::unique_ptr<Tokenizer>> toks;
  toks.push_back(LoadLlama2cBin("models/stories260K/tok512.bin"));
  toks.push_back(LoadSpmModel("models/stories260K/tok512.model"));
  for (const auto& tok : toks) {
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->Encode("Once upon a time", /*add_bos=*/true),
              (std::vector<int32_t>{1, 403, 407, 261, 378}));
    EXPECT_EQ(Decode(*tok, {1, 403, 407, 261, 378}), "Once upon a time");
  }
}

TEST(TokenizerSpm, GoldenPromptTokensFromRunC) {
  REQUIRE_SHARED("models/golden/stories260K_once_n64.ids");
  auto tok = LoadLlama2cBin("models/stories260K/tok512.bin");
  ASSERT_NE(tok, nullptr);
  std::ifstream in(SharedPath("models/golden/stories260K_once_n64.ids"));
  std::string word;
  in >> word;
  ASSERT_EQ(word, "PROMPT_TOKENS");
  std::string line;
  std::getline(in, line);
  std::istringstream ids(line);
  std::vector<int32_t> want;
  for (int32_t id; ids >> id;) want.push_back(id);
  EXPECT_EQ(tok->Encode("Once upon a time", true), want);
}

// The llama-spm vectors were made with the Llama tokenizer; the official
// tokenizer.model and the llama2.c export must reproduce them too.
TEST(TokenizerSpm, Llama2TokenizerFilesPassLlamaSpmVectors) {
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  REQUIRE_SHARED("models/vocab-tests/ggml-vocab-llama-spm.gguf.inp");
  const auto cases = LoadVectors(SharedPath("models/vocab-tests/ggml-vocab-llama-spm.gguf"));
  ASSERT_GT(cases.size(), 40u);
  for (const char* file : {"models/llama2-tokenizer/tokenizer.model", "models/llama2-tokenizer/tokenizer.bin"}) {
    auto tok = std::string(file).ends_with(".bin") ? LoadLlama2cBin(file) : LoadSpmModel(file);
    ASSERT_NE(tok, nullptr);
    const int passed = RunVectors(*tok, cases);
    EXPECT_EQ(passed, static_cast<int>(cases.size()));
    std::printf("[ vectors  ] %s: %d/%zu llama-spm vectors\n", file, passed, cases.size());
  }
}

TEST(TokenizerSpm, EmptyTextAndBos) {
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  auto tok = LoadSpmModel("models/llama2-tokenizer/tokenizer.model");
  ASSERT_NE(tok, nullptr);
  EXPECT_TRUE(tok->Encode("", false).empty());
  EXPECT_EQ(tok->Encode("", true), std::vector<int32_t>{1});
  EXPECT_EQ(tok->Encode("Hello", true).front(), 1);
}

TEST(TokenizerSpm, DecodeRoundTrips) {
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  auto tok = LoadSpmModel("models/llama2-tokenizer/tokenizer.model");
  ASSERT_NE(tok, nullptr);
  for (std::string text : {"Hello world", "  leading spaces", "tabs\tand\nnewlines\n\n",
                           "emoji \xF0\x9F\xA6\x99 and CJK \xE6\x88\x91\xE6\x83\xB3", "<s> is plain text",
                           "invalid \xFF\xC3 bytes"}) {
    const std::vector<int32_t> ids = tok->Encode(text, /*add_bos=*/true);
    EXPECT_EQ(Decode(*tok, ids), text) << Join(ids);
  }
  // Random bytes (mostly invalid UTF-8) survive through byte fallback.
  std::mt19937 rng(7);
  for (int iter = 0; iter < 200; ++iter) {
    std::string random(1 + rng() % 64, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    EXPECT_EQ(Decode(*tok, tok->Encode(random, true)), random);
  }
  // "<s>" in the text must not become the BOS token.
  const std::vector<int32_t> ids = tok->Encode("<s>", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 0) << Join(ids);
}

TEST(TokenizerSpm, DecodeTokenRules) {
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  auto tok = LoadSpmModel("models/llama2-tokenizer/tokenizer.model");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->DecodeToken(-1, 1), "");        // BOS
  EXPECT_EQ(tok->DecodeToken(-1, 2), "");        // EOS
  EXPECT_EQ(tok->DecodeToken(-1, 3 + 0x0A), "\n");  // <0x0A>
  EXPECT_EQ(tok->DecodeToken(-1, 3 + 0xE2), "\xE2");
  EXPECT_EQ(tok->DecodeToken(-1, -5), "");
  EXPECT_EQ(tok->DecodeToken(-1, 32000), "");
  const int32_t hello = tok->Encode("Hello", false).at(0);  // "▁Hello"
  EXPECT_EQ(tok->DecodeToken(-1, hello), " Hello");
  EXPECT_EQ(tok->DecodeToken(1, hello), "Hello");  // dummy prefix dropped after BOS
  EXPECT_EQ(tok->DecodeToken(2, hello), " Hello");
}

TEST(TokenizerSpm, ByteFallbackForUnknownCharacters) {
  REQUIRE_SHARED("models/stories260K/tok512.model");
  auto tok = LoadSpmModel("models/stories260K/tok512.model");
  ASSERT_NE(tok, nullptr);
  // U+1F999 is not among 512 pieces: its four bytes become <0xF0><0x9F><0xA6><0x99>.
  const std::vector<int32_t> ids = tok->Encode("\xF0\x9F\xA6\x99", false);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(std::vector<int32_t>(ids.end() - 4, ids.end()),
            (std::vector<int32_t>{3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99}));
}

TEST(TokenizerSpm, LongInputIsFast) {
  REQUIRE_SHARED("models/llama2-tokenizer/tokenizer.model");
  auto tok = LoadSpmModel("models/llama2-tokenizer/tokenizer.model");
  ASSERT_NE(tok, nullptr);
  std::string text;
  const std::string para = "Once upon a time, there was a little girl named Lily. \xE6\x88\x91\xE6\x83\xB3 \n";
  while (text.size() < (2u << 20)) text += para;
  std::string no_spaces(1u << 20, 'a');  // one 1 MB "word": merges must not go quadratic
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok->Encode(text, true);
  const std::vector<int32_t> ids2 = tok->Encode(no_spaces, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (testing::kTimingHolds) {  // not in unoptimized or sanitizer builds
    EXPECT_LT(seconds, 3.0);
  }
  std::printf("[ timing   ] SPM: 2 MB + 1 MB unbroken word in %.3f s\n", seconds);
  EXPECT_EQ(Decode(*tok, ids), text);
  EXPECT_EQ(Decode(*tok, ids2), " " + no_spaces);
}

TEST(TokenizerCreate, RejectsInconsistentVocabularies) {
  Vocab empty;
  EXPECT_FALSE(Tokenizer::Create(empty).ok());

  Vocab v;
  v.tokens = {"<unk>", "<s>", "</s>", "a"};
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  EXPECT_TRUE(Tokenizer::Create(v).ok());

  Vocab bad_scores = v;
  bad_scores.scores = {0.0f, 1.0f};
  EXPECT_EQ(Tokenizer::Create(bad_scores).status().code(), absl::StatusCode::kInvalidArgument);

  Vocab bad_bos = v;
  bad_bos.bos_id = 4;
  auto s = Tokenizer::Create(bad_bos);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("bos"), std::string::npos) << s.status();

  Vocab bad_eos = v;
  bad_eos.eos_id = -2;
  EXPECT_FALSE(Tokenizer::Create(bad_eos).ok());

  Vocab bad_types = v;
  bad_types.token_types = {TokenType::kNormal};
  EXPECT_FALSE(Tokenizer::Create(bad_types).ok());

  Vocab gpt2 = v;
  gpt2.type = VocabType::kGpt2;
  EXPECT_FALSE(Tokenizer::Create(gpt2).ok());  // no merges
  gpt2.merges = {"a a"};
  EXPECT_TRUE(Tokenizer::Create(gpt2).ok());
  for (std::string merge : {"aa", " a", "a ", "a b c", ""}) {
    gpt2.merges = {merge};
    EXPECT_FALSE(Tokenizer::Create(gpt2).ok()) << "merge \"" << merge << "\"";
  }
}

// The llama.cpp vocab-test GGUFs with their tokenizer.ggml.pre: every vector
// must match (the count is printed for the record).
struct VectorFile {
  const char* name;  // under models/vocab-tests/
  VocabType type;
  const char* pre;   // tokenizer.ggml.pre in the file
};

// Names the case in test output (instead of the struct's bytes).
void PrintTo(const VectorFile& f, std::ostream* os) { *os << f.name; }

class TokenizerVectors : public ::testing::TestWithParam<VectorFile> {};

TEST_P(TokenizerVectors, EveryVectorMatches) {
  const VectorFile& f = GetParam();
  const std::string relative = std::string("models/vocab-tests/") + f.name;
  REQUIRE_SHARED(relative);
  REQUIRE_SHARED(relative + ".inp");
  absl::StatusOr<Vocab> vocab = LoadGgufVocab(SharedPath(relative));
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->pre, f.pre);
  auto tok = MakeTokenizer(*std::move(vocab));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab().type, f.type);
  const auto cases = LoadVectors(SharedPath(relative));
  ASSERT_GT(cases.size(), 40u);
  const int passed = RunVectors(*tok, cases);
  EXPECT_EQ(passed, static_cast<int>(cases.size()));
  std::printf("[ vectors  ] %s (pre '%s'): %d/%zu\n", f.name, f.pre, passed, cases.size());
  if (f.type == VocabType::kGpt2) {
    // Byte-level BPE is lossless: decoding gives back every input exactly.
    for (const TestCase& c : cases) EXPECT_EQ(Decode(*tok, c.ids), c.text);
  }
}

INSTANTIATE_TEST_SUITE_P(VocabTests, TokenizerVectors,
                         ::testing::Values(VectorFile{"ggml-vocab-llama-spm.gguf", VocabType::kSentencePiece, "default"},
                                           VectorFile{"ggml-vocab-gpt-2.gguf", VocabType::kGpt2, "gpt-2"},
                                           VectorFile{"ggml-vocab-refact.gguf", VocabType::kGpt2, "refact"}),
                         [](const ::testing::TestParamInfo<VectorFile>& info) {
                           std::string name;
                           for (const char* c = info.param.name + 11; *c != '.'; ++c) {  // after "ggml-vocab-"
                             name += std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_';
                           }
                           return name;
                         });

// LoadVocab (the path the tools take) reads the same vocabulary.
TEST(TokenizerVectorsLoadVocab, Gpt2GgufThroughLoadVocab) {
  REQUIRE_SHARED("models/vocab-tests/ggml-vocab-gpt-2.gguf");
  auto tok = MakeTokenizer(LoadVocab(SharedPath("models/vocab-tests/ggml-vocab-gpt-2.gguf")));
  ASSERT_NE(tok, nullptr);
  const auto cases = LoadVectors(SharedPath("models/vocab-tests/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(RunVectors(*tok, cases), static_cast<int>(cases.size()));
}

// Refact's pre-tokenizer gives every digit its own token.
TEST(TokenizerVectorsLoadVocab, RefactSplitsDigits) {
  REQUIRE_SHARED("models/vocab-tests/ggml-vocab-refact.gguf");
  auto refact = MakeTokenizer(LoadGgufVocab(SharedPath("models/vocab-tests/ggml-vocab-refact.gguf")));
  ASSERT_NE(refact, nullptr);
  const std::vector<int32_t> ids = refact->Encode("x 1234", false);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(Decode(*refact, {id}));
  EXPECT_EQ(pieces, (std::vector<std::string>{"x", " ", "1", "2", "3", "4"})) << Join(ids);
}

TEST(TokenizerGpt2, SpecialTokensArePlainTextAndDecodeEmpty) {
  REQUIRE_SHARED("models/vocab-tests/ggml-vocab-gpt-2.gguf");
  auto tok = MakeTokenizer(LoadVocab(SharedPath("models/vocab-tests/ggml-vocab-gpt-2.gguf")));
  ASSERT_NE(tok, nullptr);
  const int32_t eot = tok->eos_id();
  ASSERT_GE(eot, 0);
  const std::vector<int32_t> ids = tok->Encode("<|endoftext|>", false);
  EXPECT_GT(ids.size(), 1u);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), eot), 0) << Join(ids);
  EXPECT_EQ(Decode(*tok, ids), "<|endoftext|>");
  EXPECT_EQ(tok->DecodeToken(-1, eot), "");
  EXPECT_EQ(tok->DecodeToken(-1, tok->size()), "");
  EXPECT_EQ(tok->DecodeToken(-1, 220), " ");   // "Ġ"
  EXPECT_EQ(tok->DecodeToken(-1, 198), "\n");  // "Ċ"
  // Invalid UTF-8 and a long input survive a round trip.
  const std::string bad = "abc \xFF\xFE x\xC3";
  EXPECT_EQ(Decode(*tok, tok->Encode(bad, false)), bad);
  std::string text;
  while (text.size() < (2u << 20)) text += "Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91\xE6\x83\xB3 1314151\n";
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> long_ids = tok->Encode(text, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (testing::kTimingHolds) {  // not in unoptimized or sanitizer builds
    EXPECT_LT(seconds, 3.0);
  }
  std::printf("[ timing   ] GPT-2: 2 MB in %.3f s\n", seconds);
  EXPECT_EQ(Decode(*tok, long_ids), text);

  // Random bytes (mostly invalid UTF-8) round-trip too.
  std::mt19937 rng(7);
  for (int iter = 0; iter < 200; ++iter) {
    std::string random(rng() % 64, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    EXPECT_EQ(Decode(*tok, tok->Encode(random, false)), random);
  }
}

// A tiny synthetic GPT-2 vocabulary exercises the merge order exactly.
TEST(TokenizerGpt2, MergesByRankOnSyntheticVocab) {
  Vocab v;
  v.type = VocabType::kGpt2;
  ByteUnicodeMap map;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(map.Encode(static_cast<uint8_t>(b)));
  const std::string sp = map.Encode(' ');  // "Ġ"
  v.tokens.push_back("ab");       // 256
  v.tokens.push_back("bc");       // 257
  v.tokens.push_back("abc");      // 258
  v.tokens.push_back(sp + "a");   // 259
  v.merges = {"b c", "a b", "a bc", sp + " a"};
  auto tok = MakeTokenizer(v);
  ASSERT_NE(tok, nullptr);
  // "b c" outranks "a b": abc -> a|bc -> abc.
  EXPECT_EQ(tok->Encode("abc", false), (std::vector<int32_t>{258}));
  EXPECT_EQ(tok->Encode("ab", false), (std::vector<int32_t>{256}));
  EXPECT_EQ(tok->Encode("x abc", false), (std::vector<int32_t>{'x', ' ', 258}));  // "b c", then "a bc"; "Ġ a" too late
  EXPECT_EQ(tok->Encode(" a", false), (std::vector<int32_t>{259}));
  EXPECT_EQ(Decode(*tok, tok->Encode("x abc \xFF", false)), "x abc \xFF");
}

}  // namespace
}  // namespace sinkserve

namespace sinkserve {
namespace {

bool IsValidUtf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const Utf8Char ch = DecodeUtf8(s, pos);
    if (ch.codepoint == kInvalidCodepoint) return false;
    pos += ch.length;
  }
  return true;
}

constexpr std::string_view kFffd = "\xEF\xBF\xBD";

// Streams `ids` through a StreamDecoder; checks every piece is valid UTF-8
// and returns the concatenation including Flush().
std::string StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids,
                      std::vector<std::string>* pieces = nullptr) {
  StreamDecoder decoder(tok);
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = decoder.Push(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << "piece for token " << id;
    if (pieces) pieces->push_back(piece);
    text += piece;
  }
  const std::string rest = decoder.Flush();
  EXPECT_TRUE(IsValidUtf8(rest));
  if (pieces) pieces->push_back(rest);
  return text + rest;
}

TEST(StreamDecoder, HoldsSplitCharactersFromByteFallback) {
  REQUIRE_SHARED("models/stories260K/tok512.model");
  auto tok = LoadSpmModel("models/stories260K/tok512.model");
  ASSERT_NE(tok, nullptr);
  // U+1F999 is byte-fallback in this 512-piece vocabulary: four byte tokens.
  const std::string text = "Hi \xF0\x9F\xA6\x99 there \xC3\xB1 \xE6\x88\x91!";
  const std::vector<int32_t> ids = tok->Encode(text, /*add_bos=*/true);
  std::vector<std::string> pieces;
  EXPECT_EQ(StreamAll(*tok, ids, &pieces), text);
  EXPECT_EQ(StreamAll(*tok, ids), Decode(*tok, ids));
  // The emoji's first three byte tokens produce nothing; the fourth produces it whole.
  const auto first = std::find(ids.begin(), ids.end(), 3 + 0xF0);
  ASSERT_NE(first, ids.end());
  const size_t i = static_cast<size_t>(first - ids.begin());
  ASSERT_EQ(ids[i + 3], 3 + 0x99);
  EXPECT_EQ(pieces[i], "");
  EXPECT_EQ(pieces[i + 1], "");
  EXPECT_EQ(pieces[i + 2], "");
  EXPECT_EQ(pieces[i + 3], "\xF0\x9F\xA6\x99");
  EXPECT_EQ(pieces.back(), "");  // nothing left for Flush
}

TEST(StreamDecoder, DropsPrefixSpaceAfterBosAndReset) {
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  auto tok = LoadLlama2cBin("models/stories260K/tok512.bin");
  ASSERT_NE(tok, nullptr);
  StreamDecoder decoder(*tok);
  EXPECT_EQ(decoder.Push(1), "");
  EXPECT_EQ(decoder.Push(403), "Once");
  EXPECT_EQ(decoder.Push(407), " upon");
  decoder.Reset();
  EXPECT_EQ(decoder.Push(403), " Once");
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementCharacters) {
  REQUIRE_SHARED("models/stories260K/tok512.model");
  auto tok = LoadSpmModel("models/stories260K/tok512.model");
  ASSERT_NE(tok, nullptr);
  auto byte = [](int b) { return 3 + b; };
  const int32_t a = byte('A');
  {
    StreamDecoder d(*tok);
    EXPECT_EQ(d.Push(byte(0xFF)), kFffd);  // can never start a character: not held
    EXPECT_EQ(d.Push(byte(0xE2)), "");     // may still complete
    EXPECT_EQ(d.Push(byte(0x82)), "");
    EXPECT_EQ(d.Push(a), std::string(kFffd) + "A");  // E2 82 A: one U+FFFD for the subpart
    EXPECT_EQ(d.Flush(), "");
  }
  {
    StreamDecoder d(*tok);
    EXPECT_EQ(d.Push(byte(0xF0)), "");
    EXPECT_EQ(d.Push(byte(0x9F)), "");
    EXPECT_EQ(d.Flush(), kFffd);  // incomplete at the end
    EXPECT_EQ(d.Push(a), "A");
  }
  {
    StreamDecoder d(*tok);
    // Overlong E0 80 and surrogate ED A0 are rejected at their second byte.
    EXPECT_EQ(d.Push(byte(0xE0)), "");
    EXPECT_EQ(d.Push(byte(0x80)), std::string(kFffd) + std::string(kFffd));
    EXPECT_EQ(d.Push(byte(0xED)), "");
    EXPECT_EQ(d.Push(byte(0xA0)), std::string(kFffd) + std::string(kFffd));
    EXPECT_EQ(d.Push(byte(0xC3)), "");
    EXPECT_EQ(d.Push(byte(0xA9)), "\xC3\xA9");
  }
}

TEST(StreamDecoder, Gpt2MultiTokenCharacters) {
  REQUIRE_SHARED("models/vocab-tests/ggml-vocab-gpt-2.gguf");
  auto tok = MakeTokenizer(LoadVocab(SharedPath("models/vocab-tests/ggml-vocab-gpt-2.gguf")));
  ASSERT_NE(tok, nullptr);
  const std::string text = "\xF0\x9F\x9A\x80 (normal) \xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F "
                           "\xE1\x9E\x80\xE1\x9E\xB6\xE1\x9E\x93\xE1\x9F\x8B \xE6\x88\x91\xE6\x83\xB3";
  const std::vector<int32_t> ids = tok->Encode(text, false);
  std::vector<std::string> pieces;
  EXPECT_EQ(StreamAll(*tok, ids, &pieces), text);
  // At least one token boundary falls inside a character, so some piece was held.
  int invalid_alone = 0;
  for (int32_t id : ids) invalid_alone += !IsValidUtf8(tok->DecodeToken(-1, id));
  EXPECT_GT(invalid_alone, 0);
}

}  // namespace
}  // namespace sinkserve
