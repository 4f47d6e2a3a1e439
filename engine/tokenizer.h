// Text <-> token ids for the vocabularies in engine/vocab.h.
//
// Two algorithms behind one interface:
//   - SentencePiece BPE with byte fallback (Llama 2, Mistral, TinyLlama, stories):
//     the bigram merge by score that llama2.c and llama.cpp implement.
//   - GPT-2 byte-level BPE: the GPT-2 pre-tokenizer regex, then merges by rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/vocab.h"

namespace sinkserve {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Builds the tokenizer for `vocab`'s type; fails on an inconsistent vocabulary.
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

// Turns a stream of token ids into UTF-8-safe text pieces: bytes of a
// multi-byte character split across tokens are held back until the character
// is complete, so every piece returned is valid UTF-8. Invalid sequences are
// replaced by U+FFFD rather than held forever.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // Feeds one token; returns the text now complete (possibly empty).
  std::string Push(int32_t id);
  // Returns whatever is still held (incomplete trailing bytes become U+FFFD).
  std::string Flush();
  // Forgets the previous token (call at a conversation boundary if needed).
  void Reset() { prev_id_ = -1; pending_.clear(); }

 private:
  const Tokenizer& tokenizer_;
  int32_t prev_id_ = -1;
  std::string pending_;  // bytes of an incomplete UTF-8 character
};

}  // namespace sinkserve
