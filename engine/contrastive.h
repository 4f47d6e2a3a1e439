// Contrastive search (Su et al., "A Contrastive Framework for Neural Text
// Generation", 2022; transformers' penalty_alpha with top_k). Each step
// takes the top_k tokens of the model's distribution, runs all of them in one
// pass as a candidates entry (engine/backend.h: SeqEntry::candidates), and
// keeps the candidate v with the best
//   (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j),
// h being the last hidden state and j every token the query can see other
// than itself: the sinks and the window, never the evicted text. Greedy and
// deterministic; alpha = 0 is greedy.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/cache_geometry.h"

namespace sinkserve {

// The k most probable tokens of softmax(logits), by descending probability
// (ties: the lower id), with their probabilities over the whole vocabulary.
// Masked (-inf) tokens are never candidates; fewer than k when fewer are finite.
struct ContrastiveCandidates {
  std::vector<int32_t> ids;
  std::vector<float> probs;
};
ContrastiveCandidates TopCandidates(absl::Span<const float> logits, int32_t k);

// The last hidden states of a cache's tokens, in the cache's geometry: token
// t's state lives at Slot(t), stored as a unit vector, beside the K/V. A slot
// whose state is unknown (a session restored from the store, whose hidden
// states were not saved) is left out of the comparison.
class HiddenRing {
 public:
  HiddenRing() = default;
  HiddenRing(const CacheGeometry& geometry, int32_t dim);

  int32_t dim() const { return dim_; }
  // Token t's hidden state (dim floats).
  void Put(int64_t t, const float* hidden);
  // For each of the rows of `hidden` (dim floats each): max_j cos(row, h_j)
  // over the tokens query t sees other than t whose states are known (0
  // when there are none), into `out` (one per row). Each known state is
  // read once for all rows.
  void MaxSimilarities(absl::Span<const float> hidden, int64_t t, std::vector<float>* out) const;

 private:
  CacheGeometry geometry_;
  int32_t dim_ = 0;
  std::vector<float> unit_;     // (Slots(), dim)
  std::vector<int64_t> token_;  // (Slots()) the token whose state a slot holds; -1: unknown
};

// The index into `candidates` of the best contrastive score (the first on
// ties), for candidates of query t whose hidden states are `hidden`
// (candidates.ids.size() rows of dim floats).
int32_t PickCandidate(const ContrastiveCandidates& candidates, absl::Span<const float> hidden, const HiddenRing& ring,
                      int64_t t, float alpha);

}  // namespace sinkserve
