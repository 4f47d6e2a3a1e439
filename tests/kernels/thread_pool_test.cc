// The CPU backend's fork-join pool: every index runs exactly once, on a
// thread whose part number fits per-thread scratch.
#include "kernels/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <vector>

namespace sinkserve {
namespace {

TEST(ThreadPoolTest, ForEachRunsEveryIndexOnceOnAValidPart) {
  for (int32_t threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 5, 64, 1000}) {
      std::vector<std::atomic<int>> runs(n);
      std::atomic<bool> bad_part{false};
      pool.ForEach(n, [&](int64_t i, int32_t part) {
        if (part < 0 || part >= pool.size()) bad_part = true;
        runs[i].fetch_add(1);
      });
      EXPECT_FALSE(bad_part) << "threads=" << threads << " n=" << n;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(runs[i].load(), 1) << "threads=" << threads << " n=" << n << " i=" << i;
    }
  }
}

TEST(ThreadPoolTest, ForEachLetsAFreeThreadTakeMoreItems) {
  // Item 0 holds its thread until every other item has run (or 10 s pass).
  // A static split into halves would leave items 1-3 queued behind item 0;
  // dynamic assignment hands them to the other thread.
  ThreadPool pool(2);
  constexpr int64_t kItems = 8;
  std::atomic<int64_t> done{0};
  bool others_ran_meanwhile = false;
  pool.ForEach(kItems, [&](int64_t i, int32_t) {
    if (i == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (done.load() < kItems - 1 && std::chrono::steady_clock::now() < deadline) {
      }
      others_ran_meanwhile = done.load() == kItems - 1;
    }
    done.fetch_add(1);
  });
  EXPECT_TRUE(others_ran_meanwhile);
  EXPECT_EQ(done.load(), kItems);
}

TEST(ThreadPoolTest, ParallelForCoversTheRangeInDisjointParts) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> runs(1 << 12);
  pool.ParallelFor(static_cast<int64_t>(runs.size()), int64_t{1} << 30, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t i = begin; i < end; ++i) runs[i].fetch_add(1);
  });
  for (const auto& r : runs) ASSERT_EQ(r.load(), 1);
}

}  // namespace
}  // namespace sinkserve
