// The thread that starts writes for streams whose outbox just received an
// event. Without it the outbox's notify hook would call StartWrite on the
// engine thread, and gRPC would serialize the message and enter sendmsg (and,
// on loopback, the receiver's TCP stack) there: 16 streams cost the engine a
// socket write each per step, in series with the forward pass. Here the
// engine only queues a pointer. A stream already writing continues from its
// own OnWriteDone, and a stream whose client lags behind finds several
// deltas queued when its turn comes, which PopMerged sends as one message.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

namespace sinkserve {

class WritePump {
 public:
  // A stream the pump can start writes for (a ChatReactor).
  class Stream {
   public:
    virtual void PumpWrite() = 0;

   protected:
    ~Stream() = default;
  };

  WritePump();
  ~WritePump();  // the pump must be idle: every stream Forget()-ed
  WritePump(const WritePump&) = delete;
  WritePump& operator=(const WritePump&) = delete;

  // Queues a PumpWrite for `stream`; a stream already queued is not queued
  // twice. Any thread; takes only the pump's lock.
  void Kick(Stream* stream);

  // Drops `stream` from the queue and returns once no PumpWrite of it runs,
  // so the caller may destroy it. The stream must not be kicked afterwards.
  // Not to be called from inside PumpWrite: a ChatReactor calls it from
  // OnDone, which gRPC runs on its own executor (the reactor is not
  // InternalInlineable), never inside the Finish a PumpWrite may call.
  void Forget(Stream* stream);

 private:
  void Loop();

  std::mutex mu_;  // guards everything below
  std::condition_variable work_;  // the queue is non-empty, or stop_
  std::condition_variable idle_;  // running_ changed
  std::deque<Stream*> queue_;
  std::unordered_set<Stream*> queued_;
  Stream* running_ = nullptr;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the state above exists
};

}  // namespace sinkserve
