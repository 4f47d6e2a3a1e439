// What the text fuzzers share: the vocabularies they run on. The real ones
// come from ../shared (or $SINKSERVE_SHARED_DIR) when present: SentencePiece
// (llama-spm), byte-level BPE with GPT-2's split, refact's and qwen2's
// pre-tokenizers; the tiny byte vocabulary of the engine tests is always there.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/text/tokenizer.h"
#include "tests/engine/tiny_vocab.h"

namespace sinkserve::fuzzing {

inline std::filesystem::path SharedDir() {
  if (const char* env = std::getenv("SINKSERVE_SHARED_DIR"); env && *env) return env;
  return std::filesystem::path(SINKSERVE_SOURCE_DIR) / ".." / "shared";
}

inline std::unique_ptr<Tokenizer> GgufTokenizer(const std::string& relative) {
  std::ifstream in(SharedDir() / relative, std::ios::binary);
  if (!in) return nullptr;
  std::ostringstream bytes;
  bytes << in.rdbuf();
  const std::string data = bytes.str();
  absl::StatusOr<gguf::File> file = gguf::Parse(data);
  if (!file.ok()) return nullptr;
  absl::StatusOr<Vocab> vocab = gguf::VocabFromGguf(*file);
  if (!vocab.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(*std::move(vocab));
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

// Every vocabulary found, the tiny one first. Loaded once per process.
inline const std::vector<std::unique_ptr<Tokenizer>>& Tokenizers() {
  static const auto* all = [] {
    auto* v = new std::vector<std::unique_ptr<Tokenizer>>();
    v->push_back(testing::TinyTokenizer());
    for (const char* file : {"models/vocab-tests/ggml-vocab-llama-spm.gguf", "models/vocab-tests/ggml-vocab-gpt-2.gguf",
                             "models/vocab-tests/ggml-vocab-refact.gguf", "models/synthetic/synth-qwen2-F32.gguf"}) {
      if (auto t = GgufTokenizer(file)) {
        v->push_back(std::move(t));
      } else {
        std::fprintf(stderr, "fuzz: %s not found under %s; fuzzing without it\n", file, SharedDir().c_str());
      }
    }
    return v;
  }();
  return *all;
}

// Well-formed UTF-8 exactly as Table 3-7 of the Unicode standard lists it
// (no overlongs, surrogates or values past U+10FFFF), written apart from the
// engine's decoder so that the fuzzers check it rather than repeat it.
inline bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c < 0x80) {
      n = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace sinkserve::fuzzing
