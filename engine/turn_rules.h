// How a generated turn ends, shared by sinkserve-generate and the engine
// thread so both yield the same ids: end tokens (EOS, BOS, which a base model
// emits between documents, and a chat template's end-of-message tokens)
// finish a turn unless ignore_eos, and before min_new_tokens they are kept
// out of reach. An end token that finishes a turn is not fed to the model.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/tokenizer.h"

namespace sinkserve {

class EndTokens {
 public:
  explicit EndTokens(const Tokenizer& tokenizer, const std::vector<int32_t>& extra = {}) {
    for (int32_t id : {tokenizer.eos_id(), tokenizer.bos_id()}) {
      if (id >= 0) ids_.push_back(id);
    }
    for (int32_t id : extra) {
      if (id >= 0 && id < tokenizer.size()) ids_.push_back(id);
    }
  }

  bool IsEnd(int32_t id) const { return std::find(ids_.begin(), ids_.end(), id) != ids_.end(); }

  // Keeps every end token out of reach of the sampler.
  void Mask(absl::Span<float> logits) const {
    for (int32_t id : ids_) {
      if (static_cast<size_t>(id) < logits.size()) logits[id] = -INFINITY;
    }
  }

 private:
  std::vector<int32_t> ids_;
};

// The repetition penalty's history: keeps between 512 and 1024 recent tokens.
inline void PushRecent(std::vector<int32_t>* recent, int32_t token) {
  if (recent->size() >= 1024) recent->erase(recent->begin(), recent->begin() + 512);
  recent->push_back(token);
}

inline bool AllFinite(absl::Span<const float> logits) {
  return std::all_of(logits.begin(), logits.end(), [](float l) { return std::isfinite(l); });
}

}  // namespace sinkserve
