#include "server/api_keys.h"

#include <fstream>
#include <sstream>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sinkserve {
namespace {

constexpr size_t kMinKeyBytes = 16;
constexpr size_t kMaxKeyBytes = 4096;
constexpr size_t kMaxKeys = 4096;

// Equal without an early exit: the time depends on the lengths only.
bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the API key file ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > kMaxKeys * (kMaxKeyBytes + 1)) {
    return absl::InvalidArgumentError(absl::StrCat("the API key file ", path, " is too large"));
  }
  absl::StatusOr<ApiKeys> keys = FromLines(text.str());
  if (!keys.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", keys.status().message()));
  return keys;
}

absl::StatusOr<ApiKeys> ApiKeys::FromLines(std::string_view text) {
  ApiKeys keys;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    if (line.size() < kMinKeyBytes || line.size() > kMaxKeyBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": a key must be ", kMinKeyBytes, " to ", kMaxKeyBytes, " bytes"));
    }
    for (char c : line) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c)) || !absl::ascii_isprint(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": a key must be printable, no spaces"));
      }
    }
    if (keys.keys_.size() >= kMaxKeys) return absl::InvalidArgumentError("more than 4096 keys");
    keys.keys_.emplace_back(line);
  }
  if (keys.keys_.empty()) return absl::InvalidArgumentError("no keys (one per line)");
  return keys;
}

std::optional<std::string> ApiKeys::Identify(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  const absl::string_view value(authorization.data(), authorization.size());
  if (value.size() <= kBearer.size() || !absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), "Bearer ")) {
    return std::nullopt;
  }
  const absl::string_view stripped = absl::StripAsciiWhitespace(value.substr(kBearer.size()));
  const std::string_view presented(stripped.data(), stripped.size());
  std::optional<std::string> identity;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (ConstantTimeEqual(presented, keys_[i]) && !identity) identity = absl::StrCat("key#", i + 1);
  }
  return identity;
}

}  // namespace sinkserve
