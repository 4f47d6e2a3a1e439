// Plain data crossing the engine's boundary: what a stream asks of the engine
// (OpenRequest, TurnRequest) and what the engine answers through a session's
// Outbox (OpenedEvent, DeltaEvent, DoneEvent, EndEvent). server/ translates
// these to and from the wire types; the engine never sees protobuf.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "engine/cache_policy.h"
#include "engine/conversation_hash.h"

namespace sinkserve {

struct OpenRequest {
  std::string session_id;     // empty: create; else resume (from the session store when not held here)
  CacheRequest cache;         // unset fields: the server default
  std::string system_prompt;
  std::string chat_template;  // empty: the server default
  // Who asks, as the front door knows it (an API key's name, else the peer
  // address): sessions count against this identity's quota. Never echoed.
  std::string client;
  // Never saved to the session store (a stateless request's session).
  bool ephemeral = false;
};

// Per-turn overrides of the server's default sampling parameters.
struct SamplingOverrides {
  std::optional<float> temperature;
  std::optional<int64_t> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<uint64_t> seed;
  std::optional<float> penalty_alpha;  // contrastive search
};

// An earlier message of a conversation the front door replays into a fresh
// session (a stateless OpenAI request carries the whole history).
struct HistoryMessage {
  bool assistant = false;  // false: a user message
  std::string text;
};

struct TurnRequest {
  // Messages fed before `text`, oldest first: user messages through the
  // template, assistant messages verbatim (each closed by the next user
  // message's template tokens). Empty for an ordinary turn.
  std::vector<HistoryMessage> history;
  // When set, the session's conversation so far must hash to this (a
  // resumed request restating its earlier messages), else the stream ends
  // with FAILED_PRECONDITION and the session is left as it was.
  std::optional<ConversationHash> expect_conversation;
  std::string text;
  bool raw = false;
  int64_t max_new_tokens = 0;  // 0: the server default
  int64_t min_new_tokens = 0;
  bool ignore_eos = false;
  std::vector<std::string> stop;
  SamplingOverrides sampling;
};

enum class FinishReason { kEos, kLength, kStop, kCancelled, kError };
const char* FinishReasonName(FinishReason reason);

struct TurnUsage {
  int64_t prompt_tokens = 0;     // this turn's new prompt tokens only
  int64_t generated_tokens = 0;
  int64_t session_tokens = 0;    // the session's length: every turn's tokens
  int64_t cache_tokens = 0;      // tokens the latest query could see
  int64_t evicted_tokens = 0;    // tokens no query can see any more
  double time_to_first_token_ms = 0;
  double tokens_per_second = 0;  // decode rate after the first token
};

// The output of a session's latest turn, kept so that a client whose
// connection dropped mid-turn can show on resume what it never received.
struct LastTurn {
  uint32_t turn = 0;  // 0: no turn has produced output yet
  std::string text;   // the turn's text, at most kLastTurnTextBytes (its tail)
  bool truncated = false;
  int64_t generated_tokens = 0;
  bool finished = false;  // the turn ended (false: it is still running)
  FinishReason reason = FinishReason::kLength;
};
inline constexpr size_t kLastTurnTextBytes = 64 * 1024;

// The last `max_bytes` of `text` at most, starting at a UTF-8 character.
inline std::string_view Utf8Tail(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t cut = text.size() - max_bytes;
  while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
  return text.substr(cut);
}

// How an open brought a session back from the session store.
enum class RestoreKind {
  kNone,      // it was in this server's memory (or is new)
  kExact,     // its stored cache was loaded as it was
  kReplayed,  // its visible tokens were fed again: the stored cache came from another model or KV layout
};

struct OpenedEvent {
  std::string session_id;
  CacheConfig cache;
  std::string model;
  int64_t length = 0;  // the conversation's length in tokens so far
  bool resumed = false;
  LastTurn last_turn;  // set on resume
  RestoreKind restored = RestoreKind::kNone;
  std::string restore_note;  // why a restore replayed
};

struct DeltaEvent {
  std::string text;  // valid UTF-8, possibly empty (held back)
  std::vector<int32_t> token_ids;
  uint32_t turn = 0;
};

struct DoneEvent {
  FinishReason reason = FinishReason::kLength;
  TurnUsage usage;
  uint32_t turn = 0;
  std::string error;  // set when reason == kError
  bool saved = false;  // with a session store: the session as of this turn is in it
};

// Ends the stream with this status: OK after the client half-closed and its
// last turn ended; an error for protocol misuse, takeover or shutdown. Only
// the engine pushes it, and it detaches the stream's session when it does.
struct EndEvent {
  absl::Status status;
};

using ChatEvent = std::variant<OpenedEvent, DeltaEvent, DoneEvent, EndEvent>;

// A snapshot of one session, for GetSession.
struct SessionSnapshot {
  std::string session_id;
  CacheConfig cache;
  int64_t length = 0;  // the conversation's length in tokens
  int64_t cache_tokens = 0;
  int64_t evicted_tokens = 0;
  int64_t turns = 0;
  bool attached = false;
  bool generating = false;
  double idle_seconds = 0;
  std::string chat_template;
};

}  // namespace sinkserve
