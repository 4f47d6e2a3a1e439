// The scheduler: which tokens of which sessions go into the next step's batch.
//
// Every decoding session contributes its one token (so token streams never
// stall), then prefilling sessions take chunks of at most `prefill_chunk`
// tokens, round-robin, from what is left of the per-step token budget, so one
// long prompt cannot starve the others. Sessions whose outbox is full (their
// client is not reading) or that are idle contribute nothing.
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
};

// One session's share of a step. A step's plan is one list of these, passed
// through schedule, forward and postprocess: the backend's batch is built
// from it (BuildBatch) and logits row i goes back to plan[i].
struct ScheduledSeq {
  Session* session = nullptr;
  int32_t n_tokens = 0;
  bool decode = false;  // true: next_token; false: a prefill chunk

  // The tokens this entry feeds: next_token, or the next chunk of the feed.
  absl::Span<const int32_t> tokens() const;
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
  SchedulerConfig config_;
  size_t prefill_cursor_ = 0;  // round-robin start among prefilling sessions
};

// The backend's plain-data batch for a plan (cleared first): entry i is
// plan[i], and each entry asks for its last logits row only.
void BuildBatch(absl::Span<const ScheduledSeq> plan, Batch* batch);

}  // namespace sinkserve
