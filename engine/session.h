// A chat session as the engine thread sees it: its cache, its position in
// the conversation, and the state of the turn it is running. Plain data owned
// by the engine thread; nothing here is shared with other threads except the
// outbox pointer.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/chat_template.h"
#include "engine/chat_types.h"
#include "engine/outbox.h"
#include "engine/sampler.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer.h"

namespace sinkserve {

using Clock = std::chrono::steady_clock;

// Where a session is in its current turn. Prefill and decode are both just
// tokens in the step's batch; the phase says which tokens and what follows.
enum class Phase {
  kIdle,     // no turn running: costs nothing
  kPrefill,  // feeding TurnState::feed[fed..]; samples after the last chunk
  kDecode,   // feeding next_token, the token it sampled last step
};

struct TurnState {
  TurnState(const SamplingParams& params, int32_t vocab, std::vector<std::string> stops, const Tokenizer& tok)
      : sampler(params, vocab), stopper(std::move(stops)), decoder(tok) {}

  uint32_t number = 0;           // the session's turn count, from 1
  std::vector<int32_t> feed;     // carried token(s) + this turn's prompt
  size_t fed = 0;                // how much of feed is in the cache
  int64_t prompt_tokens = 0;     // this turn's own prompt tokens (no carry)
  int64_t generated = 0;
  int64_t max_new = 0;
  int64_t min_new = 0;
  bool ignore_eos = false;
  Sampler sampler;
  StopMatcher stopper;
  StreamDecoder decoder;
  Clock::time_point start;
  Clock::time_point first_token;
};

struct Session {
  std::string id;
  CacheConfig cache;
  CacheGeometry geometry;
  CacheId cache_id = -1;
  const ChatTemplate* chat_template = nullptr;  // owned by the engine
  std::string system_prompt;

  // Conversation position. Every emitted token enters the cache: the token a
  // finished turn sampled last (never fed by that turn) is carried into the
  // next turn's feed, so `consumed + carry.size()` is the session's length.
  int64_t consumed = 0;
  std::vector<int32_t> carry;
  std::vector<int32_t> preamble;  // BOS + system block, fed with the first turn
  bool started = false;           // a turn has been accepted
  uint32_t turns = 0;
  std::vector<int32_t> recent;    // latest tokens, for the repetition penalty

  // The stream attached to this session, or null while detached.
  std::shared_ptr<Outbox> outbox;
  Clock::time_point detached_at;

  Phase phase = Phase::kIdle;
  std::unique_ptr<TurnState> turn;
  int32_t next_token = -1;  // kDecode: the sampled token to feed this step

  int64_t position() const { return consumed + static_cast<int64_t>(carry.size()); }
  // Tokens the latest query could see: min(consumed, S + W).
  int64_t cache_tokens() const {
    const int64_t visible = int64_t{geometry.sinks} + geometry.window;
    return consumed < visible ? consumed : visible;
  }
};

}  // namespace sinkserve
