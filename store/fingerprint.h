// What names a model's weights for the session store: SHA-256 over the
// model file, the tokenizer file (when separate) and the weight mode, so a
// stored cache is loaded only by a server whose weights make the same K/V.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve::store {

// "sha256:<hex>" of `files`' bytes, in order, then `extra`.
absl::StatusOr<std::string> FingerprintFiles(const std::vector<std::string>& files, const std::string& extra);

}  // namespace sinkserve::store
