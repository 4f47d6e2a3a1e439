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

#include "engine/backend.h"
#include "engine/session.h"

namespace sinkserve {

struct SchedulerConfig {
  int32_t prefill_chunk = 64;       // most prompt tokens of one session per step
  int32_t step_token_budget = 512;  // decode + prefill tokens per step (decode
                                    // always runs; prefill gets at least 1)
};

// One session's share of a step: its entry i in the batch is plan[i].
struct ScheduledSeq {
  Session* session = nullptr;
  int32_t n_tokens = 0;
  bool decode = false;  // true: next_token; false: a prefill chunk
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config) : config_(config) {}

  // True when the session has work and its client can take more output.
  static bool Runnable(const Session& s);

  // Fills `batch` and `plan` (cleared first) from `active`. Returns the
  // number of scheduled sessions (0: nothing to do).
  size_t Schedule(const std::vector<Session*>& active, Batch* batch, std::vector<ScheduledSeq>* plan);

  const SchedulerConfig& config() const { return config_; }

 private:
  SchedulerConfig config_;
  size_t prefill_cursor_ = 0;  // round-robin start among prefilling sessions
};

}  // namespace sinkserve
