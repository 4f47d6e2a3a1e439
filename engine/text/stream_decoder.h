// Turns a stream of token ids into UTF-8-safe text pieces, for streaming a
// turn to a client token by token.
#pragma once

#include <cstdint>
#include <string>

#include "engine/text/tokenizer.h"

namespace sinkserve {

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
