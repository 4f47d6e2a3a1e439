// Batch validation shared by every backend, so the CPU reference and the CUDA
// backend reject exactly the same batches with exactly the same messages.
// Header-only: each backend passes a lookup from CacheId to its own cache
// bookkeeping.
#pragma once

#include <cstdint>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/backend.h"
#include "engine/cache_geometry.h"

namespace sinkserve {

// What validation needs to know about one live cache.
struct CacheState {
  CacheGeometry geometry;
  int64_t consumed = 0;  // tokens appended so far
};

// `lookup(id)` returns a pointer to the cache's state, or null when `id` names
// no live cache. Rules (engine/backend.h): every entry names a distinct live
// cache, n_past equals what that cache consumed, 1 <= n_tokens <= ring -
// window + 1 (a candidates entry: 1..kMaxCandidates, with all_logits),
// entries cover Batch::tokens in order, every token id is in the vocabulary.
template <typename Lookup>
absl::Status ValidateBatch(const Batch& batch, int32_t vocab_size, Lookup&& lookup) {
  absl::flat_hash_set<CacheId> seen;
  int64_t covered = 0;
  for (const SeqEntry& s : batch.seqs) {
    const CacheState* c = lookup(s.cache);
    if (c == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat("batch names unknown cache %d", s.cache));
    }
    if (!seen.insert(s.cache).second) {
      return absl::InvalidArgumentError(absl::StrFormat("cache %d appears twice in one batch", s.cache));
    }
    if (s.n_past != c->consumed) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cache %d has consumed %d tokens but the batch says n_past=%d", s.cache, c->consumed, s.n_past));
    }
    const int32_t max_chunk = s.candidates ? kMaxCandidates : c->geometry.ring - c->geometry.window + 1;
    if (s.candidates && !s.all_logits) {
      return absl::InvalidArgumentError(absl::StrFormat("cache %d: a candidates entry needs all_logits", s.cache));
    }
    if (s.n_tokens < 1 || s.n_tokens > max_chunk) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cache %d takes 1..%d tokens per step, got %d", s.cache, max_chunk, s.n_tokens));
    }
    if (s.token_begin != covered ||
        s.token_begin + int64_t{s.n_tokens} > static_cast<int64_t>(batch.tokens.size())) {
      return absl::InvalidArgumentError("batch entries must cover Batch::tokens in order");
    }
    covered += s.n_tokens;
  }
  if (covered != static_cast<int64_t>(batch.tokens.size())) {
    return absl::InvalidArgumentError("batch has tokens no entry owns");
  }
  for (int32_t id : batch.tokens) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "token id %d is out of range for a vocabulary of %d", id, vocab_size));
    }
  }
  return absl::OkStatus();
}

}  // namespace sinkserve
