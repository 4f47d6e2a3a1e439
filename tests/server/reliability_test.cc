// Reliability (#16, defects 3, 6, 7 and 11): sessions are bounded per
// client and reclaimed from the longest-detached when the server is full; a
// session held by one stream is not taken by another unless the server
// allows it; a stream whose client stops reading ends; and a resume reports
// the output of the turn the client may have missed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Waits (up to 10 s) until the session is detached and idle.
void AwaitDetached(TestServer& s, const std::string& id) {
  for (int i = 0; i < 2000; ++i) {
    const v1::SessionInfo info = GetSession(s, id);
    if (!info.attached() && !info.generating()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL() << "the session never detached";
}

bool Exists(TestServer& s, const std::string& id) {
  grpc::Status status;
  GetSession(s, id, &status);
  return status.ok();
}

// Before: one client could hold every session slot (300 opens then a
// disconnect left 256 detached sessions for the TTL). Now a client holds at
// most its quota, and at the quota its own longest-detached session makes room.
TEST(ReliabilityTest, AClientHoldsAtMostItsQuotaAndReclaimsItsOwnDetachedSessions) {
  EngineConfig config;
  config.max_sessions_per_client = 2;
  START_SERVER(s, config);
  RawStream a(s.stub()), b(s.stub());
  std::string a_id, b_id;
  ASSERT_TRUE(a.OpenAttached(&a_id));
  ASSERT_TRUE(b.OpenAttached(&b_id));
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  const grpc::Status refused = c.Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("this client holds its limit of 2 sessions"));

  a.context.TryCancel();  // a's session detaches: the quota reclaims it
  a.stream->Finish();
  AwaitDetached(s, a_id);
  v1::ChatResponse opened;
  ASSERT_TRUE(OpenWith(s, v1::CacheConfig(), &opened).ok());
  EXPECT_FALSE(Exists(s, a_id)) << "the longest-detached session of this client makes room";
  EXPECT_TRUE(Exists(s, b_id));
  EXPECT_EQ(s.engine()->stats().sessions, 2);
}

// Before: a full server answered RESOURCE_EXHAUSTED while detached sessions
// sat idle for the whole TTL. Now the longest-detached one is reclaimed,
// both for the session count and for the KV budget.
TEST(ReliabilityTest, AFullServerReclaimsTheLongestDetachedSession) {
  for (const bool by_bytes : {false, true}) {
    SCOPED_TRACE(by_bytes ? "KV budget" : "session count");
    EngineConfig config;
    config.max_sessions_per_client = 0;
    if (by_bytes) {
      config.kv_budget_bytes = 1000000;  // two stories260K default caches (408,320 bytes each)
    } else {
      config.max_sessions = 2;
    }
    START_SERVER(s, config);
    v1::ChatResponse first;
    ASSERT_TRUE(OpenWith(s, v1::CacheConfig(), &first).ok());  // detached at once
    const std::string old_id = first.opened().session_id();
    AwaitDetached(s, old_id);
    RawStream held(s.stub());
    std::string held_id;
    ASSERT_TRUE(held.OpenAttached(&held_id));
    RawStream next(s.stub());
    std::string next_id;
    ASSERT_TRUE(next.OpenAttached(&next_id)) << "the detached session should have made room";
    EXPECT_FALSE(Exists(s, old_id));
    EXPECT_TRUE(Exists(s, held_id));
    // With every session attached, nothing can be reclaimed: refused.
    RawStream refused(s.stub());
    ASSERT_TRUE(refused.Open());
    EXPECT_EQ(refused.Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_TRUE(held.Finish().ok());
    EXPECT_TRUE(next.Finish().ok());
  }
}

// Before: anyone holding a session id could resume it and the owner's stream
// ended ABORTED. Now that needs --allow-takeover; by default the newcomer is
// refused and the owner goes on.
TEST(ReliabilityTest, AnAttachedSessionIsNotTakenOverUnlessAllowed) {
  for (const bool allow : {false, true}) {
    SCOPED_TRACE(allow ? "takeover allowed" : "default");
    EngineConfig config;
    config.allow_takeover = allow;
    START_SERVER(s, config);
    RawStream owner(s.stub());
    std::string id;
    ASSERT_TRUE(owner.OpenAttached(&id));
    RawStream other(s.stub());
    ASSERT_TRUE(other.Open(id));
    if (!allow) {
      const grpc::Status status = other.Finish();
      EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_THAT(status.error_message(), HasSubstr("attached to another stream"));
      ASSERT_TRUE(owner.Turn("Once upon a time", 4, true));
      v1::TurnDone done;
      ASSERT_TRUE(owner.ReadDone(&done));
      EXPECT_EQ(done.usage().generated_tokens(), 4u);
      EXPECT_TRUE(owner.Finish().ok());
    } else {
      v1::ChatResponse r;
      ASSERT_TRUE(other.stream->Read(&r));
      EXPECT_TRUE(r.opened().resumed());
      EXPECT_EQ(owner.Finish().error_code(), grpc::StatusCode::ABORTED);
      EXPECT_TRUE(other.Finish().ok());
    }
  }
}

// Before: a client that stopped reading kept its session attached for as
// long as its connection lived (70 s under a 2 s TTL). Now its stream ends
// with DEADLINE_EXCEEDED after --stalled-stream-timeout, and the session is
// detached, kept for the TTL.
TEST(ReliabilityTest, AStreamWhoseClientStopsReadingEnds) {
  EngineConfig config;
  config.stalled_stream_seconds = 0.3;
  config.outbox_capacity = 4;
  START_SERVER(s, config);
  // No BDP probing: the client's window stays at 64 KiB, so the server's
  // writes stop (and the outbox fills) soon after the client stops reading.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto channel = grpc::CreateCustomChannel(s.server()->address(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::ChatService::NewStub(channel);
  RawStream silent(stub.get());
  std::string id;
  ASSERT_TRUE(silent.OpenAttached(&id));
  ASSERT_TRUE(silent.Turn("Once upon a time", 1000000, true));
  bool detached = false;
  for (int i = 0; i < 600 && !detached; ++i) {  // up to 60 s on a busy machine
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const v1::SessionInfo info = GetSession(s, id);
    detached = !info.attached() && !info.generating();
  }
  ASSERT_TRUE(detached) << "the stream of a client that reads nothing must end";
  // Once the client reads, it finds its stream ended with the reason.
  v1::ChatResponse r;
  while (silent.stream->Read(&r)) {
  }
  const grpc::Status status = silent.stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("read nothing for 0.3 s"));
  // The session is kept and can be resumed.
  RawStream again(s.stub());
  ASSERT_TRUE(again.Open(id));
  ASSERT_TRUE(again.stream->Read(&r));
  EXPECT_TRUE(r.opened().resumed());
  EXPECT_TRUE(again.Finish().ok());
}

// Before: tokens generated but not delivered before a disconnect were in
// the context, but the client could not learn what they said. Now a resume
// reports the latest turn's output and how it ended.
TEST(ReliabilityTest, AResumeReportsTheLatestTurnsOutput) {
  START_SERVER(s, EngineConfig{});
  std::string id, seen;
  {
    RawStream c(s.stub());
    ASSERT_TRUE(c.OpenAttached(&id));
    ASSERT_TRUE(c.Turn("Once upon a time", 1000000, true));
    v1::ChatResponse r;
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(c.stream->Read(&r));
      seen += r.delta().text();
    }
    c.context.TryCancel();  // the connection drops mid-turn
    c.stream->Finish();
  }
  AwaitDetached(s, id);
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open(id));
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  const v1::LastTurn& last = r.opened().last_turn();
  EXPECT_EQ(last.turn(), 1u);
  EXPECT_EQ(last.reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_GE(last.generated_tokens(), 3u);
  EXPECT_THAT(last.text(), StartsWith(seen));
  EXPECT_FALSE(last.truncated());
  // The conversation's length counts every generated token (plus the
  // prompt: BOS and 4 tokens).
  EXPECT_EQ(r.opened().position(), 5u + last.generated_tokens());

  // A turn that completed: the report is exactly what was streamed.
  ASSERT_TRUE(c.Turn(" The end", 6, true));
  std::string streamed;
  v1::TurnDone done;
  while (c.stream->Read(&r) && !r.has_done()) streamed += r.delta().text();
  c.context.TryCancel();
  c.stream->Finish();
  AwaitDetached(s, id);
  RawStream again(s.stub());
  ASSERT_TRUE(again.Open(id));
  ASSERT_TRUE(again.stream->Read(&r));
  EXPECT_EQ(r.opened().last_turn().turn(), 2u);
  EXPECT_EQ(r.opened().last_turn().reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.opened().last_turn().generated_tokens(), 6u);
  EXPECT_EQ(r.opened().last_turn().text(), streamed);
  EXPECT_TRUE(again.Finish().ok());
}

}  // namespace
}  // namespace sinkserve::testing
