#include "engine/text/unicode.h"

#include <unicode/uchar.h>

namespace sinkserve {

int Utf8SequenceLength(uint8_t lead) {
  if (lead < 0xC2) return 1;  // ASCII, continuation bytes, overlong leads C0/C1
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF5) return 4;
  return 1;
}

Utf8Char DecodeUtf8(std::string_view text, size_t pos) {
  const uint8_t lead = static_cast<uint8_t>(text[pos]);
  if (lead < 0x80) return {lead, 1};
  const int len = Utf8SequenceLength(lead);
  if (len == 1 || pos + len > text.size()) return {kInvalidCodepoint, 1};
  char32_t cp = lead & (0x7F >> len);
  for (int i = 1; i < len; ++i) {
    const uint8_t b = static_cast<uint8_t>(text[pos + i]);
    if ((b & 0xC0) != 0x80) return {kInvalidCodepoint, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  // Overlong 3/4-byte forms, surrogates and values past U+10FFFF.
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return {kInvalidCodepoint, 1};
  }
  return {cp, len};
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// The three classes the GPT-2 regex distinguishes; everything else (including
// invalid bytes and unassigned codepoints) is "other", i.e. [^\s\p{L}\p{N}].
enum class CharClass : uint8_t { kOther, kLetter, kNumber, kSpace, kEnd };

CharClass Classify(char32_t cp) {
  if (cp == kInvalidCodepoint) return CharClass::kOther;
  const UChar32 c = static_cast<UChar32>(cp);
  if (u_isUWhiteSpace(c)) return CharClass::kSpace;  // regex \s is White_Space
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

}  // namespace

std::vector<std::string_view> Gpt2PreTokenize(std::string_view text) {
  // (n_chars + 1): codepoint, class and byte offset of each character; the
  // extra entry is an end sentinel so lookahead never needs a bounds check.
  std::vector<char32_t> cps;
  std::vector<CharClass> cls;
  std::vector<size_t> offsets;
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char ch = DecodeUtf8(text, pos);
    cps.push_back(ch.codepoint);
    cls.push_back(Classify(ch.codepoint));
    offsets.push_back(pos);
    pos += ch.length;
  }
  const size_t n = cps.size();
  cps.push_back(0);
  cls.push_back(CharClass::kEnd);
  offsets.push_back(text.size());

  std::vector<std::string_view> out;
  size_t start = 0;
  auto emit = [&](size_t end) {
    out.push_back(text.substr(offsets[start], offsets[end] - offsets[start]));
    start = end;
  };
  while (start < n) {
    size_t pos = start;
    const char32_t cp = cps[pos];
    // 's|'t|'re|'ve|'m|'ll|'d
    if (cp == '\'') {
      const char32_t a = cps[pos + 1];
      if (pos + 1 < n && (a == 's' || a == 't' || a == 'm' || a == 'd')) {
        emit(pos + 2);
        continue;
      }
      const char32_t b = pos + 2 < n ? cps[pos + 2] : 0;
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        emit(pos + 3);
        continue;
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': the class of the first
    // character after an optional single ASCII space decides the branch.
    const size_t body = (cp == ' ') ? pos + 1 : pos;
    const CharClass c = cls[body];
    if (c == CharClass::kLetter || c == CharClass::kNumber || c == CharClass::kOther) {
      size_t end = body;
      while (cls[end] == c) ++end;
      emit(end);
      continue;
    }
    // \s+(?!\S) then \s+: a whitespace run followed by a non-space leaves its
    // last character to start the next pre-token (as " word").
    size_t end = pos;
    while (cls[end] == CharClass::kSpace) ++end;
    if (end - pos > 1 && end < n) --end;
    emit(end);
  }
  return out;
}

ByteUnicodeMap::ByteUnicodeMap() {
  codepoint_to_byte_.fill(-1);
  int next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next_extra++);
    codepoint_to_byte_[cp] = static_cast<int16_t>(b);
    AppendUtf8(cp, byte_to_utf8_[b]);
  }
}

}  // namespace sinkserve
