// The scheduler: which tokens of which sessions go into the next step's batch.
//
// Every decoding session contributes its one token (so token streams never
// stall; a contrastive one its top_k candidates), then prefilling sessions take chunks of at most `prefill_chunk`
// tokens, round-robin, from what is left of the per-step token budget, so one
// long prompt cannot starve the others. Sessions whose outbox is full (their
// client is not reading) or that are idle contribute nothing.
//
// While sessions are decoding, prefill is also capped by work, not only by
// tokens: a token costs its weight matmuls plus attention over every key it
// sees, so 64 prompt tokens deep in a long window can cost many times a
// step of 64 decodes. The step's prefill work is held to `prefill_share` of
// its decodes' work (at least one chunk's weight work, and one token), which
// bounds how much anyone's prompt slows the sessions that are streaming.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/session.h"

namespace sinkserve {

struct SchedulerConfig {
  int32_t prefill_chunk = 64;       // most prompt tokens of one session per step
  int32_t step_token_budget = 512;  // decode + prefill tokens per step (decode
                                    // always runs; prefill gets at least 1)
  // While decodes run, a step's prefill work is at most this fraction of its
  // decodes' work (or one chunk's weight work, whichever is more).
  double prefill_share = 0.5;
  // A token's weight matmuls, as the number of attention keys that cost the
  // same (see WeightKeysPerToken). Negative: the engine derives it from the
  // model; 0: prefill is capped by tokens only.
  double weight_keys_per_token = -1;
};

// The weight work of one token (multiply-adds of every projection, the MLP
// and the classifier) over the attention work of one key it attends to
// (QK and PV over every head of every layer): for stories260K about 400, for
// an 8B Llama about 30,000.
double WeightKeysPerToken(const ModelConfig& config);

// One session's share of a step. A step's plan is one list of these, passed
// through schedule, forward and postprocess: the backend's batch is built
// from it (BuildBatch) and logits row i goes back to plan[i].
struct ScheduledSeq {
  Session* session = nullptr;
  int32_t n_tokens = 0;
  bool decode = false;      // true: next_token; false: a prefill chunk
  bool candidates = false;  // contrastive candidates (Phase::kContrastive); decode is false

  // The tokens this entry feeds: next_token, the candidates, or the next
  // chunk of the feed.
  absl::Span<const int32_t> tokens() const;
  // Logits rows it gets back: one per candidate, else one.
  int32_t rows() const { return candidates ? n_tokens : 1; }
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config) : config_(config) {}

  // True when the session has work and its client can take more output.
  static bool Runnable(const Session& s);

  // Fills `plan` (cleared first) from `active`. Returns the number of
  // scheduled sessions (0: nothing to do).
  size_t Schedule(const std::vector<Session*>& active, std::vector<ScheduledSeq>* plan);

  const SchedulerConfig& config() const { return config_; }

 private:
  // The work of a token that follows `tokens_before` tokens of `s`, in keys.
  double TokenCost(const Session& s, int64_t tokens_before) const;

  SchedulerConfig config_;
  size_t prefill_cursor_ = 0;  // round-robin start among prefilling sessions
};

// The backend's plain-data batch for a plan (cleared first): entry i is
// plan[i], and each entry asks for its last logits row only (candidates:
// one per candidate).
void BuildBatch(absl::Span<const ScheduledSeq> plan, Batch* batch);

}  // namespace sinkserve
