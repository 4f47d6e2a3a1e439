// Reliability (#16): requests that ask for more memory than the server may
// give are refused with a status before anything is allocated, and the
// server keeps serving everyone else.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "tests/run_tool.h"
#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

using ::testing::HasSubstr;

// Before: sink_tokens was checked against 2^24 only, so one open of 16M
// sinks asked the engine thread for gigabytes (std::bad_alloc took the whole
// server down under an address-space limit).
TEST(LimitsTest, SinkTokensAreCappedLikeTheWindow) {
  EngineConfig config;
  config.max_window = 4096;
  START_SERVER(s, config);
  for (uint32_t sinks : {4097u, 1u << 20, 1u << 24}) {
    v1::CacheConfig cache;
    cache.set_policy(v1::CACHE_POLICY_SINK_WINDOW);
    cache.set_sink_tokens(sinks);
    const auto start = std::chrono::steady_clock::now();
    const grpc::Status status = OpenWith(s, cache);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << sinks;
    EXPECT_THAT(status.error_message(), HasSubstr("sink_tokens"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2)) << "refused before allocating";
  }
  ExpectStillServes(s);
}

// Admission is by bytes: a cache that does not fit the KV budget is refused
// with the free bytes in the message, and the bytes come back when a session
// ends.
TEST(LimitsTest, KvBudgetAdmitsByBytesAndFreesOnDelete) {
  EngineConfig config;
  // stories260K's default cache (S=4, W=252, chunk 64): 5 layers x 2 x 32
  // floats x 319 slots = 408,320 bytes. Two fit in 1 MB, a third does not.
  config.kv_budget_bytes = 1000000;
  START_SERVER(s, config);
  // Both stay attached: a detached session's bytes would be reclaimed.
  RawStream a(s.stub()), b(s.stub());
  std::string a_id, b_id;
  ASSERT_TRUE(a.OpenAttached(&a_id));
  ASSERT_TRUE(b.OpenAttached(&b_id));
  EXPECT_EQ(s.engine()->stats().kv_bytes, 2 * 408320);
  grpc::Status third = OpenWith(s, v1::CacheConfig());
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.error_message(), HasSubstr("183360 of the server's 1000000-byte KV budget are free"));
  // A window that fits max_window but not the budget is refused the same way.
  v1::CacheConfig big;
  big.set_window_tokens(60000);
  EXPECT_EQ(OpenWith(s, big).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  grpc::ClientContext context;
  v1::DeleteSessionRequest del;
  del.set_session_id(a_id);
  v1::DeleteSessionResponse deleted;
  ASSERT_TRUE(s.stub()->DeleteSession(&context, del, &deleted).ok());
  EXPECT_EQ(s.engine()->stats().kv_bytes, 408320);
  ExpectStillServes(s);
  EXPECT_EQ(a.Finish().error_code(), grpc::StatusCode::ABORTED);  // deleted under it
  EXPECT_TRUE(b.Finish().ok());
}

}  // namespace
}  // namespace sinkserve::testing

namespace sinkserve::testing {
namespace {

// Before: 10,000 stop strings slowed every session on the engine thread, and
// a turn without max_new_tokens could run to the 1,000,000-token cap.
TEST(LimitsTest, StopStringsAreCappedAndTheDefaultTurnIsShort) {
  EngineConfig config;
  config.max_stop_strings = 4;
  config.max_stop_bytes = 32;
  START_SERVER(s, config);
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  v1::TurnDone done;
  v1::ChatRequest many;
  many.mutable_turn()->set_text("Once");
  many.mutable_turn()->set_raw(true);
  for (int i = 0; i < 5; ++i) many.mutable_turn()->add_stop("x");
  ASSERT_TRUE(c.Write(many));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_ERROR);
  EXPECT_THAT(done.error(), HasSubstr("limit of 4"));
  v1::ChatRequest long_stop;
  long_stop.mutable_turn()->set_text("Once");
  long_stop.mutable_turn()->set_raw(true);
  long_stop.mutable_turn()->add_stop(std::string(33, 'y'));
  ASSERT_TRUE(c.Write(long_stop));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_THAT(done.error(), HasSubstr("33 bytes together"));
  // No max_new_tokens: the engine's default of 512, not the 1,000,000 cap.
  v1::ChatRequest plain;
  plain.mutable_turn()->set_text("Once upon a time");
  plain.mutable_turn()->set_raw(true);
  plain.mutable_turn()->set_ignore_eos(true);
  plain.mutable_turn()->mutable_sampling()->set_temperature(0);
  ASSERT_TRUE(c.Write(plain));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(done.usage().generated_tokens(), 512u);
  EXPECT_TRUE(c.Finish().ok());
}

// Before: a 1 MiB session id came back inside the NOT_FOUND message and the
// reply broke gRPC's metadata limit; ids are now checked by length and
// alphabet, answered NOT_FOUND, and never echoed.
TEST(LimitsTest, SessionIdsAreValidatedAndNotEchoed) {
  START_SERVER(s, EngineConfig{});
  for (const std::string& id : {std::string(1 << 20, 'a'), std::string("0123\n\x01zz"), std::string(32, 'G')}) {
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session_id(id);
    v1::SessionInfo info;
    const grpc::Status status = s.stub()->GetSession(&context, request, &info);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << id.size();
    EXPECT_THAT(status.error_message(), HasSubstr("32 lowercase hex digits"));
    EXPECT_LT(status.error_message().size(), 200u);
    RawStream c(s.stub());
    if (id.size() < 1000) {  // a resume with the bad id, over the stream
      ASSERT_TRUE(c.Open(id));
      const grpc::Status open = c.Finish();
      EXPECT_EQ(open.error_code(), grpc::StatusCode::NOT_FOUND);
      EXPECT_EQ(open.error_message().find('\n'), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace sinkserve::testing

namespace sinkserve::testing {
namespace {

// The budget flag takes bytes with a binary suffix; anything else is one
// line and a non-zero exit before the model loads.
TEST(LimitsTest, BadKvBudgetFlagFailsWithOneLine) {
  ScopedTempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  for (const char* value : {"12Q", "-1", "99999999999T", ""}) {
    const ToolResult r = RunTool(tmp.path(), "sinkserve-server", {"--kv-budget", value, "--model", "/nonexistent"});
    EXPECT_EQ(r.exit_code, 1) << value;
    EXPECT_NE(r.err.find("--kv-budget"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// The prefill share is a positive fraction; anything else is one line and a
// non-zero exit before the model loads.
TEST(LimitsTest, BadPrefillShareFailsWithOneLine) {
  ScopedTempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  for (const char* value : {"0", "-0.5", "nan", "2e6", "half"}) {
    const ToolResult r = RunTool(tmp.path(), "sinkserve-server", {"--prefill-share", value, "--model", "/nonexistent"});
    EXPECT_EQ(r.exit_code, 1) << value;
    EXPECT_NE(r.err.find("prefill"), std::string::npos) << value << ": " << r.err;
    EXPECT_EQ(r.err.find("/nonexistent"), std::string::npos) << "the model was loaded first: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// The HTTP, key and TLS flags: a bad value is one line and a non-zero exit,
// naming what to fix, before the server serves anything.
TEST(LimitsTest, BadHttpKeyAndTlsFlagsFailWithOneLine) {
  if (!std::filesystem::exists(SharedPath(kModel))) GTEST_SKIP() << "shared test data missing: " << SharedPath(kModel);
  ScopedTempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const std::string short_keys = (std::filesystem::path(tmp.path()) / "keys.txt").string();
  std::ofstream(short_keys) << "tooshort\n";
  const std::string not_pem = (std::filesystem::path(tmp.path()) / "cert.pem").string();
  std::ofstream(not_pem) << "not a certificate\n";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--http-listen", "nowhere"}, "--http-listen"},
      {{"--http-listen", "localhost:8080"}, "not an IP address"},
      {{"--http-max-body-bytes", "12"}, "--http-max-body-bytes"},
      {{"--api-key-file", "/nonexistent/keys"}, "/nonexistent/keys"},
      {{"--api-key-file", short_keys}, "16"},
      {{"--tls-cert", not_pem}, "--tls-key"},
      {{"--tls-cert", not_pem, "--tls-key", not_pem}, "not a readable PEM file"},
      {{"--listen", "256.1.1.1:5"}, "cannot listen"},
  };
  for (const auto& [flags, expected] : cases) {
    std::vector<std::string> args = {"--model", SharedPath(kModel), "--tokenizer", SharedPath(kVocab), "--backend",
                                     "cpu", "--threads", "1"};
    args.insert(args.end(), flags.begin(), flags.end());
    if (flags[0] != "--listen") args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    if (flags[0] != "--http-listen") args.insert(args.end(), {"--http-listen", "127.0.0.1:0"});
    const ToolResult r = RunTool(tmp.path(), "sinkserve-server", args);
    EXPECT_EQ(r.exit_code, 1) << flags[0] << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << flags[0] << ": " << r.err;
    // (A port gRPC cannot take also gets a line from gRPC's own log first.)
    const int own_lines = std::count(r.err.begin(), r.err.end(), '\n') - (flags[0] == "--listen" ? 1 : 0);
    EXPECT_EQ(own_lines, 1) << r.err;
  }
}

// --help lists every flag of the server (the reliability ones included)
// and exits 0 without loading anything; an unknown flag points to it.
TEST(LimitsTest, HelpListsTheFlagsAndUnknownOnesPointToIt) {
  ScopedTempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const ToolResult help = RunTool(tmp.path(), "sinkserve-server", {"--help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_NE(help.out.find("usage: sinkserve-server"), std::string::npos) << help.out;
  for (const char* flag : {"--kv-budget", "--max-sessions-per-client", "--stalled-stream-timeout", "--handshake-timeout",
                           "--prefill-share", "--allow-takeover", "--model"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag << " missing from: " << help.out;
  }
  const ToolResult unknown = RunTool(tmp.path(), "sinkserve-server", {"--max-sesions", "4"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown flag --max-sesions (--help lists them)"), std::string::npos) << unknown.err;
}

}  // namespace
}  // namespace sinkserve::testing
