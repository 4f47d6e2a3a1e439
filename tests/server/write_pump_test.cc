// The write pump: kicks run on the pump's thread, a stream queued twice runs
// once, and Forget returns only when the stream is no longer in use.
#include "server/write_pump.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace sinkserve {
namespace {

using namespace std::chrono_literals;

struct CountingStream final : WritePump::Stream {
  void PumpWrite() override {
    started = true;
    thread = std::this_thread::get_id();  // read only after `calls` moves
    if (hold_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
    calls.fetch_add(1);
  }
  std::atomic<bool> started{false};
  std::atomic<int> calls{0};
  std::thread::id thread;
  int hold_ms = 0;
};

// Waits up to 5 s for `pred`.
template <typename Pred>
bool Eventually(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(WritePumpTest, KicksRunOnThePumpThread) {
  WritePump pump;
  CountingStream a, b;
  pump.Kick(&a);
  pump.Kick(&b);
  ASSERT_TRUE(Eventually([&] { return a.calls == 1 && b.calls == 1; }));
  EXPECT_NE(a.thread, std::this_thread::get_id());
  EXPECT_EQ(a.thread, b.thread);
  pump.Kick(&a);  // a pump that went to sleep wakes for the next kick
  ASSERT_TRUE(Eventually([&] { return a.calls == 2; }));
  pump.Forget(&a);
  pump.Forget(&b);
}

TEST(WritePumpTest, AStreamQueuedTwiceRunsOnce) {
  WritePump pump;
  CountingStream busy, twice;
  busy.hold_ms = 100;  // keeps the pump busy while `twice` is kicked again
  pump.Kick(&busy);
  ASSERT_TRUE(Eventually([&] { return busy.started.load(); }));
  pump.Kick(&twice);
  pump.Kick(&twice);
  ASSERT_TRUE(Eventually([&] { return busy.calls == 1 && twice.calls >= 1; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(twice.calls, 1);
  pump.Forget(&busy);
  pump.Forget(&twice);
}

TEST(WritePumpTest, ForgetDropsAQueuedStreamAndWaitsForARunningOne) {
  WritePump pump;
  CountingStream running, queued;
  running.hold_ms = 100;
  pump.Kick(&running);
  ASSERT_TRUE(Eventually([&] { return running.started.load(); }));
  pump.Kick(&queued);
  pump.Forget(&queued);   // still behind `running`: dropped, never called
  pump.Forget(&running);  // returns only once its PumpWrite has finished
  EXPECT_EQ(running.calls, 1);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(queued.calls, 0);
}

}  // namespace
}  // namespace sinkserve
