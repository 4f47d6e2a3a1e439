// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition
// penalty, seeded; and the settings of contrastive search (engine/
// contrastive.h), which the turn runs with the backend's help. One Sampler per generating sequence (it owns its RNG).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace sinkserve {

struct SamplingParams {
  float temperature = 0.8f;         // 0 = greedy
  int32_t top_k = 40;               // 0 = off
  float top_p = 0.95f;              // 1 = off
  float min_p = 0.05f;              // 0 = off; keeps p >= min_p * p_max
  float repetition_penalty = 1.0f;  // 1 = off; CTRL-style, over recent tokens
  int32_t repetition_window = 64;   // how many recent tokens the penalty sees
  uint64_t seed = 0;
  bool has_seed = false;            // false: seeded from std::random_device
  // Contrastive search's degeneration penalty, in [0, 1]; 0 = off. With
  // alpha > 0, top_k (1..kMaxCandidates) candidates run each step and the
  // temperature must be 0; top_p and min_p do not apply.
  float penalty_alpha = 0.0f;

  // INVALID_ARGUMENT naming the field for negative, NaN or out-of-range
  // values, and for contrastive search with temperature or without top_k.
  absl::Status Validate() const;
  bool greedy() const { return temperature == 0.0f; }
  bool contrastive() const { return penalty_alpha > 0.0f; }
};

class Sampler {
 public:
  // `params` must be valid (Validate()).
  Sampler(const SamplingParams& params, int32_t vocab_size);

  // Picks the next token from `logits` (vocab_size), which it may modify.
  // `recent` are the sequence's latest tokens, for the repetition penalty.
  int32_t Sample(absl::Span<float> logits, absl::Span<const int32_t> recent);
  // The repetition penalty alone, as Sample applies it first.
  void Penalize(absl::Span<float> logits, absl::Span<const int32_t> recent);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // (logit or prob, id)
  std::vector<int32_t> penalized_;                     // distinct recent ids
};

// Index of the largest value (the first on ties), as llama2.c's argmax.
int32_t Argmax(absl::Span<const float> logits);

}  // namespace sinkserve
