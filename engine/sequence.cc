#include "engine/sequence.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve {

absl::StatusOr<std::unique_ptr<Sequence>> Sequence::Create(Backend* backend, const CacheConfig& config,
                                                           int32_t max_chunk) {
  const int32_t context = backend->config().max_seq_len;
  ASSIGN_OR_RETURN(CacheGeometry geometry, GeometryFor(config, max_chunk, context));
  ASSIGN_OR_RETURN(CacheId cache, backend->CreateCache(geometry));
  return std::unique_ptr<Sequence>(new Sequence(backend, config, geometry, cache, max_chunk, context));
}

Sequence::Sequence(Backend* backend, const CacheConfig& config, const CacheGeometry& geometry, CacheId cache,
                   int32_t max_chunk, int32_t context)
    : backend_(backend), config_(config), geometry_(geometry), cache_(cache), max_chunk_(max_chunk),
      context_(context) {}

Sequence::~Sequence() { backend_->DestroyCache(cache_); }

absl::Status Sequence::CheckAppend(int64_t n) const { return CheckCacheCapacity(config_, consumed_, n, context_); }

absl::Status Sequence::Feed(absl::Span<const int32_t> tokens, std::vector<float>* all_logits,
                            std::vector<float>* hidden) {
  if (tokens.empty()) return absl::InvalidArgumentError("nothing to feed");
  RETURN_IF_ERROR(CheckAppend(static_cast<int64_t>(tokens.size())));
  const int32_t vocab = backend_->config().vocab_size;
  for (int32_t id : tokens) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrFormat("token id %d is out of range for a vocabulary of %d", id, vocab));
    }
  }
  if (all_logits) all_logits->clear();
  if (hidden) hidden->clear();
  if (config_.policy == CachePolicy::kRecompute) {
    if (hidden) return absl::InvalidArgumentError("hidden states need a cached policy, not recompute");
    return FeedRecompute(tokens, all_logits);
  }
  return FeedCached(tokens, all_logits, hidden);
}

absl::Status Sequence::FeedCached(absl::Span<const int32_t> tokens, std::vector<float>* all_logits,
                                  std::vector<float>* hidden) {
  for (size_t begin = 0; begin < tokens.size(); begin += max_chunk_) {
    const size_t n = std::min<size_t>(max_chunk_, tokens.size() - begin);
    batch_.Clear();
    batch_.Add(cache_, consumed_, tokens.subspan(begin, n), all_logits != nullptr);
    RETURN_IF_ERROR(backend_->Forward(batch_, &step_logits_, hidden ? &step_hidden_ : nullptr));
    consumed_ += static_cast<int64_t>(n);
    if (all_logits) all_logits->insert(all_logits->end(), step_logits_.begin(), step_logits_.end());
    if (hidden) hidden->insert(hidden->end(), step_hidden_.begin(), step_hidden_.end());
  }
  const size_t vocab = backend_->config().vocab_size;
  last_logits_.assign(step_logits_.end() - vocab, step_logits_.end());
  return absl::OkStatus();
}

absl::Status Sequence::FeedCandidates(absl::Span<const int32_t> candidates, std::vector<float>* hidden) {
  if (config_.policy == CachePolicy::kRecompute) {
    return absl::InvalidArgumentError("contrastive search needs a cached policy, not recompute");
  }
  RETURN_IF_ERROR(CheckAppend(1));
  batch_.Clear();
  batch_.AddCandidates(cache_, consumed_, candidates);
  return backend_->Forward(batch_, &candidate_logits_, hidden);
}

absl::Status Sequence::CommitCandidate(int32_t index) {
  RETURN_IF_ERROR(backend_->CommitCandidate(cache_, index));
  ++consumed_;
  const size_t vocab = backend_->config().vocab_size;
  last_logits_.assign(candidate_logits_.begin() + index * vocab, candidate_logits_.begin() + (index + 1) * vocab);
  return absl::OkStatus();
}

absl::Status Sequence::FeedRecompute(absl::Span<const int32_t> tokens, std::vector<float>* all_logits) {
  // The paper's baseline: for every new token, rebuild the KV states of the
  // last `window` tokens from scratch (positions 0..n-1) and keep only the
  // last token's logits. Cost per token grows with window^2.
  std::vector<int32_t> window;
  for (int32_t id : tokens) {
    history_.push_back(id);
    if (static_cast<int32_t>(history_.size()) > geometry_.window) history_.pop_front();
    window.assign(history_.begin(), history_.end());
    RETURN_IF_ERROR(backend_->ResetCache(cache_));
    for (size_t begin = 0, past = 0; begin < window.size(); begin += max_chunk_) {
      const size_t n = std::min<size_t>(max_chunk_, window.size() - begin);
      batch_.Clear();
      batch_.Add(cache_, static_cast<int64_t>(past), absl::MakeConstSpan(window).subspan(begin, n));
      RETURN_IF_ERROR(backend_->Forward(batch_, &step_logits_));
      past += n;
    }
    ++consumed_;
    if (all_logits) all_logits->insert(all_logits->end(), step_logits_.begin(), step_logits_.end());
  }
  last_logits_ = step_logits_;
  return absl::OkStatus();
}

}  // namespace sinkserve
