// A session's outbox: the bounded queue through which the engine thread
// answers one stream. The engine pushes; the stream's owner (a gRPC reactor)
// pops when it can write. A notify hook tells the owner that something
// arrived; it runs on the engine thread and must not block (a reactor uses it
// only to start a write).
//
// Backpressure: the engine stops scheduling a session whose outbox is Full()
// (its client is not reading). A Pop that takes the outbox back below
// capacity wakes the engine, so the session resumes without polling.
// Terminal events (done, end) are accepted past capacity, so the bound is
// capacity + 2.
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

#include "engine/chat_types.h"

namespace sinkserve {

class Outbox {
 public:
  // `wake_engine` is called (from the popping thread) when a Pop frees room
  // in a full outbox.
  Outbox(size_t capacity, std::function<void()> wake_engine);
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Owner side. The hook runs after every Push; ClearNotify returns only once
  // no hook call is running, so the owner may be destroyed afterwards.
  void SetNotify(std::function<void()> notify);
  void ClearNotify();
  std::optional<ChatEvent> Pop();
  // Pop() that also merges the deltas queued right behind a delta of the
  // same turn into it, up to `max_tokens` ids: lossless (the text stays valid
  // UTF-8 and keeps its ids), and a client that falls behind gets fewer,
  // larger messages instead of one per token.
  std::optional<ChatEvent> PopMerged(size_t max_tokens);

  // Engine side.
  void Push(ChatEvent event);
  bool Full() const { return size_.load(std::memory_order_acquire) >= capacity_; }
  size_t size() const { return size_.load(std::memory_order_acquire); }
  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  const std::function<void()> wake_engine_;
  std::mutex mu_;  // guards events_
  std::deque<ChatEvent> events_;
  std::atomic<size_t> size_{0};
  std::mutex notify_mu_;  // guards notify_ and serializes its calls
  std::function<void()> notify_;
};

}  // namespace sinkserve
