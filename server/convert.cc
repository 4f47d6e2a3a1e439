#include "server/convert.h"

#include <string>

#include "absl/strings/str_format.h"
#include "engine/one_line.h"

namespace sinkserve {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), OneLine(status.message()));
}

absl::StatusOr<OpenRequest> FromProto(const v1::Open& open) {
  OpenRequest r;
  r.session_id = open.session_id();
  switch (open.cache().policy()) {
    case v1::CACHE_POLICY_UNSPECIFIED: break;
    case v1::CACHE_POLICY_SINK_WINDOW: r.cache.policy = CachePolicy::kSinkWindow; break;
    case v1::CACHE_POLICY_WINDOW: r.cache.policy = CachePolicy::kWindow; break;
    case v1::CACHE_POLICY_DENSE: r.cache.policy = CachePolicy::kDense; break;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "unknown cache policy %d; use SINK_WINDOW, WINDOW or DENSE", static_cast<int>(open.cache().policy())));
  }
  constexpr uint32_t kMaxTokens = kMaxCacheTokens;
  if (open.cache().sink_tokens() > kMaxTokens || open.cache().window_tokens() > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrFormat("sink_tokens and window_tokens must be at most %d", kMaxTokens));
  }
  r.cache.sinks = static_cast<int32_t>(open.cache().sink_tokens());
  r.cache.window = static_cast<int32_t>(open.cache().window_tokens());
  r.system_prompt = open.system_prompt();
  r.chat_template = open.chat_template();
  return r;
}

TurnRequest FromProto(const v1::Turn& turn) {
  TurnRequest r;
  r.text = turn.text();
  r.raw = turn.raw();
  r.max_new_tokens = turn.max_new_tokens();
  r.min_new_tokens = turn.min_new_tokens();
  r.ignore_eos = turn.ignore_eos();
  r.stop.assign(turn.stop().begin(), turn.stop().end());
  const v1::SamplingParams& s = turn.sampling();
  if (s.has_temperature()) r.sampling.temperature = s.temperature();
  if (s.has_top_k()) r.sampling.top_k = s.top_k();
  if (s.has_penalty_alpha()) r.sampling.penalty_alpha = s.penalty_alpha();
  if (s.has_top_p()) r.sampling.top_p = s.top_p();
  if (s.has_min_p()) r.sampling.min_p = s.min_p();
  if (s.has_repetition_penalty()) r.sampling.repetition_penalty = s.repetition_penalty();
  if (s.has_seed()) r.sampling.seed = s.seed();
  return r;
}

v1::CachePolicy ToProto(CachePolicy policy) {
  switch (policy) {
    case CachePolicy::kSinkWindow: return v1::CACHE_POLICY_SINK_WINDOW;
    case CachePolicy::kWindow: return v1::CACHE_POLICY_WINDOW;
    case CachePolicy::kDense: return v1::CACHE_POLICY_DENSE;
    case CachePolicy::kRecompute: break;
  }
  return v1::CACHE_POLICY_UNSPECIFIED;
}

void ToProto(const CacheConfig& cache, v1::CacheConfig* out) {
  out->set_policy(ToProto(cache.policy));
  out->set_sink_tokens(static_cast<uint32_t>(cache.sinks));
  out->set_window_tokens(static_cast<uint32_t>(cache.window));
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const TurnUsage& u, v1::Usage* out) {
  out->set_prompt_tokens(static_cast<uint32_t>(u.prompt_tokens));
  out->set_generated_tokens(static_cast<uint32_t>(u.generated_tokens));
  out->set_session_tokens(static_cast<uint64_t>(u.session_tokens));
  out->set_cache_tokens(static_cast<uint32_t>(u.cache_tokens));
  out->set_evicted_tokens(static_cast<uint64_t>(u.evicted_tokens));
  out->set_time_to_first_token_ms(u.time_to_first_token_ms);
  out->set_tokens_per_second(u.tokens_per_second);
}

void ToProto(const SessionSnapshot& s, v1::SessionInfo* out) {
  out->set_session_id(s.session_id);
  ToProto(s.cache, out->mutable_cache());
  out->set_position(static_cast<uint64_t>(s.length));  // the wire name of the length
  out->set_cache_tokens(static_cast<uint32_t>(s.cache_tokens));
  out->set_evicted_tokens(static_cast<uint64_t>(s.evicted_tokens));
  out->set_turns(static_cast<uint32_t>(s.turns));
  out->set_attached(s.attached);
  out->set_generating(s.generating);
  out->set_idle_seconds(s.idle_seconds);
  out->set_chat_template(s.chat_template);
}

bool ToProto(const ChatEvent& event, v1::ChatResponse* out) {
  out->Clear();
  if (const auto* e = std::get_if<OpenedEvent>(&event)) {
    v1::Opened* o = out->mutable_opened();
    o->set_session_id(e->session_id);
    ToProto(e->cache, o->mutable_cache());
    o->set_model(e->model);
    o->set_position(static_cast<uint64_t>(e->length));  // the wire name of the length
    o->set_resumed(e->resumed);
    if (e->resumed) {
      v1::LastTurn* last = o->mutable_last_turn();
      last->set_turn(e->last_turn.turn);
      last->set_text(e->last_turn.text);
      last->set_truncated(e->last_turn.truncated);
      last->set_generated_tokens(static_cast<uint32_t>(e->last_turn.generated_tokens));
      if (e->last_turn.finished) last->set_reason(ToProto(e->last_turn.reason));
    }
    switch (e->restored) {
      case RestoreKind::kNone: break;
      case RestoreKind::kExact: o->set_restored(v1::RESTORE_KIND_EXACT); break;
      case RestoreKind::kReplayed: o->set_restored(v1::RESTORE_KIND_REPLAYED); break;
    }
    o->set_restore_note(e->restore_note);
    return true;
  }
  if (const auto* e = std::get_if<DeltaEvent>(&event)) {
    v1::Delta* d = out->mutable_delta();
    d->set_text(e->text);
    for (int32_t id : e->token_ids) d->add_token_ids(static_cast<uint32_t>(id));
    d->set_turn(e->turn);
    return true;
  }
  if (const auto* e = std::get_if<DoneEvent>(&event)) {
    v1::TurnDone* d = out->mutable_done();
    d->set_reason(ToProto(e->reason));
    ToProto(e->usage, d->mutable_usage());
    d->set_turn(e->turn);
    d->set_error(e->error);
    d->set_saved(e->saved);
    return true;
  }
  return false;
}

}  // namespace sinkserve
