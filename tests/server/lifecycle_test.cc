// Server lifecycle: graceful drain with health status, and the server
// process's resource use over many sessions (acceptance: RSS back within 5%
// of its level after the first 100 of 1,000 sessions, no thread or file
// descriptor growth).
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_format.h"

#include "tests/build_flavor.h"
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

  // A sanitizer's slowdown needs a longer drain for the checks in it.
  const int drain_ms = kSanitized ? 3000 : 400;
  std::thread drain([&] { s.server()->Drain(absl::Milliseconds(drain_ms)); });
  // While draining: NOT_SERVING, and new streams are refused.
  int health = 0;
  for (int i = 0; i < drain_ms / 2 && health != 2; ++i) {
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
  EXPECT_GT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(drain_ms / 2));
  grpc::Status status = endless.stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // It says what is true: sessions are not stored anywhere else (yet).
  EXPECT_NE(status.error_message().find("shutting down"), std::string::npos) << status.error_message();
  EXPECT_EQ(status.error_message().find("another replica"), std::string::npos) << status.error_message();
  drain.join();
}

// The real sinkserve-server binary as a child process, so the figures below
// are the server's own, not polluted by this process's client side.
class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {BinaryPath("sinkserve-server"), "--model", SharedPath(kModel), "--tokenizer",
                                     SharedPath(kVocab), "--backend", "cpu", "--threads", "1", "--listen",
                                     "127.0.0.1:0", "--http-listen", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    if (pipe(fds) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    err_ = fdopen(fds[0], "r");
    char line[1024];
    if (pid_ > 0 && fgets(line, sizeof(line), err_) != nullptr) {
      const char* listen = strstr(line, "listen=");
      if (listen != nullptr) address_ = std::string(listen + 7, strcspn(listen + 7, " \n"));
      startup_ = line;
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
      waitpid(pid_, &status, 0);
    }
    if (err_ != nullptr) fclose(err_);
  }
  bool ok() const { return !address_.empty(); }
  const std::string& address() const { return address_; }
  const std::string& startup() const { return startup_; }
  int64_t RssKib() const {
    std::ifstream in(absl::StrFormat("/proc/%d/status", pid_));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
    }
    return -1;
  }
  int Threads() const { return CountEntries(absl::StrFormat("/proc/%d/task", pid_)); }
  int Fds() const { return CountEntries(absl::StrFormat("/proc/%d/fd", pid_)); }

 private:
  static int CountEntries(const std::string& dir) {
    int n = 0;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return -1;
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
    return n;
  }
  pid_t pid_ = -1;
  FILE* err_ = nullptr;
  std::string address_;
  std::string startup_;
};

int64_t ActiveSessions(v1::ChatService::Stub* stub) {
  grpc::ClientContext context;
  v1::ServerInfo info;
  if (!stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info).ok()) return -1;
  return info.active_sessions();
}

// One session's life: open, a short turn, then closed + deleted (even i) or
// dropped mid-stream without a goodbye (odd i; it expires after the TTL).
void UseSession(v1::ChatService::Stub* stub, int i) {
  RawStream c(stub);
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
    stub->DeleteSession(&context, del, &ignored);
  } else {
    c.context.TryCancel();
    c.stream->Finish();
  }
}

// Sessions [begin, end) over 4 concurrent clients; then waits until the
// dropped ones have expired.
void UseSessions(v1::ChatService::Stub* stub, int begin, int end) {
  constexpr int kClients = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      for (int i = begin + t; i < end; i += kClients) UseSession(stub, i);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 1000 && ActiveSessions(stub) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let streams' OnDone run
}

TEST(LifecycleTest, ThousandSessionsLeaveNoGrowth) {
  REQUIRE_SHARED(kModel);
  if (!std::filesystem::exists(BinaryPath("sinkserve-server"))) GTEST_SKIP() << "sinkserve-server not built";
  ServerProcess server({"--session-ttl", "0.05"});
  ASSERT_TRUE(server.ok()) << "no startup line: " << server.startup();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto stub = v1::ChatService::NewStub(channel);
  UseSessions(stub.get(), 0, 100);
  ASSERT_EQ(ActiveSessions(stub.get()), 0);
  const int64_t rss_100 = server.RssKib();
  const int threads_100 = server.Threads();
  const int fds_100 = server.Fds();
  UseSessions(stub.get(), 100, 1000);
  ASSERT_EQ(ActiveSessions(stub.get()), 0);
  const int64_t rss_1000 = server.RssKib();
  // ASan keeps freed memory in quarantine (256 MiB by default), so RSS grows
  // there whatever the server does; threads and fds still must not.
  if (!kSanitized) {
    EXPECT_LE(rss_1000, rss_100 * 105 / 100) << "server RSS after 100 sessions " << rss_100 << " KiB, after 1000 "
                                             << rss_1000;
  }
  EXPECT_LE(server.Threads(), threads_100);
  EXPECT_LE(server.Fds(), fds_100);
  std::printf("server rss_kib after 100: %lld, after 1000: %lld; threads %d -> %d; fds %d -> %d\n",
              static_cast<long long>(rss_100), static_cast<long long>(rss_1000), threads_100, server.Threads(),
              fds_100, server.Fds());
}

}  // namespace
}  // namespace sinkserve::testing
