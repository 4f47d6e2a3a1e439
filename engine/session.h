// A chat session as the engine thread sees it: its cache, the conversation's
// length, the stream attached to it, and the state of the turn it is running. Plain data owned
// by the engine thread; nothing here is shared with other threads except the
// outbox pointer.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/cache_policy.h"
#include "engine/chat_types.h"
#include "engine/contrastive.h"
#include "engine/conversation_hash.h"
#include "engine/outbox.h"
#include "engine/text/chat_template.h"
#include "engine/text/tokenizer.h"
#include "engine/turn.h"

namespace sinkserve {

using Clock = std::chrono::steady_clock;

// Where a session is in its current turn. Prefill and decode are both just
// tokens in the step's batch; the phase says which tokens and what follows.
enum class Phase {
  kIdle,     // no turn running: costs nothing
  kPrefill,  // feeding TurnState::feed[fed..]; samples after the last chunk
  kDecode,   // feeding next_token, the token it sampled last step
  // Contrastive search: running `candidates` for the next position; the
  // one picked is committed to the cache (never fed), the rest dropped.
  kContrastive,
};

// A running turn: its generation pipeline and where its prompt is.
struct TurnState {
  TurnState(TurnOptions options, const Tokenizer& tokenizer, absl::Span<const int32_t> end_tokens, int32_t vocab)
      : generation(std::move(options), tokenizer, end_tokens, vocab) {}

  uint32_t number = 0;           // the session's turn count, from 1
  std::vector<int32_t> feed;     // carried token(s) + this turn's prompt
  size_t fed = 0;                // how much of feed is in the cache
  int64_t prompt_tokens = 0;     // this turn's own prompt tokens (no carry)
  Turn generation;               // sampling, end tokens, stops, text
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
  std::string client;  // the identity that opened it (quota accounting)
  int64_t evicted_reported = 0;  // evicted tokens already counted in the engine's total
  bool ephemeral = false;        // never saved to the session store (a stateless request's)

  // The conversation's length. Every emitted token enters the cache: the
  // token a finished turn sampled last (never fed by that turn) is carried
  // into the next turn's feed, so `dropped + consumed + carry.size()` is
  // the length. `dropped` counts the tokens before a replayed restore
  // rebuilt the cache from the tokens it could see (0 otherwise).
  int64_t consumed = 0;
  int64_t dropped = 0;
  std::vector<int32_t> carry;
  std::vector<int32_t> preamble;  // BOS + system block, fed with the first turn
  bool started = false;           // a turn has been accepted
  uint32_t turns = 0;
  std::vector<int32_t> recent;    // latest tokens, for the repetition penalty
  LastTurn last_turn;             // the latest turn's output, for a resume
  std::vector<int32_t> slot_tokens;  // the token in each cache slot written so far
  // The conversation as messages (user texts and emitted replies), so the
  // HTTP door can check restated history; unknown after a cancelled turn.
  ConversationHash conversation;
  bool conversation_known = true;

  // With a session store: the revision of the latest save asked for, and of
  // the latest the store confirmed; a turn's done waits for its save.
  uint64_t revision = 0;
  uint64_t saved_revision = 0;
  int saves_in_flight = 0;
  bool done_pending = false;        // pending_done goes out when revision `done_revision` is saved
  uint64_t done_revision = 0;
  DoneEvent pending_done;
  std::shared_ptr<Outbox> done_outbox;  // the stream it is for
  // Delta saves: `consumed` as of the latest save asked for (-1: the next
  // save is a full one), and the deltas' K/V bytes and count since the
  // latest full save.
  int64_t chain_consumed = -1;
  int64_t chain_bytes = 0;
  int chain_deltas = 0;
  // The running turn's pieces (SessionState::Staging): their stage, how
  // many, and the revision of the latest, which the next delta chains on.
  uint64_t stage = 0;
  int32_t stage_pieces = 0;
  uint64_t stage_tip = 0;

  // The stream attached to this session, or null while detached.
  std::shared_ptr<Outbox> outbox;
  Clock::time_point detached_at;
  bool closing = false;  // the client half-closed: end the stream once idle
  // The outbox has been full (the client reads nothing) since stalled_since.
  bool stalled = false;
  Clock::time_point stalled_since;

  Phase phase = Phase::kIdle;
  std::unique_ptr<TurnState> turn;
  int32_t next_token = -1;  // kDecode: the sampled token to feed this step
  // Contrastive search (engine/contrastive.h): the last hidden state of every
  // token in the cache, kept when the backend runs candidates (empty
  // otherwise; unknown after a restore from the store), and in
  // Phase::kContrastive this step's candidates.
  HiddenRing hidden;
  ContrastiveCandidates candidates;

  // Tokens in the conversation so far, every turn's prompt and output.
  int64_t length() const { return dropped + consumed + static_cast<int64_t>(carry.size()); }
  // Tokens the latest query could see: min(consumed, S + W).
  int64_t cache_tokens() const { return geometry.VisibleTokens(consumed); }
  // Tokens no query can see any more.
  int64_t evicted_tokens() const { return dropped + geometry.EvictedTokens(consumed); }
  // Between turns as far as a client can tell: no turn runs and no done waits for its save.
  bool idle() const { return phase == Phase::kIdle && !done_pending; }
};

}  // namespace sinkserve
