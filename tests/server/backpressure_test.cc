// Backpressure: a client that stops reading pauses its session's decoding
// (bounded outbox, bounded gRPC flow-control window), and it resumes once the
// client reads again, while other sessions keep going.
#include <gtest/gtest.h>

#include <thread>

#include "tests/build_flavor.h"
#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

uint64_t Position(TestServer& s, const std::string& id) { return GetSession(s, id).position(); }

TEST(BackpressureTest, ASilentClientPausesOnlyItsOwnSession) {
  START_SERVER(s, EngineConfig{});
  // The client's HTTP/2 receive window bounds what the transport buffers for
  // a client that does not read; with BDP probing a client may grow it to
  // megabytes (still bounded, just slow to fill). This client keeps the
  // 64 KiB default so the pause comes quickly.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto channel = grpc::CreateCustomChannel(s.server()->address(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::ChatService::NewStub(channel);
  RawStream silent(stub.get());
  ASSERT_TRUE(silent.Open());
  v1::ChatResponse r;
  ASSERT_TRUE(silent.stream->Read(&r));
  const std::string id = r.opened().session_id();
  ASSERT_TRUE(silent.Turn("Once upon a time", 1000000, true));

  // Without reads, the position must stop growing once the outbox and the
  // transport's window are full. Paused means unchanged over three
  // consecutive 100 ms samples, so a busy machine that starves the engine
  // thread for one sample is not mistaken for a pause. A sanitizer's
  // slowdown fills the window several times more slowly.
  uint64_t after = Position(s, id);
  int stable = 0;
  const int samples = kSanitized ? 600 : 100;
  for (int i = 0; i < samples && stable < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const uint64_t now = Position(s, id);
    stable = now == after ? stable + 1 : 0;
    after = now;
  }
  ASSERT_EQ(stable, 3) << "decoding never paused for a client that does not read";
  EXPECT_GT(after, 5u);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(Position(s, id), after);

  // Another session is unaffected.
  RawStream other(s.stub());
  ASSERT_TRUE(other.Open());
  ASSERT_TRUE(other.stream->Read(&r));
  ASSERT_TRUE(other.Turn("Once upon a time", 20, true));
  v1::TurnDone done;
  ASSERT_TRUE(other.ReadDone(&done));
  EXPECT_EQ(done.usage().generated_tokens(), 20u);
  EXPECT_TRUE(other.Finish().ok());

  // Reading again resumes decoding.
  for (int i = 0; i < 200000 && Position(s, id) == after; ++i) ASSERT_TRUE(silent.stream->Read(&r));
  EXPECT_GT(Position(s, id), after);
  ASSERT_TRUE(silent.Cancel());
  ASSERT_TRUE(silent.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_CANCELLED);
  std::printf("paused at position %llu\n", static_cast<unsigned long long>(after));
}

}  // namespace
}  // namespace sinkserve::testing
