// A small fork-join pool for the CPU backend: ParallelFor splits [0, n) into
// one contiguous range per thread, the calling thread included. Workers spin
// briefly before sleeping, since a forward pass issues many short jobs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sinkserve {

class ThreadPool {
 public:
  // threads = total workers including the caller; 0 = hardware concurrency.
  explicit ThreadPool(int32_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int32_t size() const { return static_cast<int32_t>(workers_.size()) + 1; }

  // Calls fn(begin, end, part) over disjoint ranges covering [0, n); part < size() names the thread, for per-thread scratch. Runs inline
  // when n is small or `work` (a rough cost in multiply-adds) is below the
  // point where waking a thread pays.
  void ParallelFor(int64_t n, int64_t work, const std::function<void(int64_t, int64_t, int32_t)>& fn);

  // Calls fn(i, part) for every i in [0, n), each thread taking the next
  // index as it finishes the last: a thread the OS delays (the machine runs
  // gRPC and clients too) takes fewer items instead of holding up the rest.
  void ForEach(int64_t n, const std::function<void(int64_t, int32_t)>& fn);

 private:
  void WorkerLoop(int32_t index);
  void RunShare(int32_t index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int32_t> pending_{0};
  std::atomic<bool> stop_{false};
  // The current job; written before generation_ is bumped.
  const std::function<void(int64_t, int64_t, int32_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int32_t job_parts_ = 0;
};

}  // namespace sinkserve
