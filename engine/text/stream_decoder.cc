// StreamDecoder: holds back the bytes of a UTF-8 character split across
// tokens, and replaces bytes that can never become valid by U+FFFD (one per
// maximal ill-formed subpart, as the Unicode standard recommends).
#include <string>
#include <string_view>

#include "engine/text/stream_decoder.h"
#include "engine/text/unicode.h"

namespace sinkserve {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// How many bytes starting at text[pos] form a prefix of some valid UTF-8
// sequence, stopping at the first byte that rules every sequence out. The
// lead byte is counted when it can start a sequence; 0 when it cannot.
size_t ValidPrefixLength(std::string_view text, size_t pos) {
  const uint8_t lead = static_cast<uint8_t>(text[pos]);
  const int len = Utf8SequenceLength(lead);
  if (len == 1) return lead < 0x80 ? 1 : 0;
  // Second-byte bounds exclude overlongs, surrogates and values > U+10FFFF.
  uint8_t lo = 0x80, hi = 0xBF;
  if (lead == 0xE0) lo = 0xA0;
  if (lead == 0xED) hi = 0x9F;
  if (lead == 0xF0) lo = 0x90;
  if (lead == 0xF4) hi = 0x8F;
  size_t n = 1;
  while (n < static_cast<size_t>(len) && pos + n < text.size()) {
    const uint8_t b = static_cast<uint8_t>(text[pos + n]);
    if (n == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) break;
    ++n;
  }
  return n;
}

}  // namespace

std::string StreamDecoder::Push(int32_t id) {
  pending_ += tokenizer_.DecodeToken(prev_id_, id);
  prev_id_ = id;
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const Utf8Char ch = DecodeUtf8(pending_, pos);
    if (ch.codepoint != kInvalidCodepoint) {
      out.append(pending_, pos, ch.length);
      pos += ch.length;
      continue;
    }
    const size_t prefix = ValidPrefixLength(pending_, pos);
    if (prefix > 0 && pos + prefix == pending_.size()) break;  // may still complete
    out.append(kReplacement);
    pos += prefix > 0 ? prefix : 1;
  }
  pending_.erase(0, pos);
  return out;
}

std::string StreamDecoder::Flush() {
  // Whatever is held is one incomplete character.
  std::string out = pending_.empty() ? "" : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace sinkserve
