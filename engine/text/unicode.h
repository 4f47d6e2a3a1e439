// UTF-8 helpers for the tokenizers: lenient UTF-8 decoding (an invalid byte
// is its own one-byte "character", so no input is rejected) and GPT-2's
// bytes_to_unicode table. The byte-level BPE pre-tokenizers (Unicode classes
// by regex) are in pre_tokenizer.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sinkserve {

// Returned by DecodeUtf8 for a byte that does not start a valid sequence.
inline constexpr char32_t kInvalidCodepoint = 0xFFFFFFFF;

struct Utf8Char {
  char32_t codepoint;  // kInvalidCodepoint when the bytes are not valid UTF-8
  int length;          // bytes consumed, 1..4 (an invalid byte consumes 1)
};

// Decodes the character starting at text[pos] (pos < text.size()). Rejects
// overlong forms, surrogates, values above U+10FFFF and truncated sequences.
Utf8Char DecodeUtf8(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of `cp` (a valid scalar value) to `out`.
void AppendUtf8(char32_t cp, std::string& out);

// Length of the sequence a lead byte announces (1 for ASCII and for bytes
// that cannot start a sequence, so callers always make progress).
int Utf8SequenceLength(uint8_t lead);

// GPT-2's reversible byte <-> printable-codepoint map: printable Latin-1
// bytes map to themselves, the other 68 bytes to U+0100 and up, in order.
class ByteUnicodeMap {
 public:
  ByteUnicodeMap();
  // UTF-8 text of the codepoint standing for `byte`.
  const std::string& Encode(uint8_t byte) const { return byte_to_utf8_[byte]; }
  // The byte `cp` stands for, or -1 when `cp` is not in the table.
  int Decode(char32_t cp) const { return cp < codepoint_to_byte_.size() ? codepoint_to_byte_[cp] : -1; }

 private:
  std::array<std::string, 256> byte_to_utf8_;
  std::array<int16_t, 324> codepoint_to_byte_;  // every mapped codepoint is < 256 + 68
};

}  // namespace sinkserve
