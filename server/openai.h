// The OpenAI-compatible HTTP API's bodies: requests parsed into what the
// engine takes (OpenRequest, TurnRequest), and the engine's events formatted
// as OpenAI JSON (whole responses, or Server-Sent Events chunks). JSON goes
// through nlohmann-json. Pure functions, no I/O: server/http_server.cc does
// the HTTP, and tests and the fuzzer call these directly.
//
// The session extension: a request names its session in the `x-session-id`
// header or the `session_id` body field.
//   - absent: stateless, as OpenAI is. Every message is fed into a fresh
//     session that is deleted when the response ends.
//   - "new": the same, but the session stays, and the response names it
//     (`x-session-id` header, `session_id` in the body or in every chunk).
//   - an id: only the last message (a user message) is fed, appended to
//     that session's cache; the earlier ones are not re-encoded. They must be
//     either absent or exactly the conversation the server has seen in that
//     session (user messages and the replies it generated, system messages
//     aside); otherwise the answer is 409 Conflict, and nothing is fed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_types.h"
#include "engine/conversation_hash.h"

namespace sinkserve::openai {

enum class SessionMode { kStateless, kNew, kResume };

// Caps on a request beyond the engine's own (which the turn still meets).
inline constexpr size_t kMaxMessages = 4096;

struct CompletionRequest {
  bool chat = true;  // /v1/chat/completions; false: /v1/completions
  SessionMode mode = SessionMode::kStateless;
  std::string session_id;  // kResume
  std::string model;       // echoed; any value is accepted (one model per server)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool return_token_ids = false;  // extension: the generated token ids too
  OpenRequest open;            // system prompt and cache (new sessions only)
  // The messages before the last one, system messages aside (kResume checks
  // them against the session's record; the others feed them).
  std::vector<HistoryMessage> earlier;
  TurnRequest turn;  // the last message, and the sampling and length fields
};

// Parses a request body. `session_header` is the x-session-id header (empty
// when absent; it wins over the body field). INVALID_ARGUMENT naming the
// field for anything malformed.
absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body, std::string_view session_header,
                                                         bool chat);

using sinkserve::ConversationHash;  // engine/conversation_hash.h

// What the server knows of a response in progress, for formatting.
struct ResponseContext {
  bool chat = true;
  std::string id;          // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;     // unix seconds
  std::string model;
  std::string session_id;  // empty: stateless (not shown)
  CacheConfig cache;
  bool return_token_ids = false;
};

const char* FinishReasonText(FinishReason reason);

// One SSE event ("data: {...}\n\n") carrying a text delta (and its token
// ids, with return_token_ids).
std::string DeltaChunk(const ResponseContext& c, std::string_view text, const std::vector<int32_t>& ids,
                       bool first);
// The event that carries the finish reason (an empty delta).
std::string FinishChunk(const ResponseContext& c, const DoneEvent& done);
// The usage event of stream_options.include_usage (no choices).
std::string UsageChunk(const ResponseContext& c, const DoneEvent& done);
// An error event inside a stream whose headers are already sent.
std::string ErrorChunk(std::string_view message);
inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

// A whole (non-streaming) response; `ids` go in sinkserve.token_ids with
// return_token_ids.
std::string CompletionResponse(const ResponseContext& c, std::string_view text, const std::vector<int32_t>& ids,
                               const DoneEvent& done);

// An OpenAI error body: {"error": {"message", "type", "code"}}.
std::string ErrorBody(std::string_view message, std::string_view type, int http_status);
// The HTTP status and error type an engine status maps to.
int HttpStatusFor(const absl::Status& status);
const char* ErrorTypeFor(int http_status);

// GET /v1/models.
std::string ModelsResponse(std::string_view model, int64_t created);
// GET /v1/sessions/{id}.
std::string SessionResponse(const SessionSnapshot& s);

}  // namespace sinkserve::openai
