// Server lifecycle: graceful drain with health status, and resource use
// over many sessions (acceptance: RSS back within 5% after 1,000 sessions,
// no thread or file-descriptor growth).
#include <dirent.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

// grpc.health.v1.Health/Check for the whole server: 1 SERVING, 2 NOT_SERVING.
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::CompletionQueue cq;
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  cq.Next(&tag, &ok);
  if (!status.ok()) return -status.error_code();
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0;
}

TEST(LifecycleTest, DrainLetsTurnsRunThenEndsStreamsWithUnavailable) {
  START_SERVER(s, EngineConfig{});
  EXPECT_EQ(HealthStatus(s.channel()), 1);
  RawStream endless(s.stub());
  ASSERT_TRUE(endless.Open());
  v1::ChatResponse r;
  ASSERT_TRUE(endless.stream->Read(&r));
  ASSERT_TRUE(endless.Turn("Once upon a time", 1000000, true));
  ASSERT_TRUE(endless.stream->Read(&r));
  ASSERT_TRUE(r.has_delta());

  std::thread drain([&] { s.server()->Drain(absl::Milliseconds(400)); });
  // While draining: NOT_SERVING, and new streams are refused.
  int health = 0;
  for (int i = 0; i < 200 && health != 2; ++i) {
    health = HealthStatus(s.channel());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(health, 2);
  {
    RawStream late(s.stub());
    late.Open();
    EXPECT_EQ(late.Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  // The running turn kept streaming until the drain timeout; then its
  // stream ended with UNAVAILABLE and a message saying what to do.
  v1::TurnDone done;
  int deltas = 0;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(endless.ReadDone(&done, nullptr, &deltas));
  EXPECT_GT(deltas, 0);
  EXPECT_GT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  grpc::Status status = endless.stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("resume by session id"), std::string::npos) << status.error_message();
  drain.join();
}

int64_t ProcStatusKib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::string(key).size()));
  }
  return -1;
}

int CountEntries(const char* dir) {
  int n = 0;
  DIR* d = opendir(dir);
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

// One session's life: open, a short turn, then closed + deleted (even i) or
// dropped mid-stream without a goodbye (odd i; it expires after the TTL).
void UseSession(TestServer& s, int i) {
  RawStream c(s.stub());
  v1::ChatResponse r;
  if (!c.Open() || !c.stream->Read(&r)) return;
  const std::string id = r.opened().session_id();
  c.Turn("Once upon a time", 4, true);
  v1::TurnDone done;
  c.ReadDone(&done);
  if (i % 2 == 0) {
    c.Finish();
    grpc::ClientContext context;
    v1::DeleteSessionRequest del;
    del.set_session_id(id);
    v1::DeleteSessionResponse ignored;
    s.stub()->DeleteSession(&context, del, &ignored);
  } else {
    c.context.TryCancel();
    c.stream->Finish();
  }
}

void UseSessions(TestServer& s, int begin, int end) {
  constexpr int kClients = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      for (int i = begin + t; i < end; i += kClients) UseSession(s, i);
    });
  }
  for (auto& t : threads) t.join();
  // Wait for dropped sessions to expire.
  for (int i = 0; i < 1000 && s.engine()->stats().sessions > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST(LifecycleTest, ThousandSessionsLeaveNoGrowth) {
  EngineConfig config;
  config.session_ttl_seconds = 0.05;
  START_SERVER(s, config);
  UseSessions(s, 0, 100);
  ASSERT_EQ(s.engine()->stats().sessions, 0);
  const int64_t rss_100 = ProcStatusKib("VmRSS:");
  const int threads_100 = CountEntries("/proc/self/task");
  const int fds_100 = CountEntries("/proc/self/fd");
  UseSessions(s, 100, 1000);
  ASSERT_EQ(s.engine()->stats().sessions, 0);
  for (int i = 0; i < 100 && s.server()->service().open_streams() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // OnDone trails the client's status
  }
  EXPECT_EQ(s.server()->service().open_streams(), 0);
  const int64_t rss_1000 = ProcStatusKib("VmRSS:");
  EXPECT_LE(rss_1000, rss_100 * 105 / 100) << "RSS after 100 sessions " << rss_100 << " KiB, after 1000 " << rss_1000;
  EXPECT_LE(CountEntries("/proc/self/task"), threads_100);
  EXPECT_LE(CountEntries("/proc/self/fd"), fds_100);
  std::printf("rss_kib after 100: %lld, after 1000: %lld; threads %d; fds %d\n", static_cast<long long>(rss_100),
              static_cast<long long>(rss_1000), threads_100, fds_100);
}

}  // namespace
}  // namespace sinkserve::testing
