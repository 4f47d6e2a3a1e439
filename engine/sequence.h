// One sequence driven through a Backend under a cache policy: the single-
// session path used by the offline tools and tests. It chunks long inputs to
// the cache's chunk size, enforces the dense capacity, and implements the
// sliding-window-with-re-computation baseline. The server's engine thread
// batches many sessions itself but applies the same rules
// (engine/cache_policy.h: GeometryFor with its prefill chunk,
// CheckCacheCapacity).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/cache_policy.h"

namespace sinkserve {

class Sequence {
 public:
  // Creates the sequence's cache on `backend` (which must outlive it).
  static absl::StatusOr<std::unique_ptr<Sequence>> Create(Backend* backend, const CacheConfig& config,
                                                          int32_t max_chunk);
  ~Sequence();
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  // Runs `tokens` through the model. Afterwards last_logits() holds the
  // logits after the last token; with `all_logits`, it receives a row per
  // token (tokens.size(), vocab). A dense cache that cannot take every token
  // fails with RESOURCE_EXHAUSTED before running any of them.
  // With `hidden` (a cached policy only), it receives each token's last
  // hidden state, (tokens.size(), dim).
  absl::Status Feed(absl::Span<const int32_t> tokens, std::vector<float>* all_logits = nullptr,
                    std::vector<float>* hidden = nullptr);

  // Contrastive search (engine/contrastive.h), on a cached policy: runs
  // `candidates` for the next position without appending any, filling a
  // hidden state for each (and keeping their logits rows);
  // CommitCandidate(i) then appends candidate i, after which last_logits()
  // are its row.
  absl::Status FeedCandidates(absl::Span<const int32_t> candidates, std::vector<float>* hidden);
  absl::Status CommitCandidate(int32_t index);

  // OK when `n` more tokens fit (only a dense cache can be full).
  absl::Status CheckAppend(int64_t n) const;

  absl::Span<const float> last_logits() const { return last_logits_; }
  int64_t consumed() const { return consumed_; }
  // Tokens in the cache that the latest query saw: min(consumed, S + W).
  int64_t cache_tokens() const { return geometry_.VisibleTokens(consumed_); }
  // Tokens no query can see any more.
  int64_t evicted() const { return geometry_.EvictedTokens(consumed_); }
  const CacheConfig& config() const { return config_; }
  const CacheGeometry& geometry() const { return geometry_; }

 private:
  Sequence(Backend* backend, const CacheConfig& config, const CacheGeometry& geometry, CacheId cache,
           int32_t max_chunk, int32_t context);
  absl::Status FeedCached(absl::Span<const int32_t> tokens, std::vector<float>* all_logits,
                          std::vector<float>* hidden);
  absl::Status FeedRecompute(absl::Span<const int32_t> tokens, std::vector<float>* all_logits);

  Backend* backend_;
  CacheConfig config_;
  CacheGeometry geometry_;
  CacheId cache_;
  int32_t max_chunk_;
  int32_t context_;
  int64_t consumed_ = 0;
  std::deque<int32_t> history_;      // recompute only: the last `window` tokens
  std::vector<float> last_logits_;   // (vocab)
  Batch batch_;
  std::vector<float> step_logits_;
  std::vector<float> step_hidden_;
  std::vector<float> candidate_logits_;  // the latest FeedCandidates' rows
};

}  // namespace sinkserve
