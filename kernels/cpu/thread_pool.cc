#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <limits>

namespace sinkserve {
namespace {
// Below this many multiply-adds a job runs on the caller alone.
constexpr int64_t kMinParallelWork = 1 << 17;
// How long a worker spins for the next job before it sleeps on the
// condition variable. A forward pass issues a job every few tens of
// microseconds, and a sleeping worker needs a futex wake-up and a context
// switch to start one. Measured on the 2-core dev box (85M-parameter model,
// batch-1 decode, two threads, tok/s): spinning ~20 us 206-222 (Q8_0) and
// 374-376 (Q4_K_M); ~200 us 239-242 and 407-437; ~2 ms no better.
constexpr auto kSpinTime = std::chrono::microseconds(200);
// Spins of the calling thread, waiting for the workers' shares, before it
// yields its core between checks.
constexpr int kCallerSpins = 2000;
}  // namespace

ThreadPool::ThreadPool(int32_t threads) {
  if (threads <= 0) threads = static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  for (int32_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunShare(int32_t index) {
  if (index >= job_parts_) return;
  const int64_t begin = job_n_ * index / job_parts_;
  const int64_t end = job_n_ * (index + 1) / job_parts_;
  if (begin < end) (*job_)(begin, end, index);
}

void ThreadPool::ParallelFor(int64_t n, int64_t work,
                             const std::function<void(int64_t, int64_t, int32_t)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1 || work < kMinParallelWork) {
    fn(0, n, 0);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  job_parts_ = static_cast<int32_t>(std::min<int64_t>(n, size()));
  pending_.store(static_cast<int32_t>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  RunShare(0);
  // Spin briefly, then yield: on a busy machine a worker may be waiting for
  // this very core, and spinning would only delay it.
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins > kCallerSpins) std::this_thread::yield();
  }
}

void ThreadPool::ForEach(int64_t n, const std::function<void(int64_t, int32_t)>& fn) {
  std::atomic<int64_t> next{0};
  ParallelFor(std::min<int64_t>(n, size()), std::numeric_limits<int64_t>::max(), [&](int64_t, int64_t, int32_t part) {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      fn(i, part);
    }
  });
}

void ThreadPool::WorkerLoop(int32_t index) {
  uint64_t seen = 0;
  for (;;) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    for (int spins = 1; generation_.load(std::memory_order_acquire) == seen; ++spins) {
      if (spins % 256 == 0 && std::chrono::steady_clock::now() > spin_until) break;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    RunShare(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace sinkserve
