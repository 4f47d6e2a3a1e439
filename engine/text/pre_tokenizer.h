// Byte-level BPE pre-tokenizers, chosen by GGUF `tokenizer.ggml.pre`.
//
// A pre-tokenizer is an ordered list of regexes (the ones llama.cpp and the
// Hugging Face tokenizers use for each name). They are applied in sequence,
// as llama.cpp does: the first splits the whole text; each later one splits
// every piece the earlier ones produced. A split keeps both the matches and
// the unmatched text between them, so the pieces always concatenate back to
// the input, byte for byte, whatever the input (invalid UTF-8 included).
//
// The regexes run on PCRE2 in UTF + UCP mode (Unicode \p{L}, \p{N}, \s), each
// compiled (and JIT-compiled where available) once per PreTokenizer. Every
// match runs under PCRE2 match/depth/heap limits, so hostile input costs
// bounded work: when a match hits a limit, the rest of that piece is left
// unsplit by that regex rather than searched further.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve {

class PreTokenizer {
 public:
  // The pre-tokenizer for a `tokenizer.ggml.pre` value. An empty name (the
  // key is absent) means GPT-2's. INVALID_ARGUMENT naming the value and the
  // supported names otherwise.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(std::string_view name);

  // Every name Create accepts, comma-separated (for error messages and docs).
  static std::string SupportedNames();

  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits `text` into pre-tokens: views into `text` whose concatenation is
  // `text`. Thread-safe (each call owns its PCRE2 match data).
  std::vector<std::string_view> Split(std::string_view text) const;

  // The canonical name of the regex family ("gpt-2", "llama3", ...).
  const std::string& family() const { return family_; }

  // llama3's tokenizer.json sets ignore_merges: a pre-token that is itself
  // in the vocabulary becomes that token without running the merges.
  bool ignore_merges() const { return ignore_merges_; }

 private:
  struct Regex;  // one compiled PCRE2 pattern
  PreTokenizer() = default;

  std::string family_;
  bool ignore_merges_ = false;
  std::vector<std::unique_ptr<Regex>> regexes_;  // applied in order
};

}  // namespace sinkserve
