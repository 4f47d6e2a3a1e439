#include "engine/outbox.h"

#include <utility>

namespace sinkserve {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

Outbox::Outbox(size_t capacity, std::function<void()> wake_engine)
    : capacity_(capacity < 1 ? 1 : capacity), wake_engine_(std::move(wake_engine)) {}

void Outbox::SetNotify(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(notify_mu_);
  notify_ = std::move(notify);
}

void Outbox::ClearNotify() {
  std::lock_guard<std::mutex> lock(notify_mu_);
  notify_ = nullptr;
}

void Outbox::Push(ChatEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
    size_.store(events_.size(), std::memory_order_release);
  }
  // Lock order: notify_mu_ may be followed by the owner's own lock, never the
  // reverse while holding mu_.
  std::lock_guard<std::mutex> lock(notify_mu_);
  if (notify_) notify_();
}

std::optional<ChatEvent> Outbox::Pop() { return PopMerged(0); }

std::optional<ChatEvent> Outbox::PopMerged(size_t max_tokens) {
  bool was_full = false;
  std::optional<ChatEvent> event;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (events_.empty()) return std::nullopt;
    was_full = events_.size() >= capacity_;
    event = std::move(events_.front());
    events_.pop_front();
    if (auto* delta = std::get_if<DeltaEvent>(&*event)) {
      while (!events_.empty() && delta->token_ids.size() < max_tokens) {
        auto* next = std::get_if<DeltaEvent>(&events_.front());
        if (next == nullptr || next->turn != delta->turn) break;
        delta->text += next->text;
        delta->token_ids.insert(delta->token_ids.end(), next->token_ids.begin(), next->token_ids.end());
        events_.pop_front();
      }
    }
    size_.store(events_.size(), std::memory_order_release);
  }
  if (was_full && wake_engine_) wake_engine_();
  return event;
}

}  // namespace sinkserve
