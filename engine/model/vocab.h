// A tokenizer vocabulary, as read from GGUF `tokenizer.ggml.*`, llama2.c
// `tokenizer.bin`, or a SentencePiece `.model`. Plain data; the Tokenizer
// (engine/text/tokenizer.h) builds its lookup structures from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sinkserve {

enum class VocabType {
  kSentencePiece,  // SentencePiece BPE with byte fallback (GGUF model "llama")
  kGpt2,           // byte-level BPE, pre-tokenizer named by `pre` (GGUF model "gpt2")
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
  int32_t eot_id = -1;                 // end of turn (<|eot_id|>, <|im_end|>, ...), -1 if undeclared
  int32_t eom_id = -1;                 // end of message (Llama 3.1 <|eom_id|>), -1 if undeclared
  std::string pre;                     // GGUF tokenizer.ggml.pre; "" when absent (GPT-2's split)
  bool add_bos = true;                 // prepend BOS when encoding a prompt
  bool add_space_prefix = true;        // SPM dummy prefix ("hello" -> "▁hello")

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
};

namespace gguf {
struct File;
}  // namespace gguf

// Reads the optional GGUF tokenizer keys beyond the token lists into `vocab`:
// tokenizer.ggml.pre, eot_token_id and eom_token_id (absent or all-ones ids
// mean none). Idempotent. INVALID_ARGUMENT for a mistyped value or an id
// outside the vocabulary. Defined in vocab_files.cc; gguf::VocabFromGguf
// should call it last.
absl::Status ReadGgufVocabExtras(const gguf::File& file, Vocab& vocab);

}  // namespace sinkserve
