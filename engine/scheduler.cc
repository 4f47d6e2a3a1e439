#include "engine/scheduler.h"

#include <algorithm>

namespace sinkserve {

absl::Span<const int32_t> ScheduledSeq::tokens() const {
  if (decode) return absl::MakeConstSpan(&session->next_token, 1);
  const TurnState& t = *session->turn;
  return absl::MakeConstSpan(t.feed).subspan(t.fed, static_cast<size_t>(n_tokens));
}

bool Scheduler::Runnable(const Session& s) {
  if (s.phase == Phase::kIdle || s.turn == nullptr) return false;
  return s.outbox != nullptr && !s.outbox->Full();
}

size_t Scheduler::Schedule(const std::vector<Session*>& active, std::vector<ScheduledSeq>* plan) {
  plan->clear();
  std::vector<Session*> prefilling;
  for (Session* s : active) {
    if (!Runnable(*s)) continue;
    if (s->phase == Phase::kDecode) {
      plan->push_back({s, 1, true});
    } else {
      prefilling.push_back(s);
    }
  }
  if (prefilling.empty()) return plan->size();

  int64_t budget = std::max<int64_t>(config_.step_token_budget - static_cast<int64_t>(plan->size()), 1);
  const size_t n = prefilling.size();
  const size_t first = prefill_cursor_ % n;
  for (size_t k = 0; k < n && budget > 0; ++k) {
    Session* s = prefilling[(first + k) % n];
    const TurnState& t = *s->turn;
    const int64_t left = static_cast<int64_t>(t.feed.size() - t.fed);
    const int32_t take = static_cast<int32_t>(std::min<int64_t>({left, config_.prefill_chunk, budget}));
    if (take <= 0) continue;
    plan->push_back({s, take, false});
    budget -= take;
  }
  // The next step starts one session later, so each prompt is first in line
  // at least every n steps and progresses even when the budget is tight.
  prefill_cursor_ = first + 1;
  return plan->size();
}

void BuildBatch(absl::Span<const ScheduledSeq> plan, Batch* batch) {
  batch->Clear();
  for (const ScheduledSeq& item : plan) batch->Add(item.session->cache_id, item.session->consumed, item.tokens());
}

}  // namespace sinkserve
