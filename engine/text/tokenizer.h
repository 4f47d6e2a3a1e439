// Text <-> token ids for the vocabularies in engine/model/vocab.h.
//
// Two algorithms behind one interface:
//   - SentencePiece BPE with byte fallback (Llama 2, Mistral, TinyLlama, stories):
//     the bigram merge by score that llama2.c and llama.cpp implement.
//   - byte-level BPE (GPT-2, Llama 3, Qwen 2, ...): the pre-tokenizer named by
//     the vocabulary (pre_tokenizer.h), then merges by rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/vocab.h"

namespace sinkserve {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Builds the tokenizer for `vocab`'s type; INVALID_ARGUMENT on an
  // inconsistent vocabulary or an unknown pre-tokenizer name.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(Vocab vocab);

  // Encodes `text`. With add_bos, prepends BOS when the vocabulary has one.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_bos) const = 0;

  // The raw bytes token `id` stands for (byte tokens become their byte, SPM's
  // U+2581 becomes a space, GPT-2's byte-to-unicode map is undone). Control
  // tokens (BOS/EOS) decode to "". `prev_id` lets SPM drop the dummy-prefix
  // space after BOS, as llama2.c does. Out-of-range ids decode to "".
  virtual std::string DecodeToken(int32_t prev_id, int32_t id) const = 0;

  const Vocab& vocab() const { return vocab_; }
  int32_t bos_id() const { return vocab_.bos_id; }
  int32_t eos_id() const { return vocab_.eos_id; }
  int32_t size() const { return vocab_.size(); }

 protected:
  explicit Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}
  Vocab vocab_;
};

}  // namespace sinkserve
