#include "server/write_pump.h"

namespace sinkserve {

WritePump::WritePump() : thread_([this] { Loop(); }) {}

WritePump::~WritePump() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_one();
  thread_.join();
}

void WritePump::Kick(Stream* stream) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!queued_.insert(stream).second) return;
    queue_.push_back(stream);
  }
  work_.notify_one();  // no syscall when the pump is not waiting
}

void WritePump::Forget(Stream* stream) {
  std::unique_lock<std::mutex> lock(mu_);
  if (queued_.erase(stream) > 0) std::erase(queue_, stream);
  idle_.wait(lock, [&] { return running_ != stream; });
}

void WritePump::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_.wait(lock, [&] { return !queue_.empty() || stop_; });
    if (queue_.empty()) return;  // stopped, with nothing left to start
    Stream* stream = queue_.front();
    queue_.pop_front();
    queued_.erase(stream);
    running_ = stream;
    lock.unlock();
    stream->PumpWrite();
    lock.lock();
    running_ = nullptr;
    idle_.notify_all();
  }
}

}  // namespace sinkserve
