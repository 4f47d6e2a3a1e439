// The Chat stream's contract over a real localhost channel: turns, usage,
// streaming, cancel, disconnect + resume, and every protocol error status.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

using ::testing::HasSubstr;

std::vector<uint32_t> Encode(const TestServer& s, const std::string& text) {
  std::vector<uint32_t> out;
  for (int32_t id : s.tokenizer().Encode(text, false)) out.push_back(static_cast<uint32_t>(id));
  return out;
}

TEST(ChatTest, ThreeTurnsCountOnlyTheirOwnPromptTokens) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  ASSERT_TRUE(r.has_opened());
  EXPECT_EQ(r.opened().session_id().size(), 32u);  // 128 bits, hex
  EXPECT_FALSE(r.opened().resumed());
  EXPECT_EQ(r.opened().position(), 0u);
  EXPECT_EQ(r.opened().model(), "stories260K");

  const std::vector<std::string> texts = {"Once upon a time", " The dog ran to the park.", " Then"};
  uint64_t expected_session = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_TRUE(c.Turn(texts[i], 7, /*ignore_eos=*/true));
    v1::TurnDone done;
    std::vector<uint32_t> ids;
    ASSERT_TRUE(c.ReadDone(&done, &ids));
    // The first turn also carries the session's BOS: "Once upon a time" is 1 403 407 261 378.
    const uint32_t own = static_cast<uint32_t>(Encode(s, texts[i]).size()) + (i == 0 ? 1 : 0);
    if (i == 0) {
      EXPECT_EQ(Encode(s, texts[0]), (std::vector<uint32_t>{403, 407, 261, 378}));
    }
    EXPECT_EQ(done.turn(), i + 1);
    EXPECT_EQ(done.reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(done.usage().prompt_tokens(), own) << "turn " << i + 1;
    EXPECT_EQ(done.usage().generated_tokens(), 7u);
    EXPECT_EQ(ids.size(), 7u);
    expected_session += own + 7;
    EXPECT_EQ(done.usage().session_tokens(), expected_session);
    EXPECT_GT(done.usage().tokens_per_second(), 0);
  }
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ChatTest, TemplatedSessionFeedsSystemPromptAndUserTurns) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  v1::ChatRequest open;
  open.mutable_open()->set_chat_template("chatml");
  open.mutable_open()->set_system_prompt("You tell stories.");
  ASSERT_TRUE(c.Write(open));
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  ASSERT_TRUE(r.has_opened());
  const std::string id = r.opened().session_id();
  // stories260K has no <|im_start|> token, so the markers are encoded as text.
  ChatTemplate chatml(ChatTemplateKind::kChatml, s.tokenizer());
  const size_t preamble = chatml.Preamble("You tell stories.").size();
  for (uint32_t turn = 1; turn <= 2; ++turn) {
    v1::ChatRequest t;
    t.mutable_turn()->set_text("Tell me about a cat.");
    t.mutable_turn()->set_max_new_tokens(6);
    t.mutable_turn()->set_ignore_eos(true);
    ASSERT_TRUE(c.Write(t));
    v1::TurnDone done;
    ASSERT_TRUE(c.ReadDone(&done));
    EXPECT_EQ(done.reason(), v1::FINISH_REASON_LENGTH);
    const size_t expected = chatml.UserTurn("Tell me about a cat.", turn == 1, "").size() + (turn == 1 ? preamble : 0);
    EXPECT_EQ(done.usage().prompt_tokens(), expected) << "turn " << turn;
  }
  EXPECT_EQ(GetSession(s, id).chat_template(), "chatml");
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ChatTest, DeltasArriveBeforeTheTurnEnds) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  // An endless turn: if deltas were only sent at the end, this would hang
  // (the test's deadline catches that).
  ASSERT_TRUE(c.Turn("Once upon a time", 1000000, /*ignore_eos=*/true));
  std::string text;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.stream->Read(&r));
    ASSERT_TRUE(r.has_delta()) << "message " << i << " should be a delta";
    EXPECT_EQ(r.delta().turn(), 1u);
    EXPECT_GE(r.delta().token_ids_size(), 1);
    text += r.delta().text();
  }
  EXPECT_FALSE(text.empty());
  ASSERT_TRUE(c.Cancel());
  v1::TurnDone done;
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_CANCELLED);
}

TEST(ChatTest, CancelStopsTheTurnAndTheSessionStaysUsable) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  const std::string id = r.opened().session_id();
  ASSERT_TRUE(c.Turn("Once upon a time", 1000000, true));
  ASSERT_TRUE(c.stream->Read(&r));
  ASSERT_TRUE(r.has_delta());
  std::vector<uint32_t> ids(r.delta().token_ids().begin(), r.delta().token_ids().end());
  ASSERT_TRUE(c.Cancel());
  v1::TurnDone done;
  ASSERT_TRUE(c.ReadDone(&done, &ids));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_GE(done.usage().generated_tokens(), 1u);
  EXPECT_LT(done.usage().generated_tokens(), 1000000u);
  EXPECT_EQ(done.usage().generated_tokens(), ids.size()) << "every generated token reached the client";
  const uint64_t position = done.usage().session_tokens();
  EXPECT_EQ(GetSession(s, id).position(), position);
  EXPECT_FALSE(GetSession(s, id).generating());

  ASSERT_TRUE(c.Turn(" The end", 5, true));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(done.turn(), 2u);
  EXPECT_EQ(done.usage().generated_tokens(), 5u);
  EXPECT_EQ(done.usage().session_tokens(), position + Encode(s, " The end").size() + 5);
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ChatTest, DisconnectStopsGenerationAndTheSessionResumes) {
  START_SERVER(s, EngineConfig{});
  std::string id;
  {
    RawStream c(s.stub());
    ASSERT_TRUE(c.Open());
    v1::ChatResponse r;
    ASSERT_TRUE(c.stream->Read(&r));
    id = r.opened().session_id();
    ASSERT_TRUE(c.Turn("Once upon a time", 1000000, true));
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.stream->Read(&r));
    c.context.TryCancel();  // the client goes away mid-turn
    c.stream->Finish();
  }
  // The server notices, stops generating and detaches the session.
  v1::SessionInfo info;
  for (int i = 0; i < 500; ++i) {
    info = GetSession(s, id);
    if (!info.attached() && !info.generating()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_FALSE(info.attached());
  ASSERT_FALSE(info.generating());
  const uint64_t position = info.position();
  EXPECT_GE(position, 5u + 3u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(GetSession(s, id).position(), position) << "generation must stop when the client goes";

  RawStream c(s.stub());
  ASSERT_TRUE(c.Open(id));
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  ASSERT_TRUE(r.has_opened());
  EXPECT_TRUE(r.opened().resumed());
  EXPECT_EQ(r.opened().session_id(), id);
  EXPECT_EQ(r.opened().position(), position);
  ASSERT_TRUE(c.Turn(" and then", 4, true));
  v1::TurnDone done;
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.turn(), 2u);
  EXPECT_EQ(done.usage().prompt_tokens(), Encode(s, " and then").size());
  EXPECT_EQ(done.usage().session_tokens(), position + done.usage().prompt_tokens() + 4);
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ChatTest, TurnBeforeOpenIsFailedPrecondition) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  ASSERT_TRUE(c.Turn("hello", 4));
  grpc::Status status = c.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("send open first"));
}

TEST(ChatTest, SecondConcurrentTurnIsFailedPrecondition) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  ASSERT_TRUE(c.Turn("Once upon a time", 1000000, true));
  ASSERT_TRUE(c.Turn("again", 4));
  grpc::Status status = c.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("already running"));
}

TEST(ChatTest, UnknownSessionIsNotFound) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open("00112233445566778899aabbccddeeff"));
  grpc::Status status = c.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("empty session_id"));
  grpc::Status unary;
  GetSession(s, "nope", &unary);
  EXPECT_EQ(unary.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(ChatTest, SessionLimitIsResourceExhausted) {
  EngineConfig config;
  config.max_sessions = 2;
  START_SERVER(s, config);
  RawStream a(s.stub()), b(s.stub()), c(s.stub());
  v1::ChatResponse r;
  ASSERT_TRUE(a.Open() && a.stream->Read(&r) && r.has_opened());
  ASSERT_TRUE(b.Open() && b.stream->Read(&r) && r.has_opened());
  ASSERT_TRUE(c.Open());
  grpc::Status status = c.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("DeleteSession"));
}

TEST(ChatTest, InvalidOpenIsInvalidArgument) {
  EngineConfig config;
  config.max_window = 512;
  START_SERVER(s, config);
  struct Case {
    const char* name;
    v1::Open open;
    const char* message;
  };
  std::vector<Case> cases(4);
  cases[0] = {"window over the limit", {}, "exceeds this server's limit"};
  cases[0].open.mutable_cache()->set_window_tokens(100000);
  cases[1] = {"unknown template", {}, "unknown chat template"};
  cases[1].open.set_chat_template("jinja-magic");
  cases[2] = {"sinks without sink policy", {}, "only applies to the sink_window policy"};
  cases[2].open.mutable_cache()->set_policy(v1::CACHE_POLICY_WINDOW);
  cases[2].open.mutable_cache()->set_sink_tokens(4);
  cases[3] = {"unknown policy", {}, "unknown cache policy"};
  cases[3].open.mutable_cache()->set_policy(static_cast<v1::CachePolicy>(42));
  for (const Case& k : cases) {
    RawStream c(s.stub());
    v1::ChatRequest request;
    *request.mutable_open() = k.open;
    ASSERT_TRUE(c.Write(request));
    grpc::Status status = c.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << k.name;
    EXPECT_THAT(status.error_message(), HasSubstr(k.message)) << k.name;
  }
}

TEST(ChatTest, DrainingIsUnavailable) {
  START_SERVER(s, EngineConfig{});
  s.engine()->BeginDrain();
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  grpc::Status status = c.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("shutting down"));
  EXPECT_THAT(status.error_message(), ::testing::Not(HasSubstr("another replica")));
}

TEST(ChatTest, PerTurnErrorsEndOnlyTheTurn) {
  EngineConfig config;
  config.max_prompt_bytes = 64;
  START_SERVER(s, config);
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  v1::TurnDone done;
  // A bad sampling value.
  v1::ChatRequest bad;
  bad.mutable_turn()->set_text("Once");
  bad.mutable_turn()->set_raw(true);
  bad.mutable_turn()->mutable_sampling()->set_top_p(1.5f);
  ASSERT_TRUE(c.Write(bad));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_ERROR);
  EXPECT_THAT(done.error(), HasSubstr("top_p"));
  // A prompt over the byte limit.
  ASSERT_TRUE(c.Turn(std::string(65, 'a'), 4));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_ERROR);
  EXPECT_THAT(done.error(), HasSubstr("limit of 64"));
  // The stream and session still work.
  ASSERT_TRUE(c.Turn("Once upon a time", 3, true));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(done.turn(), 3u);
  EXPECT_EQ(done.usage().prompt_tokens(), 5u);
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ChatTest, FullDenseCacheEndsTheTurnWithAnError) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  v1::CacheConfig dense;
  dense.set_policy(v1::CACHE_POLICY_DENSE);
  ASSERT_TRUE(c.Open("", dense));
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  EXPECT_EQ(r.opened().cache().window_tokens(), 512u);  // stories260K's context
  ASSERT_TRUE(c.Turn("Once upon a time", 1000, true));
  v1::TurnDone done;
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_ERROR);
  EXPECT_THAT(done.error(), HasSubstr("dense cache is full"));
  // 512 tokens fill the cache; the token sampled after them was emitted but
  // cannot be fed, so the session holds 513 with 512 in the cache.
  EXPECT_EQ(done.usage().cache_tokens(), 512u);
  EXPECT_EQ(done.usage().session_tokens(), 513u);
  ASSERT_TRUE(c.Turn(" more", 4, true));
  ASSERT_TRUE(c.ReadDone(&done));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_ERROR);
  EXPECT_TRUE(c.Finish().ok());
}

TEST(ChatTest, DeadlineEndsTheCallAndStopsGeneration) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub(), /*deadline_ms=*/300);
  ASSERT_TRUE(c.Open());
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  const std::string id = r.opened().session_id();
  ASSERT_TRUE(c.Turn("Once upon a time", 1000000, true));
  while (c.stream->Read(&r)) {
  }
  EXPECT_EQ(c.stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  v1::SessionInfo info;
  for (int i = 0; i < 500; ++i) {
    info = GetSession(s, id);
    if (!info.generating()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_FALSE(info.generating());
  EXPECT_FALSE(info.attached());
}

TEST(ChatTest, DeleteSessionAndServerInfo) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  ASSERT_TRUE(c.Open());
  v1::ChatResponse r;
  ASSERT_TRUE(c.stream->Read(&r));
  const std::string id = r.opened().session_id();
  {
    grpc::ClientContext context;
    v1::ServerInfo info;
    ASSERT_TRUE(s.stub()->GetServerInfo(&context, v1::GetServerInfoRequest(), &info).ok());
    EXPECT_EQ(info.active_sessions(), 1u);
  }
  grpc::ClientContext context;
  v1::DeleteSessionRequest del;
  del.set_session_id(id);
  v1::DeleteSessionResponse ignored;
  ASSERT_TRUE(s.stub()->DeleteSession(&context, del, &ignored).ok());
  // The attached stream learns why it ends.
  grpc::Status status = c.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  grpc::Status unary;
  GetSession(s, id, &unary);
  EXPECT_EQ(unary.error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace sinkserve::testing
