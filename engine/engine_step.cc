// One engine step: Schedule() -> Backend::Forward -> Postprocess(), and the
// turn bookkeeping that follows sampling. What a sampled token does to its
// turn is engine/turn.h, shared with sinkserve-generate, so a greedy turn
// yields the same ids.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/engine.h"

namespace sinkserve {

bool Engine::Step() {
  if (active_.empty()) return false;
  if (scheduler_.Schedule(active_, &plan_) == 0) return false;
  BuildBatch(plan_, &batch_);
  if (config_.on_step) config_.on_step(static_cast<int64_t>(batch_.tokens.size()), static_cast<int64_t>(plan_.size()));
  // Every fed token's last hidden state is kept when the backend runs
  // contrastive candidates, so a contrastive turn can compare with the
  // whole visible context, whichever turns fed it.
  std::vector<float>* hidden = keep_hidden_ ? &hidden_ : nullptr;
  if (absl::Status status = backend_->Forward(batch_, &logits_, hidden); !status.ok()) {
    // Nothing was appended; the sessions in this batch cannot go on safely.
    const std::string message = absl::StrFormat("internal error in the forward pass: %s", status.message());
    for (const ScheduledSeq& item : plan_) EndTurn(*item.session, FinishReason::kError, message, /*emit=*/true);
  } else {
    // Batch entry i is plan_[i]. A fed entry's tokens now fill their cache
    // slots; a candidates entry appended nothing yet.
    for (size_t i = 0; i < plan_.size(); ++i) {
      const SeqEntry& e = batch_.seqs[i];
      if (e.candidates) continue;
      Session& s = *plan_[i].session;
      for (int32_t j = 0; j < e.n_tokens; ++j) {
        s.slot_tokens[static_cast<size_t>(s.geometry.Slot(e.n_past + j))] = batch_.tokens[e.token_begin + j];
        if (hidden != nullptr) s.hidden.Put(e.n_past + j, &hidden_[static_cast<size_t>(e.token_begin + j) * dim_]);
      }
    }
    // Each entry asked for its last logits row, a candidates entry for one per candidate.
    for (size_t i = 0, row = 0; i < plan_.size(); row += plan_[i].rows(), ++i) {
      const ScheduledSeq& item = plan_[i];
      absl::Span<float> rows = absl::MakeSpan(logits_).subspan(row * vocab_size_, static_cast<size_t>(item.rows()) * vocab_size_);
      if (item.candidates) {
        PickContrastive(*item.session, rows,
                        absl::MakeConstSpan(hidden_).subspan(static_cast<size_t>(batch_.seqs[i].token_begin) * dim_,
                                                             static_cast<size_t>(item.n_tokens) * dim_));
      } else {
        Postprocess(item, rows);
      }
    }
  }
  return true;
}

namespace {

// Appends a turn's text to what a resume reports, keeping at most the last
// kLastTurnTextBytes (cut at a UTF-8 character start). Trims in bulk, so a
// long turn costs amortized O(1) per byte.
void AppendLastTurn(LastTurn* last, std::string_view text, int64_t tokens) {
  last->text.append(text);
  last->generated_tokens += tokens;
  if (last->text.size() <= 2 * kLastTurnTextBytes) return;
  last->text = std::string(Utf8Tail(last->text, kLastTurnTextBytes));
  last->truncated = true;
}

}  // namespace

void Engine::Postprocess(const ScheduledSeq& item, absl::Span<float> logits) {
  Session& s = *item.session;
  s.consumed += item.n_tokens;
  bool sample = true;
  if (!item.decode) {
    TurnState& t = *s.turn;
    t.fed += static_cast<size_t>(item.n_tokens);
    sample = t.fed >= t.feed.size();  // else more prompt to prefill
  }
  if (sample) SampleNext(s, logits);
  MaybeStage(s);  // nothing once the turn has ended (its end saved it)
}

void Engine::SampleNext(Session& s, absl::Span<float> logits) {
  TurnState& t = *s.turn;
  if (t.generation.options().sampling.contrastive()) {
    NextCandidates(s, logits);
    return;
  }
  const Turn::Step step = t.generation.Next(logits, &s.recent);
  if (!step.emitted) {
    // An end token (not fed) or non-finite logits (nothing sampled): nothing
    // to carry into the next turn.
    s.phase = Phase::kIdle;
    const std::string error =
        step.finish == FinishReason::kError
            ? absl::StrFormat("the model produced a non-finite logit after %d tokens", s.consumed)
            : "";
    EndTurn(s, *step.finish, error, /*emit=*/true);
    return;
  }
  // From here the token is emitted, so it belongs to the conversation: the
  // decode phase feeds it next step, or EndTurn carries it into the next turn.
  s.phase = Phase::kDecode;
  s.next_token = step.token;
  Emit(s, step);
}

bool Engine::Emit(Session& s, const Turn::Step& step) {
  TurnState& t = *s.turn;
  if (t.generation.generated() == 1) t.first_token = Clock::now();
  AppendLastTurn(&s.last_turn, step.text, 1);
  s.conversation.Append(step.text);
  s.outbox->Push(DeltaEvent{step.text, {step.token}, t.number});
  if (step.finish) {
    EndTurn(s, *step.finish, "", /*emit=*/true);
    return false;
  }
  if (absl::Status room = CheckCacheCapacity(s.cache, s.consumed, 1, context_); !room.ok()) {
    EndTurn(s, FinishReason::kError, std::string(room.message()), /*emit=*/true);
    return false;
  }
  return true;
}

void Engine::NextCandidates(Session& s, absl::Span<float> logits) {
  ContrastiveCandidates next = s.turn->generation.Candidates(logits, s.recent);
  if (next.ids.empty()) {
    s.phase = Phase::kIdle;
    EndTurn(s, FinishReason::kError,
            absl::StrFormat("the model produced a non-finite logit after %d tokens", s.consumed), /*emit=*/true);
    return;
  }
  s.candidates = std::move(next);
  s.phase = Phase::kContrastive;
}

void Engine::PickContrastive(Session& s, absl::Span<float> logits, absl::Span<const float> hidden) {
  TurnState& t = *s.turn;
  const float alpha = t.generation.options().sampling.penalty_alpha;
  const auto pick = static_cast<size_t>(PickCandidate(s.candidates, hidden, s.hidden, s.consumed, alpha));
  const Turn::Step step = t.generation.Accept(s.candidates.ids[pick], &s.recent);
  if (!step.emitted) {  // an end token: never fed, so never committed
    s.phase = Phase::kIdle;
    EndTurn(s, *step.finish, "", /*emit=*/true);
    return;
  }
  if (absl::Status committed = backend_->CommitCandidate(s.cache_id, static_cast<int32_t>(pick)); !committed.ok()) {
    s.phase = Phase::kIdle;
    EndTurn(s, FinishReason::kError, absl::StrFormat("internal error committing a candidate: %s", committed.message()),
            /*emit=*/true);
    return;
  }
  // Committed: the token is in the cache, as a fed one would be.
  s.slot_tokens[static_cast<size_t>(s.geometry.Slot(s.consumed))] = step.token;
  s.hidden.Put(s.consumed, hidden.data() + pick * dim_);
  ++s.consumed;
  if (Emit(s, step)) NextCandidates(s, logits.subspan(pick * vocab_size_, vocab_size_));
  MaybeStage(s);
}

void Engine::EndTurn(Session& s, FinishReason reason, const std::string& error, bool emit) {
  if (s.turn == nullptr) return;
  TurnState& t = *s.turn;
  if (s.phase == Phase::kDecode) s.carry.push_back(s.next_token);
  // A prefill cut short drops the prompt's unfed rest; what was fed stays.
  s.phase = Phase::kIdle;
  s.next_token = -1;
  std::erase(active_, &s);  // safe mid-step: the step iterates plan_
  running_turns_.fetch_sub(1);
  std::string rest = t.generation.Flush(reason);
  AppendLastTurn(&s.last_turn, rest, 0);
  s.last_turn.finished = true;
  s.last_turn.reason = reason;
  s.conversation.Append(rest);
  if (reason == FinishReason::kCancelled || reason == FinishReason::kError) {
    s.conversation_known = false;  // the client may not have the reply whole
  } else {
    s.conversation.FinishAssistant();
  }
  const int64_t evicted = s.evicted_tokens();
  evicted_tokens_.fetch_add(evicted - s.evicted_reported, std::memory_order_relaxed);
  s.evicted_reported = evicted;
  const uint32_t turn_number = t.number;
  DoneEvent done{reason, Usage(s), turn_number, error};
  s.turn.reset();  // `t` dangles from here on
  if (emit && s.outbox != nullptr && !rest.empty()) s.outbox->Push(DeltaEvent{std::move(rest), {}, turn_number});
  // Without `emit` the stream is being detached already: the session is
  // still saved, but no done goes out.
  if (config_.store != nullptr && !s.ephemeral) SaveSession(s);
  if (emit && s.outbox != nullptr) FinishTurnOutput(s, std::move(done));
  MaybeCompact(s);  // after the done took this save's revision: it waits for the delta only
}

TurnUsage Engine::Usage(const Session& s) const {
  TurnUsage u;
  u.session_tokens = s.length();
  u.cache_tokens = s.cache_tokens();
  u.evicted_tokens = s.evicted_tokens();
  if (s.turn == nullptr) return u;
  const TurnState& t = *s.turn;
  u.prompt_tokens = t.prompt_tokens;
  const int64_t generated = t.generation.generated();
  u.generated_tokens = generated;
  if (generated > 0) {
    const Clock::time_point now = Clock::now();
    u.time_to_first_token_ms = std::chrono::duration<double, std::milli>(t.first_token - t.start).count();
    const double decode_s = std::chrono::duration<double>(now - t.first_token).count();
    if (generated > 1 && decode_s > 0) u.tokens_per_second = static_cast<double>(generated - 1) / decode_s;
  }
  return u;
}

}  // namespace sinkserve
