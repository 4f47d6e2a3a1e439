#include "server/openai.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/status_macros.h"

namespace sinkserve::openai {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("'", std::string(field), "' ", std::string(what)));
}

// Text of a message's content: a string, or an array of {"type": "text",
// "text": ...} parts (joined); null for an assistant message with none.
absl::StatusOr<std::string> ContentText(const Json& content, std::string_view field) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) return std::string();
  if (!content.is_array()) return Invalid(field, "must be a string or an array of text parts");
  std::string text;
  for (const Json& part : content) {
    // (Compared as JSON: a `type` that is not a string is simply not "text".)
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return Invalid(field, "parts must be {\"type\": \"text\", \"text\": \"...\"} (only text is supported)");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

absl::StatusOr<std::optional<double>> Number(const Json& body, const char* field, double lo, double hi) {
  if (!body.contains(field) || body[field].is_null()) return std::optional<double>();
  if (!body[field].is_number()) return Invalid(field, "must be a number");
  const double v = body[field].get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return Invalid(field, absl::StrCat("must be between ", lo, " and ", hi));
  }
  return std::optional<double>(v);
}

absl::StatusOr<std::optional<int64_t>> Integer(const Json& body, const char* field, int64_t lo, int64_t hi) {
  if (!body.contains(field) || body[field].is_null()) return std::optional<int64_t>();
  if (!body[field].is_number_integer()) return Invalid(field, "must be an integer");
  // Unsigned values above int64's range read as negative here: out of range.
  const int64_t v = body[field].is_number_unsigned() && body[field].get<uint64_t>() > uint64_t{INT64_MAX}
                        ? -1
                        : body[field].get<int64_t>();
  if (v < lo || v > hi) return Invalid(field, absl::StrCat("must be between ", lo, " and ", hi));
  return std::optional<int64_t>(v);
}

absl::Status ParseSampling(const Json& body, CompletionRequest* r) {
  TurnRequest& t = r->turn;
  ASSIGN_OR_RETURN(auto temperature, Number(body, "temperature", 0, 2));
  if (temperature) t.sampling.temperature = static_cast<float>(*temperature);
  ASSIGN_OR_RETURN(auto top_p, Number(body, "top_p", 0, 1));
  if (top_p) t.sampling.top_p = static_cast<float>(*top_p);
  ASSIGN_OR_RETURN(auto min_p, Number(body, "min_p", 0, 1));
  if (min_p) t.sampling.min_p = static_cast<float>(*min_p);
  ASSIGN_OR_RETURN(auto penalty, Number(body, "repetition_penalty", 0.01, 100));
  if (penalty) t.sampling.repetition_penalty = static_cast<float>(*penalty);
  ASSIGN_OR_RETURN(auto top_k, Integer(body, "top_k", 0, 1 << 20));
  if (top_k) t.sampling.top_k = *top_k;
  // Contrastive search, as transformers names it (top_k gives the candidates).
  ASSIGN_OR_RETURN(auto alpha, Number(body, "penalty_alpha", 0, 1));
  if (alpha) t.sampling.penalty_alpha = static_cast<float>(*alpha);
  ASSIGN_OR_RETURN(auto seed, Integer(body, "seed", INT64_MIN, INT64_MAX));
  if (seed) t.sampling.seed = static_cast<uint64_t>(*seed);
  // max_completion_tokens is the newer name; either works.
  for (const char* field : {"max_tokens", "max_completion_tokens"}) {
    ASSIGN_OR_RETURN(auto max_tokens, Integer(body, field, 1, INT64_MAX));
    if (max_tokens) t.max_new_tokens = *max_tokens;
  }
  // Extensions llama.cpp's server also takes.
  if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
    if (!body["ignore_eos"].is_boolean()) return Invalid("ignore_eos", "must be true or false");
    t.ignore_eos = body["ignore_eos"].get<bool>();
  }
  ASSIGN_OR_RETURN(auto min_tokens, Integer(body, "min_tokens", 0, INT64_MAX));
  if (min_tokens) t.min_new_tokens = *min_tokens;
  ASSIGN_OR_RETURN(auto n, Integer(body, "n", 1, 1));  // only one choice per request
  (void)n;
  if (body.contains("stop") && !body["stop"].is_null()) {
    const Json& stop = body["stop"];
    if (stop.is_string()) {
      t.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const Json& s : stop) {
        if (!s.is_string()) return Invalid("stop", "must be a string or an array of strings");
        // The engine caps the count and bytes; this only stops a huge array
        // from being copied first.
        if (t.stop.size() > 1024) return Invalid("stop", "has too many strings");
        t.stop.push_back(s.get<std::string>());
      }
    } else {
      return Invalid("stop", "must be a string or an array of strings");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseCache(const Json& body, CompletionRequest* r) {
  if (!body.contains("cache") || body["cache"].is_null()) return absl::OkStatus();
  const Json& cache = body["cache"];
  if (!cache.is_object()) return Invalid("cache", "must be an object {policy, sinks, window}");
  if (cache.contains("policy") && !cache["policy"].is_null()) {
    if (!cache["policy"].is_string()) return Invalid("cache.policy", "must be a string");
    ASSIGN_OR_RETURN(r->open.cache.policy, ParseCachePolicy(cache["policy"].get<std::string>()));
  }
  ASSIGN_OR_RETURN(auto sinks, Integer(cache, "sinks", 0, kMaxCacheTokens));
  if (sinks) r->open.cache.sinks = static_cast<int32_t>(*sinks);
  ASSIGN_OR_RETURN(auto window, Integer(cache, "window", 1, kMaxCacheTokens));
  if (window) r->open.cache.window = static_cast<int32_t>(*window);
  return absl::OkStatus();
}

absl::Status ParseMessages(const Json& body, CompletionRequest* r) {
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
    return Invalid("messages", "must be a non-empty array");
  }
  const Json& messages = body["messages"];
  if (messages.size() > kMaxMessages) return Invalid("messages", absl::StrCat("has over ", kMaxMessages, " entries"));
  std::vector<std::string> system;
  std::vector<HistoryMessage> conversation;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Invalid(field, "must be an object with a string 'role'");
    }
    const std::string role = m["role"].get<std::string>();
    ASSIGN_OR_RETURN(std::string text, ContentText(m.contains("content") ? m["content"] : Json(), field + ".content"));
    if (role == "system" || role == "developer") {
      system.push_back(std::move(text));
    } else if (role == "user" || role == "assistant") {
      conversation.push_back({role == "assistant", std::move(text)});
    } else {
      return Invalid(field + ".role", "must be system, developer, user or assistant (tools are not supported)");
    }
  }
  if (conversation.empty() || conversation.back().assistant) {
    return Invalid("messages", "must end with a user message");
  }
  r->open.system_prompt = absl::StrJoin(system, "\n\n");
  r->turn.text = std::move(conversation.back().text);
  conversation.pop_back();
  r->earlier = std::move(conversation);
  return absl::OkStatus();
}

Json Usage(const DoneEvent& done) {
  const TurnUsage& u = done.usage;
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.generated_tokens},
          {"total_tokens", u.prompt_tokens + u.generated_tokens}};
}

// The extension object: what the session's cache holds after the turn.
Json CacheState(const ResponseContext& c, const DoneEvent& done) {
  const TurnUsage& u = done.usage;
  return {{"session_tokens", u.session_tokens},
          {"cache_tokens", u.cache_tokens},
          {"evicted_tokens", u.evicted_tokens},
          {"policy", CachePolicyName(c.cache.policy)},
          {"sinks", c.cache.sinks},
          {"window", c.cache.window},
          {"time_to_first_token_ms", u.time_to_first_token_ms},
          {"tokens_per_second", u.tokens_per_second}};
}

Json Envelope(const ResponseContext& c, bool chunk) {
  Json j = {{"id", c.id},
            {"object", c.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
            {"created", c.created},
            {"model", c.model}};
  if (!c.session_id.empty()) j["session_id"] = c.session_id;
  return j;
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }
std::string Event(const Json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

absl::StatusOr<CompletionRequest> ParseBody(std::string_view body, std::string_view session_header, bool chat);

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(std::string_view body, std::string_view session_header,
                                                         bool chat) {
  // Every access below checks its types first; this is the net under them,
  // so that no exception of the JSON library leaves this module (the fuzzer
  // found one that did: a content part whose "type" was not a string).
  try {
    return ParseBody(body, session_header, chat);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("the body does not have the expected shape: ", e.what()));
  }
}

namespace {

absl::StatusOr<CompletionRequest> ParseBody(std::string_view body, std::string_view session_header, bool chat) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the body is not valid JSON (UTF-8)");
  if (!j.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (j.contains("model") && j["model"].is_string()) r.model = j["model"].get<std::string>();
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) return Invalid("stream", "must be true or false");
    r.stream = j["stream"].get<bool>();
  }
  if (j.contains("return_token_ids") && !j["return_token_ids"].is_null()) {
    if (!j["return_token_ids"].is_boolean()) return Invalid("return_token_ids", "must be true or false");
    r.return_token_ids = j["return_token_ids"].get<bool>();
  }
  if (j.contains("stream_options") && j["stream_options"].is_object()) {
    const Json& o = j["stream_options"];
    if (o.contains("include_usage") && o["include_usage"].is_boolean()) r.include_usage = o["include_usage"].get<bool>();
  }
  std::string session(session_header);
  if (session.empty() && j.contains("session_id") && !j["session_id"].is_null()) {
    if (!j["session_id"].is_string()) return Invalid("session_id", "must be a string");
    session = j["session_id"].get<std::string>();
  }
  if (session.empty()) {
    r.mode = SessionMode::kStateless;
  } else if (session == "new") {
    r.mode = SessionMode::kNew;
  } else {
    r.mode = SessionMode::kResume;
    r.session_id = session;
  }
  if (chat) {
    RETURN_IF_ERROR(ParseMessages(j, &r));
  } else {
    const Json* prompt = j.contains("prompt") ? &j["prompt"] : nullptr;
    if (prompt != nullptr && prompt->is_array() && prompt->size() == 1) prompt = &(*prompt)[0];
    if (prompt == nullptr || !prompt->is_string()) return Invalid("prompt", "must be a string");
    r.turn.text = prompt->get<std::string>();
    r.turn.raw = true;
  }
  RETURN_IF_ERROR(ParseSampling(j, &r));
  RETURN_IF_ERROR(ParseCache(j, &r));
  if (r.mode == SessionMode::kResume && j.contains("cache") && !j["cache"].is_null()) {
    return Invalid("cache", "applies only when a session is created (x-session-id: new or none)");
  }
  return r;
}

}  // namespace

const char* FinishReasonText(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "stop";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "stop";
}

std::string DeltaChunk(const ResponseContext& c, std::string_view text, const std::vector<int32_t>& ids,
                       bool first) {
  Json j = Envelope(c, true);
  Json choice = {{"index", 0}, {"finish_reason", nullptr}};
  if (c.chat) {
    Json delta = {{"content", text}};
    if (first) delta["role"] = "assistant";
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  if (c.return_token_ids) choice["token_ids"] = ids;
  j["choices"] = Json::array({choice});
  return Event(j);
}

std::string FinishChunk(const ResponseContext& c, const DoneEvent& done) {
  Json j = Envelope(c, true);
  Json choice = {{"index", 0}, {"finish_reason", FinishReasonText(done.reason)}};
  if (c.chat) {
    choice["delta"] = Json::object();
  } else {
    choice["text"] = "";
  }
  j["choices"] = Json::array({choice});
  if (done.reason == FinishReason::kError) j["error"] = {{"message", done.error}};
  return Event(j);
}

std::string UsageChunk(const ResponseContext& c, const DoneEvent& done) {
  Json j = Envelope(c, true);
  j["choices"] = Json::array();
  j["usage"] = Usage(done);
  j["sinkserve"] = CacheState(c, done);
  return Event(j);
}

std::string ErrorChunk(std::string_view message) {
  return Event(Json{{"error", {{"message", message}, {"type", "server_error"}}}});
}

std::string CompletionResponse(const ResponseContext& c, std::string_view text, const std::vector<int32_t>& ids,
                               const DoneEvent& done) {
  Json j = Envelope(c, false);
  Json choice = {{"index", 0}, {"finish_reason", FinishReasonText(done.reason)}};
  if (c.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  j["choices"] = Json::array({choice});
  j["usage"] = Usage(done);
  j["sinkserve"] = CacheState(c, done);
  if (c.return_token_ids) j["sinkserve"]["token_ids"] = ids;
  if (done.reason == FinishReason::kError) j["error"] = {{"message", done.error}};
  return Dump(j);
}

std::string ErrorBody(std::string_view message, std::string_view type, int http_status) {
  return Dump(Json{{"error", {{"message", message}, {"type", type}, {"code", http_status}}}});
}

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

const char* ErrorTypeFor(int http_status) {
  switch (http_status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 409: return "conflict_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return "server_error";
  }
}

std::string ModelsResponse(std::string_view model, int64_t created) {
  return Dump(Json{{"object", "list"},
                   {"data", Json::array({{{"id", model}, {"object", "model"}, {"created", created},
                                          {"owned_by", "sinkserve"}}})}});
}

std::string SessionResponse(const SessionSnapshot& s) {
  return Dump(Json{{"session_id", s.session_id},
                   {"policy", CachePolicyName(s.cache.policy)},
                   {"sinks", s.cache.sinks},
                   {"window", s.cache.window},
                   {"length", s.length},
                   {"cache_tokens", s.cache_tokens},
                   {"evicted_tokens", s.evicted_tokens},
                   {"turns", s.turns},
                   {"attached", s.attached},
                   {"generating", s.generating},
                   {"idle_seconds", s.idle_seconds},
                   {"chat_template", s.chat_template}});
}

}  // namespace sinkserve::openai
