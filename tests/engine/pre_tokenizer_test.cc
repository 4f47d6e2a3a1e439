// Byte-level BPE pre-tokenizers: hand-checked splits for every family, the
// unknown-name error, lossless splitting of any bytes, and bounded work on
// hostile input.
#include "engine/text/pre_tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/text/tokenizer.h"
#include "engine/text/unicode.h"
#include "tests/build_flavor.h"

namespace sinkserve {
namespace {

std::vector<std::string> Split(std::string_view name, std::string_view text) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre = PreTokenizer::Create(name);
  EXPECT_TRUE(pre.ok()) << pre.status();
  if (!pre.ok()) return {};
  std::vector<std::string> out;
  for (std::string_view piece : (*pre)->Split(text)) out.emplace_back(piece);
  return out;
}

using Pieces = std::vector<std::string>;

// Every name in SupportedNames() builds, and reports its family.
TEST(PreTokenizer, EverySupportedNameBuilds) {
  const std::vector<std::string> names = absl::StrSplit(PreTokenizer::SupportedNames(), ", ");
  ASSERT_GE(names.size(), 9u);
  for (const std::string& name : names) {
    absl::StatusOr<std::unique_ptr<PreTokenizer>> pre = PreTokenizer::Create(name);
    ASSERT_TRUE(pre.ok()) << name << ": " << pre.status();
    EXPECT_FALSE((*pre)->family().empty());
  }
  EXPECT_EQ((*PreTokenizer::Create(""))->family(), "gpt-2");  // key absent
  EXPECT_EQ((*PreTokenizer::Create("llama-bpe"))->family(), "llama3");
  EXPECT_EQ((*PreTokenizer::Create("refact"))->family(), "starcoder");
  EXPECT_EQ((*PreTokenizer::Create("smollm"))->family(), "starcoder");
  EXPECT_TRUE((*PreTokenizer::Create("llama-bpe"))->ignore_merges());
  EXPECT_FALSE((*PreTokenizer::Create("qwen2"))->ignore_merges());
}

TEST(PreTokenizer, UnknownNameIsOneLineNamingTheValueAndTheChoices) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre = PreTokenizer::Create("klingon-bpe");
  ASSERT_FALSE(pre.ok());
  EXPECT_EQ(pre.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(pre.status().message());
  EXPECT_NE(message.find("'klingon-bpe'"), std::string::npos) << message;
  EXPECT_NE(message.find("tokenizer.ggml.pre"), std::string::npos) << message;
  for (const char* name : {"gpt-2", "llama-bpe", "qwen2", "refact", "smollm", "deepseek-coder", "default"}) {
    EXPECT_NE(message.find(name), std::string::npos) << name << " missing from: " << message;
  }
  EXPECT_EQ(message.find('\n'), std::string::npos);
}

TEST(PreTokenizer, Gpt2) {
  EXPECT_EQ(Split("gpt-2", "Hello world's 12345 !!"), (Pieces{"Hello", " world", "'s", " 12345", " !!"}));
  // A run of spaces leaves its last space to the next word; at the end it stays whole.
  EXPECT_EQ(Split("gpt-2", "a   b  "), (Pieces{"a", "  ", " b", "  "}));
  EXPECT_EQ(Split("gpt-2", "x\n\ny"), (Pieces{"x", "\n", "\n", "y"}));
  EXPECT_EQ(Split("gpt-2", "I'M"), (Pieces{"I", "'", "M"}));  // contractions are lower-case only
  EXPECT_EQ(Split("", "naïve café"), (Pieces{"naïve", " café"}));
}

TEST(PreTokenizer, Llama3GroupsDigitsByThree) {
  for (const char* name : {"llama3", "llama-bpe", "llama-v3"}) {
    EXPECT_EQ(Split(name, "12345"), (Pieces{"123", "45"})) << name;
  }
  EXPECT_EQ(Split("llama-bpe", "I'M 1234567"), (Pieces{"I", "'M", " ", "123", "456", "7"}));
  EXPECT_EQ(Split("llama-bpe", "hello\n\nworld"), (Pieces{"hello", "\n\n", "world"}));
  EXPECT_EQ(Split("llama-bpe", "x!!\n  y"), (Pieces{"x", "!!\n", " ", " y"}));
  EXPECT_EQ(Split("llama-bpe", "(hello)"), (Pieces{"(hello", ")"}));  // one leading non-letter joins
}

TEST(PreTokenizer, Qwen2SplitsEveryDigit) {
  EXPECT_EQ(Split("qwen2", "12345"), (Pieces{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(Split("qwen2", "abc 42's"), (Pieces{"abc", " ", "4", "2", "'s"}));
  EXPECT_EQ(Split("qwen2", "hello\n\nworld"), (Pieces{"hello", "\n\n", "world"}));
}

TEST(PreTokenizer, StarcoderFamilySplitsEveryDigit) {
  for (const char* name : {"starcoder", "refact", "smollm", "command-r"}) {
    EXPECT_EQ(Split(name, "abc 1234"), (Pieces{"abc", " ", "1", "2", "3", "4"})) << name;
  }
  EXPECT_EQ(Split("refact", "x = y's"), (Pieces{"x", " =", " y", "'s"}));
}

TEST(PreTokenizer, DeepseekCoderSplitsEveryDigit) {
  // [\r\n], \s?\p{L}+, \s?\p{P}+ ('=' is a symbol, not punctuation), CJK, \p{N}.
  EXPECT_EQ(Split("deepseek-coder", "x = 42\n"), (Pieces{"x", " = ", "4", "2", "\n"}));
  EXPECT_EQ(Split("deepseek-coder", "f(a, b)"), (Pieces{"f", "(", "a", ",", " b", ")"}));
  EXPECT_EQ(Split("deepseek-coder", "我们abc"), (Pieces{"我们", "abc"}));
}

TEST(PreTokenizer, DeepseekLlmKeepsNumbersWhole) {
  // Its number stage is \p{N}+, not single digits.
  EXPECT_EQ(Split("deepseek-llm", "ab 12345"), (Pieces{"ab", " ", "12345"}));
  EXPECT_EQ(Split("deepseek-llm", "Hello, world!\n"), (Pieces{"Hello", ",", " world", "!", "\n"}));
  EXPECT_EQ(Split("deepseek-llm", "ab  "), (Pieces{"ab", "  "}));  // \s+$
  EXPECT_EQ(Split("deepseek-llm", "中文abc"), (Pieces{"中文", "abc"}));
}

TEST(PreTokenizer, FalconAndDefaultCutNumbersInThrees) {
  EXPECT_EQ(Split("falcon", "a+b 1234"), (Pieces{"a", "+", "b", " ", "123", "4"}));
  EXPECT_EQ(Split("default", "a+b 1234"), (Pieces{"a", "+", "b", " ", "123", "4"}));
  EXPECT_EQ(Split("default", "x, y"), (Pieces{"x", ",", " y"}));
}

// Whatever the bytes, the pieces are non-empty and concatenate to the input.
TEST(PreTokenizer, PiecesConcatenateToAnyInput) {
  const std::vector<std::string> names = absl::StrSplit(PreTokenizer::SupportedNames(), ", ");
  std::mt19937 rng(11);
  const std::string alphabet[] = {"a", "Z", "7", " ", "\n", "\t", "'", "s", "!", "\xC3\xA9", "\xE4\xB8\xAD",
                                  "\xF0\x9F\x98\x81", "\xFF", "\xC3", "\xE2\x80\xA8", "\xC2\xA0", "\xD9\xA3"};
  for (const std::string& name : names) {
    auto pre = *PreTokenizer::Create(name);
    for (int iter = 0; iter < 200; ++iter) {
      std::string text;
      const int n = static_cast<int>(rng() % 40);
      for (int i = 0; i < n; ++i) text += alphabet[rng() % std::size(alphabet)];
      std::string joined;
      for (std::string_view piece : pre->Split(text)) {
        EXPECT_FALSE(piece.empty());
        joined.append(piece);
      }
      ASSERT_EQ(joined, text) << name;
    }
    EXPECT_TRUE(pre->Split("").empty());
  }
}

// Inputs built to make backtracking regexes go quadratic (long whitespace
// runs that do not end the piece, alternations that almost match) finish
// quickly for every family, and still split losslessly.
TEST(PreTokenizer, HostileInputCostsBoundedWork) {
  const std::vector<std::string> names = absl::StrSplit(PreTokenizer::SupportedNames(), ", ");
  std::vector<std::string> inputs;
  inputs.push_back(std::string(200000, ' ') + "x");
  inputs.push_back(std::string(200000, '\n') + "x");
  std::string runs;
  while (runs.size() < 200000) runs += std::string(3000, ' ') + "x";
  inputs.push_back(runs);
  std::string mixed;
  while (mixed.size() < 200000) mixed += " \t\xC2\xA0 '";
  inputs.push_back(mixed + "x");
  inputs.push_back(std::string(200000, '1'));
  inputs.push_back(std::string(200000, '!'));
  for (const std::string& name : names) {
    auto pre = *PreTokenizer::Create(name);
    for (const std::string& text : inputs) {
      const auto start = std::chrono::steady_clock::now();
      const std::vector<std::string_view> pieces = pre->Split(text);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (testing::kTimingHolds) {  // not in unoptimized or sanitizer builds
        EXPECT_LT(seconds, 1.0) << name << " on " << text.size() << " bytes starting \"" << text.substr(0, 8) << "\"";
      }
      size_t total = 0;
      for (std::string_view p : pieces) total += p.size();
      EXPECT_EQ(total, text.size()) << name;
    }
  }
}

// The vocabulary's `pre` reaches the tokenizer: unknown names fail at load
// for byte-level BPE; SentencePiece ignores the key (llama.cpp files say
// "default" there).
TEST(PreTokenizer, TokenizerCreateChecksThePreName) {
  Vocab v;
  v.type = VocabType::kGpt2;
  v.tokens = {"a", "b", "ab"};
  v.merges = {"a b"};
  v.pre = "klingon-bpe";
  absl::StatusOr<std::unique_ptr<Tokenizer>> bad = Tokenizer::Create(v);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("klingon-bpe"), absl::string_view::npos);
  v.pre = "qwen2";
  EXPECT_TRUE(Tokenizer::Create(v).ok());
  Vocab spm;
  spm.tokens = {"<unk>", "a"};
  spm.scores = {0, 0};
  spm.pre = "klingon-bpe";
  EXPECT_TRUE(Tokenizer::Create(spm).ok());
}

// llama3's ignore_merges: a pre-token that is a (non-control) token is taken
// whole, even where the merges could not build it.
TEST(PreTokenizer, Llama3IgnoresMergesForWholeTokens) {
  Vocab v;
  v.type = VocabType::kGpt2;
  ByteUnicodeMap map;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(map.Encode(static_cast<uint8_t>(b)));
  v.tokens.push_back("abc");    // 256: no merge path leads here
  v.tokens.push_back("<|x|>");  // 257: control
  v.token_types.assign(v.tokens.size(), TokenType::kNormal);
  v.token_types[257] = TokenType::kControl;
  v.merges = {"b c"};
  v.pre = "gpt-2";
  auto gpt2 = *Tokenizer::Create(v);
  EXPECT_EQ(gpt2->Encode("abc", false), (std::vector<int32_t>{'a', 'b', 'c'}));
  v.pre = "llama-bpe";
  auto llama3 = *Tokenizer::Create(v);
  EXPECT_EQ(llama3->Encode("abc", false), (std::vector<int32_t>{256}));
  EXPECT_EQ(llama3->Encode(" abc", false), (std::vector<int32_t>{' ', 'a', 'b', 'c'}));
}

}  // namespace
}  // namespace sinkserve
