#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/backend.h"

namespace sinkserve {

absl::Status SamplingParams::Validate() const {
  auto bad = [](const char* field, double value, const char* expect) {
    return absl::InvalidArgumentError(absl::StrFormat("%s must be %s, got %g", field, expect, value));
  };
  if (!std::isfinite(temperature) || temperature < 0.0f || temperature > 100.0f) {
    return bad("temperature", temperature, "a finite number in [0, 100]");
  }
  if (top_k < 0) return bad("top_k", top_k, ">= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return bad("top_p", top_p, "in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return bad("min_p", min_p, "in [0, 1]");
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.0f || repetition_penalty > 100.0f) {
    return bad("repetition_penalty", repetition_penalty, "in (0, 100]");
  }
  if (repetition_window < 0) return bad("repetition_window", repetition_window, ">= 0");
  if (!(penalty_alpha >= 0.0f && penalty_alpha <= 1.0f)) return bad("penalty_alpha", penalty_alpha, "in [0, 1]");
  if (contrastive()) {
    if (top_k < 1 || top_k > kMaxCandidates) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "penalty_alpha (contrastive search) needs top_k in 1..%d, the candidates each step runs; got %d",
          kMaxCandidates, top_k));
    }
    if (temperature != 0.0f) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "penalty_alpha (contrastive search) is deterministic and takes no temperature (got %g): set "
          "temperature to 0 or leave it out",
          temperature));
    }
  }
  return absl::OkStatus();
}

int32_t Argmax(absl::Span<const float> logits) {
  if (logits.empty()) return 0;
  // The running best stays in a register: no reload through `best` per element.
  int32_t best = 0;
  float best_value = logits[0];
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > best_value) {
      best_value = logits[i];
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

Sampler::Sampler(const SamplingParams& params, int32_t vocab_size)
    : params_(params), rng_(params.has_seed ? params.seed : std::random_device{}()) {
  candidates_.reserve(vocab_size);
}

void Sampler::Penalize(absl::Span<float> logits, absl::Span<const int32_t> recent) {
  if (params_.repetition_penalty == 1.0f || params_.repetition_window <= 0) return;
  // CTRL-style, once per distinct recent token: shrink positive logits,
  // push negative ones further down.
  const size_t n = std::min<size_t>(recent.size(), params_.repetition_window);
  penalized_.assign(recent.end() - n, recent.end());
  std::sort(penalized_.begin(), penalized_.end());
  penalized_.erase(std::unique(penalized_.begin(), penalized_.end()), penalized_.end());
  for (int32_t id : penalized_) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
    float& l = logits[id];
    l = l > 0.0f ? l / params_.repetition_penalty : l * params_.repetition_penalty;
  }
}

int32_t Sampler::Sample(absl::Span<float> logits, absl::Span<const int32_t> recent) {
  Penalize(logits, recent);
  if (params_.greedy()) return Argmax(logits);

  // Candidates by descending logit; top-k trims before the softmax.
  candidates_.clear();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isfinite(logits[i])) candidates_.emplace_back(logits[i], static_cast<int32_t>(i));
  }
  if (candidates_.empty()) return Argmax(logits);
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) keep = params_.top_k;
  std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  candidates_.resize(keep);

  // Softmax at temperature over the kept candidates (sorted, so [0] is max).
  const float max_logit = candidates_[0].first;
  double sum = 0.0;
  for (auto& c : candidates_) {
    c.first = std::exp((c.first - max_logit) / params_.temperature);
    sum += c.first;
  }
  for (auto& c : candidates_) c.first = static_cast<float>(c.first / sum);

  // min-p: drop candidates below min_p * p_max.
  if (params_.min_p > 0.0f) {
    const float floor = params_.min_p * candidates_[0].first;
    size_t n = 1;
    while (n < candidates_.size() && candidates_[n].first >= floor) ++n;
    candidates_.resize(n);
  }
  // top-p: the smallest prefix whose mass reaches top_p.
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    size_t n = 0;
    while (n < candidates_.size()) {
      mass += candidates_[n].first;
      ++n;
      if (mass >= params_.top_p) break;
    }
    candidates_.resize(n);
  }
  double total = 0.0;
  for (const auto& c : candidates_) total += c.first;
  const double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double acc = 0.0;
  for (const auto& c : candidates_) {
    acc += c.first;
    if (r < acc) return c.second;
  }
  return candidates_.back().second;
}

}  // namespace sinkserve
