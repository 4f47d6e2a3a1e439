// libFuzzer target: OpenAI-compatible request bodies (server/openai.h), as
// any HTTP client may send them. The first byte picks the endpoint and the
// session header; the rest is the body. A parse must answer (a request or
// INVALID_ARGUMENT), never crash; a parsed request's fields stay within the
// bounds the parser promises, and formatting its answer must not crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/openai.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sinkserve;
  if (size < 1) return 0;
  const bool chat = (data[0] & 1) != 0;
  static constexpr std::string_view kHeaders[] = {"", "new", "0123456789abcdef0123456789abcdef", "x"};
  const std::string_view header = kHeaders[(data[0] >> 1) % 4];
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  absl::StatusOr<openai::CompletionRequest> r = openai::ParseCompletionRequest(body, header, chat);
  if (!r.ok()) {
    if (r.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (r->earlier.size() >= openai::kMaxMessages) std::abort();
  if (r->mode == openai::SessionMode::kResume && r->session_id.empty()) std::abort();
  if (chat && r->turn.raw) std::abort();
  openai::ResponseContext c;
  c.chat = chat;
  c.model = r->model;
  c.session_id = r->session_id;
  c.return_token_ids = r->return_token_ids;
  DoneEvent done;
  done.reason = FinishReason::kError;
  done.error = r->turn.text;
  (void)openai::DeltaChunk(c, r->turn.text, {1, 2, 3}, true);
  (void)openai::FinishChunk(c, done);
  (void)openai::UsageChunk(c, done);
  (void)openai::CompletionResponse(c, r->open.system_prompt, {}, done);
  openai::ConversationHash hash;
  for (const HistoryMessage& m : r->earlier) hash.Add(m.assistant, m.text);
  return 0;
}
