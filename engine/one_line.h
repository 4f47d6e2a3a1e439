// Messages that quote untrusted bytes (a model file's names, a client's
// fields) must stay one readable line: control bytes become \xNN escapes
// and the text is cut to a bound. Used where a status leaves the process:
// the tools' one-line failure exit and the gRPC status mapping.
#pragma once

#include <cstdio>
#include <string>
#include "absl/strings/string_view.h"

namespace sinkserve {

inline std::string OneLine(absl::string_view text, size_t max_bytes = 2048) {
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  for (char c : text) {
    if (out.size() >= max_bytes) {
      out += "...";
      break;
    }
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace sinkserve
