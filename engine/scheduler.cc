#include "engine/scheduler.h"

#include <algorithm>
#include <limits>

namespace sinkserve {

absl::Span<const int32_t> ScheduledSeq::tokens() const {
  if (decode) return absl::MakeConstSpan(&session->next_token, 1);
  if (candidates) return absl::MakeConstSpan(session->candidates.ids);
  const TurnState& t = *session->turn;
  return absl::MakeConstSpan(t.feed).subspan(t.fed, static_cast<size_t>(n_tokens));
}

bool Scheduler::Runnable(const Session& s) {
  if (s.phase == Phase::kIdle || s.turn == nullptr) return false;
  return s.outbox != nullptr && !s.outbox->Full();
}

double WeightKeysPerToken(const ModelConfig& c) {
  const double dim = c.dim, q = c.q_dim(), kv = c.kv_dim();
  const double per_layer = dim * (q + 2 * kv) + q * dim + 3 * dim * c.hidden_dim;
  const double weights = c.n_layers * per_layer + dim * c.vocab_size;
  const double per_key = 2.0 * c.n_layers * c.n_heads * c.head_dim;
  return per_key > 0 ? weights / per_key : 0;
}

double Scheduler::TokenCost(const Session& s, int64_t tokens_before) const {
  return config_.weight_keys_per_token + static_cast<double>(s.geometry.VisibleTokens(tokens_before + 1));
}

size_t Scheduler::Schedule(const std::vector<Session*>& active, std::vector<ScheduledSeq>* plan) {
  plan->clear();
  std::vector<Session*> prefilling;
  const bool costed = config_.weight_keys_per_token > 0;
  double decode_work = 0;  // > 0 exactly when costed and someone decodes
  for (Session* s : active) {
    if (!Runnable(*s)) continue;
    if (s->phase == Phase::kDecode) {
      plan->push_back({s, 1, true});
      if (costed) decode_work += TokenCost(*s, s->consumed);
    } else if (s->phase == Phase::kContrastive) {
      const auto k = static_cast<int32_t>(s->candidates.ids.size());
      plan->push_back({.session = s, .n_tokens = k, .candidates = true});
      if (costed) decode_work += k * TokenCost(*s, s->consumed);
    } else {
      prefilling.push_back(s);
    }
  }
  if (prefilling.empty()) return plan->size();

  int64_t decode_tokens = 0;
  for (const ScheduledSeq& item : *plan) decode_tokens += item.n_tokens;
  int64_t budget = std::max<int64_t>(config_.step_token_budget - decode_tokens, 1);
  // Prefill work left this step; unbounded when no one is decoding.
  double work = decode_work > 0 ? std::max(config_.prefill_share * decode_work,
                                           config_.prefill_chunk * config_.weight_keys_per_token)
                                : std::numeric_limits<double>::infinity();
  const size_t n = prefilling.size();
  const size_t first = prefill_cursor_ % n;
  bool any = false;
  for (size_t k = 0; k < n && budget > 0 && work > 0; ++k) {
    Session* s = prefilling[(first + k) % n];
    const TurnState& t = *s->turn;
    const int64_t left = static_cast<int64_t>(t.feed.size() - t.fed);
    int32_t take = static_cast<int32_t>(std::min<int64_t>({left, config_.prefill_chunk, budget}));
    if (take <= 0) continue;
    if (decode_work > 0) {
      // Every token of the chunk priced as its last (the most keys).
      const double per_token = TokenCost(*s, s->consumed + take - 1);
      const auto affordable = static_cast<int32_t>(std::min<double>(work / per_token, take));
      take = std::max(affordable, any ? 0 : 1);  // the first prompt in line always moves
      if (take == 0) continue;  // a prompt nearer its start may still fit
      work -= take * per_token;
    }
    plan->push_back({s, take, false});
    budget -= take;
    any = true;
  }
  // The next step starts one session later, so each prompt is first in line
  // at least every n steps and progresses even when the budget is tight.
  prefill_cursor_ = first + 1;
  return plan->size();
}

void BuildBatch(absl::Span<const ScheduledSeq> plan, Batch* batch) {
  batch->Clear();
  for (const ScheduledSeq& item : plan) {
    if (item.candidates) {
      batch->AddCandidates(item.session->cache_id, item.session->consumed, item.tokens());
    } else {
      batch->Add(item.session->cache_id, item.session->consumed, item.tokens());
    }
  }
}

}  // namespace sinkserve
