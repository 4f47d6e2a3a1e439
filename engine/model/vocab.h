// A tokenizer vocabulary, as read from GGUF `tokenizer.ggml.*`, llama2.c
// `tokenizer.bin`, or a SentencePiece `.model`. Plain data; the Tokenizer
// (engine/text/tokenizer.h) builds its lookup structures from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sinkserve {

enum class VocabType {
  kSentencePiece,  // SentencePiece BPE with byte fallback (GGUF model "llama")
  kGpt2,           // byte-level BPE with the GPT-2 pre-tokenizer (GGUF model "gpt2")
};

// Token attributes, numbered as GGUF's tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Vocab {
  VocabType type = VocabType::kSentencePiece;
  std::vector<std::string> tokens;     // (n_vocab) piece text; SPM uses U+2581 for space
  std::vector<float> scores;           // (n_vocab) or empty; SPM merge priority
  std::vector<TokenType> token_types;  // (n_vocab) or empty (then inferred)
  std::vector<std::string> merges;     // GPT-2 only: "left right", highest priority first
  int32_t bos_id = -1;                 // -1 when the vocabulary has none
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = true;                 // prepend BOS when encoding a prompt
  bool add_space_prefix = true;        // SPM dummy prefix ("hello" -> "▁hello")

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
};

}  // namespace sinkserve
