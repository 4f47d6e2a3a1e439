#include "engine/contrastive.h"

#include <algorithm>
#include <cmath>

namespace sinkserve {
namespace {

// a . b over 16 independent lanes (so the compiler keeps them in SIMD
// registers without reassociating a single sum).
float Dot(const float* a, const float* b, int32_t n) {
  float lanes[16] = {};
  int32_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int32_t j = 0; j < 16; ++j) lanes[j] += a[i + j] * b[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (float lane : lanes) sum += lane;
  return sum;
}

// x / |x| (zero stays zero), accumulated in double.
void Normalize(const float* x, int32_t dim, float* out) {
  double squares = 0.0;
  for (int32_t i = 0; i < dim; ++i) squares += static_cast<double>(x[i]) * x[i];
  const double inv = squares > 0.0 ? 1.0 / std::sqrt(squares) : 0.0;
  for (int32_t i = 0; i < dim; ++i) out[i] = static_cast<float>(x[i] * inv);
}

}  // namespace

ContrastiveCandidates TopCandidates(absl::Span<const float> logits, int32_t k) {
  std::vector<int32_t> order;
  float max_logit = -INFINITY;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isfinite(logits[i])) {
      order.push_back(static_cast<int32_t>(i));
      max_logit = std::max(max_logit, logits[i]);
    }
  }
  double sum = 0.0;
  for (int32_t id : order) sum += std::exp(static_cast<double>(logits[id]) - max_logit);
  const size_t keep = std::min(order.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  ContrastiveCandidates c;
  for (size_t i = 0; i < keep; ++i) {
    c.ids.push_back(order[i]);
    c.probs.push_back(static_cast<float>(std::exp(static_cast<double>(logits[order[i]]) - max_logit) / sum));
  }
  return c;
}

HiddenRing::HiddenRing(const CacheGeometry& geometry, int32_t dim)
    : geometry_(geometry),
      dim_(dim),
      unit_(static_cast<size_t>(geometry.Slots()) * dim),
      token_(static_cast<size_t>(geometry.Slots()), -1) {}

void HiddenRing::Put(int64_t t, const float* hidden) {
  const int32_t slot = geometry_.Slot(t);
  Normalize(hidden, dim_, &unit_[static_cast<size_t>(slot) * dim_]);
  token_[slot] = t;
}

void HiddenRing::MaxSimilarities(absl::Span<const float> hidden, int64_t t, std::vector<float>* out) const {
  const size_t rows = hidden.size() / static_cast<size_t>(dim_);
  std::vector<float> units(hidden.size());
  for (size_t r = 0; r < rows; ++r) Normalize(hidden.data() + r * dim_, dim_, units.data() + r * dim_);
  out->assign(rows, -INFINITY);
  const auto visit = [&](int64_t j) {
    const int32_t slot = geometry_.Slot(j);
    if (token_[slot] != j) return;  // unknown, or overwritten by a later token
    const float* h = &unit_[static_cast<size_t>(slot) * dim_];
    for (size_t r = 0; r < rows; ++r) (*out)[r] = std::max((*out)[r], Dot(units.data() + r * dim_, h, dim_));
  };
  // Query t sees the sinks below min(sinks, t + 1) and the window up to t.
  for (int64_t j = 0; j < std::min<int64_t>(geometry_.sinks, t); ++j) visit(j);
  for (int64_t j = geometry_.WindowBegin(t); j < t; ++j) visit(j);
  for (float& best : *out) best = std::isfinite(best) ? best : 0.0f;
}

int32_t PickCandidate(const ContrastiveCandidates& candidates, absl::Span<const float> hidden, const HiddenRing& ring,
                      int64_t t, float alpha) {
  const size_t k = candidates.ids.size();
  std::vector<float> penalty;
  ring.MaxSimilarities(hidden.first(std::min(hidden.size(), k * static_cast<size_t>(ring.dim()))), t, &penalty);
  int32_t best = 0;
  double best_score = -INFINITY;
  for (size_t i = 0; i < k; ++i) {
    const double score = (1.0 - alpha) * candidates.probs[i] - alpha * static_cast<double>(penalty[i]);
    if (score > best_score) {
      best_score = score;
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

}  // namespace sinkserve
