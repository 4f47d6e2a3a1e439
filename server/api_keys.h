// API keys: `--api-key-file` holds one key per line (blank lines and lines
// starting with '#' skipped). A request presents one as `Authorization:
// Bearer KEY` (HTTP header or gRPC metadata). Keys are compared in constant
// time, each against every configured key, so the time taken says nothing
// about how much of a key matched or which one. A key's identity, "key#N"
// (its line's position among the keys), owns the sessions it opens and is
// all that is logged; the key itself never is.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve {

class ApiKeys {
 public:
  // No keys: every request is let in.
  ApiKeys() = default;
  // INVALID_ARGUMENT for an unreadable or empty file, or a key shorter than
  // 16 bytes or with whitespace inside.
  static absl::StatusOr<ApiKeys> Load(const std::string& path);
  static absl::StatusOr<ApiKeys> FromLines(std::string_view text);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // The identity of the key in an Authorization value ("Bearer KEY"), or
  // nullopt when it names no configured key.
  std::optional<std::string> Identify(std::string_view authorization) const;

 private:
  std::vector<std::string> keys_;
};

}  // namespace sinkserve
