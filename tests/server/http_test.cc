// The HTTP front door (server/http_server.h) in-process beside the gRPC one,
// over real sockets: the OpenAI-compatible endpoints, SSE framing, the
// session extension and its 409 rule, errors with their codes, API keys and
// session ownership, metrics, and a disconnect cancelling its turn.
#include "server/http_server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "server/api_keys.h"
#include "server/metrics.h"
#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Json = nlohmann::json;

constexpr char kKey1[] = "test-key-number-one-0123456789";
constexpr char kKey2[] = "test-key-number-two-0123456789";

struct Response {
  int status = 0;
  std::string body;
  std::string session_id;  // the x-session-id header
  std::string content_type;
};

// One request on a fresh connection.
Response Call(int port, http::verb method, const std::string& target, const std::string& body = "",
              const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  net::io_context ioc;
  tcp::socket socket(ioc);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "localhost");
  req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  beast::error_code ec;
  http::read(socket, buffer, parser, ec);
  Response r;
  if (ec) return r;
  const auto& res = parser.get();
  r.status = static_cast<int>(res.result_int());
  r.body = res.body();
  if (auto it = res.find("x-session-id"); it != res.end()) r.session_id = std::string(it->value());
  if (auto it = res.find(http::field::content_type); it != res.end()) r.content_type = std::string(it->value());
  return r;
}

Response Post(int port, const std::string& target, const Json& body,
              const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return Call(port, http::verb::post, target, body.dump(), headers);
}

// The JSON payloads of an SSE body's `data:` events ("[DONE]" kept as is).
std::vector<std::string> Events(const std::string& sse) {
  std::vector<std::string> events;
  size_t pos = 0;
  while ((pos = sse.find("data: ", pos)) != std::string::npos) {
    const size_t end = sse.find("\n\n", pos);
    events.push_back(sse.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return events;
}

Json Chat(const std::string& text, int max_tokens, bool stream = false) {
  return {{"model", "stories260K"},
          {"messages", {{{"role", "user"}, {"content", text}}}},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true},
          {"stream", stream},
          {"stream_options", {{"include_usage", true}}}};
}

// An engine config whose steps feed `metrics` (as sinkserve-server wires it).
EngineConfig ObservedBy(Metrics* metrics) {
  EngineConfig config;
  config.on_step = [metrics](int64_t tokens, int64_t sequences) { metrics->ObserveStep(tokens, sequences); };
  return config;
}

class HttpTest : public ::testing::Test {
 protected:
  void StartHttp(const ApiKeys* keys = nullptr, bool metrics_public = false) {
    if (!server_.ok()) GTEST_SKIP() << server_.error();
    metrics_.SetEngine(server_.engine());
    HttpServerOptions options;
    options.listen = "127.0.0.1:0";
    options.max_body_bytes = 64 << 10;
    options.metrics_public = metrics_public;
    auto http = HttpServer::Start(server_.engine(), keys, &metrics_, options);
    ASSERT_TRUE(http.ok()) << http.status();
    http_ = *std::move(http);
    port_ = http_->port();
  }

  // Waits until the engine runs no turn (a cancelled or finished one).
  bool WaitIdle(double seconds = 10) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      if (server_.engine()->stats().running_turns == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  Metrics metrics_;
  TestServer server_{ObservedBy(&metrics_)};
  std::unique_ptr<HttpServer> http_;
  int port_ = 0;
};

TEST_F(HttpTest, HealthModelsAndThePage) {
  StartHttp();
  EXPECT_EQ(Call(port_, http::verb::get, "/health").status, 200);
  const Response models = Call(port_, http::verb::get, "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(Json::parse(models.body)["data"][0]["id"], "stories260K");
  const Response page = Call(port_, http::verb::get, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.content_type.find("text/html"), std::string::npos);
  EXPECT_NE(page.body.find("sinkserve"), std::string::npos);
}

TEST_F(HttpTest, StatelessCompletionAnswersAndLeavesNoSession) {
  StartHttp();
  const Response r = Post(port_, "/v1/chat/completions", Chat("Once upon a time", 12));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = Json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_FALSE(j["choices"][0]["message"]["content"].get<std::string>().empty());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_FALSE(j.contains("session_id"));
  EXPECT_TRUE(r.session_id.empty());
  // The temporary session is deleted once the response is out.
  for (int i = 0; i < 100 && server_.engine()->stats().sessions != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server_.engine()->stats().sessions, 0);
}

TEST_F(HttpTest, StreamingMatchesTheWholeResponse) {
  StartHttp();
  const Response whole = Post(port_, "/v1/chat/completions", Chat("Once upon a time", 16));
  const Response stream = Post(port_, "/v1/chat/completions", Chat("Once upon a time", 16, /*stream=*/true));
  ASSERT_EQ(stream.status, 200) << stream.body;
  EXPECT_EQ(stream.content_type, "text/event-stream");
  const std::vector<std::string> events = Events(stream.body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish;
  Json usage;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Json e = Json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (e.contains("usage")) {
      usage = e["usage"];
      EXPECT_TRUE(e["choices"].empty());
      EXPECT_GE(e["sinkserve"]["session_tokens"].get<int>(), 16);
      continue;
    }
    const Json& choice = e["choices"][0];
    if (choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
  }
  EXPECT_EQ(text, Json::parse(whole.body)["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["completion_tokens"], 16);
}

TEST_F(HttpTest, SessionsAppendOnlyTheNewMessageAndCheckTheHistory) {
  StartHttp();
  const Response first = Post(port_, "/v1/chat/completions", Chat("Once upon a time", 8), {{"x-session-id", "new"}});
  ASSERT_EQ(first.status, 200) << first.body;
  const std::string id = first.session_id;
  ASSERT_EQ(id.size(), 32u);
  EXPECT_EQ(Json::parse(first.body)["session_id"], id);
  const std::string reply = Json::parse(first.body)["choices"][0]["message"]["content"];
  const int64_t after_first = Json::parse(first.body)["sinkserve"]["session_tokens"];

  // Only the new message: appended to the cache, nothing re-encoded.
  const Response second = Post(port_, "/v1/chat/completions", Chat("The cat", 8), {{"x-session-id", id}});
  ASSERT_EQ(second.status, 200) << second.body;
  const Json s = Json::parse(second.body);
  EXPECT_EQ(s["usage"]["prompt_tokens"].get<int64_t>() + s["usage"]["completion_tokens"].get<int64_t>() + after_first,
            s["sinkserve"]["session_tokens"].get<int64_t>());
  const std::string reply2 = s["choices"][0]["message"]["content"];

  // The whole history, exactly as the server saw it: accepted, and still
  // only the last message is fed.
  Json full = Chat("A dog", 4);
  full["messages"] = {{{"role", "system"}, {"content", "ignored on resume"}},
                      {{"role", "user"}, {"content", "Once upon a time"}},
                      {{"role", "assistant"}, {"content", reply}},
                      {{"role", "user"}, {"content", "The cat"}},
                      {{"role", "assistant"}, {"content", reply2}},
                      {{"role", "user"}, {"content", "A dog"}}};
  const Response third = Post(port_, "/v1/chat/completions", full, {{"session_id", "unused"}, {"x-session-id", id}});
  ASSERT_EQ(third.status, 200) << third.body;

  // A history that is not this session's: 409, and nothing is fed.
  const int64_t before = Json::parse(Call(port_, http::verb::get, "/v1/sessions/" + id).body)["length"];
  full["messages"][2]["content"] = "a reply the server never gave";
  const Response conflict = Post(port_, "/v1/chat/completions", full, {{"x-session-id", id}});
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_EQ(Json::parse(conflict.body)["error"]["type"], "conflict_error");
  const Response snap = Call(port_, http::verb::get, "/v1/sessions/" + id);
  ASSERT_EQ(snap.status, 200);
  EXPECT_EQ(Json::parse(snap.body)["length"], before);
  EXPECT_EQ(Json::parse(snap.body)["turns"], 3);

  EXPECT_EQ(Call(port_, http::verb::delete_, "/v1/sessions/" + id).status, 200);
  EXPECT_EQ(Call(port_, http::verb::get, "/v1/sessions/" + id).status, 404);
  EXPECT_EQ(Post(port_, "/v1/chat/completions", Chat("again", 4), {{"x-session-id", id}}).status, 404);
}

TEST_F(HttpTest, BadRequestsGetOpenAiErrorsWithTheirCodes) {
  StartHttp();
  const auto expect_error = [](const Response& r, int status, const char* type) {
    EXPECT_EQ(r.status, status) << r.body;
    if (r.status == status) {
      EXPECT_EQ(Json::parse(r.body)["error"]["type"], type) << r.body;
    }
  };
  expect_error(Call(port_, http::verb::post, "/v1/chat/completions", "{not json"), 400, "invalid_request_error");
  expect_error(Post(port_, "/v1/chat/completions", Json{{"messages", Json::array()}}), 400, "invalid_request_error");
  Json tools = Chat("hi", 4);
  tools["messages"][0]["role"] = "tool";
  expect_error(Post(port_, "/v1/chat/completions", tools), 400, "invalid_request_error");
  Json odd_part = Chat("hi", 4);  // a content part whose type is not a string (the fuzzer's find)
  odd_part["messages"][0]["content"] = Json::array({{{"type", true}, {"text", "x"}}});
  expect_error(Post(port_, "/v1/chat/completions", odd_part), 400, "invalid_request_error");
  Json hot = Chat("hi", 4);
  hot["temperature"] = 7;
  expect_error(Post(port_, "/v1/chat/completions", hot), 400, "invalid_request_error");
  // Contrastive search: penalty_alpha outside [0, 1], no candidates, or with a temperature.
  Json alpha = Chat("hi", 4);
  alpha["penalty_alpha"] = 2;
  expect_error(Post(port_, "/v1/chat/completions", alpha), 400, "invalid_request_error");
  Json no_candidates = Chat("hi", 4);
  no_candidates["penalty_alpha"] = 0.6;
  no_candidates["top_k"] = 0;
  expect_error(Post(port_, "/v1/chat/completions", no_candidates), 400, "invalid_request_error");
  Json sampled = Chat("hi", 4);
  sampled["penalty_alpha"] = 0.6;
  sampled["top_k"] = 4;
  sampled["temperature"] = 0.5;
  const Response refused = Post(port_, "/v1/chat/completions", sampled);
  expect_error(refused, 400, "invalid_request_error");
  EXPECT_NE(refused.body.find("takes no temperature"), std::string::npos) << refused.body;
  sampled.erase("temperature");
  EXPECT_EQ(Post(port_, "/v1/chat/completions", sampled).status, 200);
  Json two = Chat("hi", 4);
  two["n"] = 2;
  expect_error(Post(port_, "/v1/chat/completions", two), 400, "invalid_request_error");
  Json window = Chat("hi", 4);
  window["cache"] = {{"policy", "sink_window"}, {"window", 1 << 23}};  // above --max-window
  expect_error(Post(port_, "/v1/chat/completions", window, {{"x-session-id", "new"}}), 400, "invalid_request_error");
  expect_error(Call(port_, http::verb::post, "/v1/chat/completions", std::string(100 << 10, 'x')), 413,
               "request_too_large");
  expect_error(Call(port_, http::verb::get, "/v1/chat/completions"), 405, "server_error");
  expect_error(Call(port_, http::verb::get, "/v1/nothing"), 404, "not_found_error");
  expect_error(Post(port_, "/v1/chat/completions", Chat("hi", 4), {{"x-session-id", "0123456789abcdef0123456789abcdef"}}),
               404, "not_found_error");
  // Still serving after all of it.
  EXPECT_EQ(Post(port_, "/v1/completions", Json{{"prompt", "Once"}, {"max_tokens", 3}}).status, 200);
}

TEST_F(HttpTest, ApiKeysGuardEverythingButHealthAndOwnSessions) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromLines(absl::StrCat("# keys\n", kKey1, "\n\n", kKey2, "\n"));
  ASSERT_TRUE(keys.ok()) << keys.status();
  StartHttp(&*keys);
  const std::pair<std::string, std::string> auth1 = {"authorization", absl::StrCat("Bearer ", kKey1)};
  const std::pair<std::string, std::string> auth2 = {"authorization", absl::StrCat("Bearer ", kKey2)};
  EXPECT_EQ(Call(port_, http::verb::get, "/health").status, 200);
  EXPECT_EQ(Call(port_, http::verb::get, "/").status, 200);
  EXPECT_EQ(Call(port_, http::verb::get, "/v1/models").status, 401);
  EXPECT_EQ(Call(port_, http::verb::get, "/metrics").status, 401);
  EXPECT_EQ(Call(port_, http::verb::get, "/v1/models", "", {{"authorization", "Bearer not-a-key-0123456789"}}).status,
            401);
  EXPECT_EQ(Call(port_, http::verb::get, "/v1/models", "", {auth1}).status, 200);
  EXPECT_EQ(Call(port_, http::verb::get, "/metrics", "", {auth2}).status, 200);

  const Response opened = Post(port_, "/v1/chat/completions", Chat("Once", 4), {auth1, {"x-session-id", "new"}});
  ASSERT_EQ(opened.status, 200) << opened.body;
  const std::string id = opened.session_id;
  // Another key is refused whatever it tries, and the session is unharmed.
  const int64_t length = Json::parse(Call(port_, http::verb::get, "/v1/sessions/" + id, "", {auth1}).body)["length"];
  EXPECT_EQ(Call(port_, http::verb::get, "/v1/sessions/" + id, "", {auth2}).status, 403);
  const Response stolen = Post(port_, "/v1/chat/completions", Chat("more", 4), {auth2, {"x-session-id", id}});
  EXPECT_EQ(stolen.status, 403);
  EXPECT_EQ(Json::parse(stolen.body)["error"]["type"], "permission_error");
  EXPECT_EQ(Call(port_, http::verb::delete_, "/v1/sessions/" + id, "", {auth2}).status, 403);
  EXPECT_EQ(Json::parse(Call(port_, http::verb::get, "/v1/sessions/" + id, "", {auth1}).body)["length"], length);
  // Its owner goes on.
  EXPECT_EQ(Call(port_, http::verb::get, "/v1/sessions/" + id, "", {auth1}).status, 200);
  EXPECT_EQ(Post(port_, "/v1/chat/completions", Chat("more", 4), {auth1, {"x-session-id", id}}).status, 200);
}

TEST_F(HttpTest, ApiKeyFileRulesAreChecked) {
  EXPECT_FALSE(ApiKeys::FromLines("short\n").ok());
  EXPECT_FALSE(ApiKeys::FromLines("# only a comment\n").ok());
  EXPECT_FALSE(ApiKeys::FromLines("has a space in the middle of it\n").ok());
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromLines(absl::StrCat(kKey1, "\n"));
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->Identify(absl::StrCat("Bearer ", kKey1)), "key#1");
  EXPECT_EQ(keys->Identify(absl::StrCat("bearer ", kKey1)), "key#1");
  EXPECT_EQ(keys->Identify(kKey1), std::nullopt);
  EXPECT_EQ(keys->Identify(absl::StrCat("Bearer ", kKey1, "x")), std::nullopt);
  EXPECT_EQ(keys->Identify(absl::StrCat("Bearer ", std::string(kKey1).substr(1))), std::nullopt);
}

// The value of a sample line `name` (with its labels, as printed) in a
// Prometheus text exposition; -1 when absent.
double Sample(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

TEST_F(HttpTest, MetricsAgreeWithTheLoadAndPassPromtool) {
  StartHttp(nullptr, /*metrics_public=*/true);
  // A scripted load: stateless and session turns, whole and streamed, of
  // several lengths, one cut short by a stop string.
  int64_t prompt = 0, generated = 0, turns = 0;
  std::vector<std::string> sessions;
  for (int i = 0; i < 8; ++i) {
    Json body = Chat(i % 2 ? "Once upon a time" : "The little dog", 3 + 5 * i, /*stream=*/i % 3 == 0);
    if (i == 5) body["stop"] = "a";
    const Response r = Post(port_, "/v1/chat/completions", body, {{"x-session-id", i < 4 ? "new" : ""}});
    ASSERT_EQ(r.status, 200) << r.body;
    if (i < 4) sessions.push_back(r.session_id);
    Json usage;
    if (i % 3 == 0) {
      for (const std::string& e : Events(r.body)) {
        if (e != "[DONE]" && Json::parse(e).contains("usage")) usage = Json::parse(e)["usage"];
      }
    } else {
      usage = Json::parse(r.body)["usage"];
    }
    prompt += usage["prompt_tokens"].get<int64_t>();
    generated += usage["completion_tokens"].get<int64_t>();
    ++turns;
  }
  for (const std::string& id : sessions) ASSERT_EQ(Call(port_, http::verb::delete_, "/v1/sessions/" + id).status, 200);
  for (int i = 0; i < 500 && server_.engine()->stats().sessions != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const Response m = Call(port_, http::verb::get, "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(Sample(m.body, "sinkserve_generated_tokens_total"), generated);
  EXPECT_EQ(Sample(m.body, "sinkserve_prompt_tokens_total"), prompt);
  const double by_reason = std::max(0.0, Sample(m.body, "sinkserve_turns_total{door=\"http\",finish_reason=\"length\"}")) +
                           std::max(0.0, Sample(m.body, "sinkserve_turns_total{door=\"http\",finish_reason=\"stop\"}"));
  EXPECT_EQ(by_reason, turns);
  EXPECT_EQ(Sample(m.body, "sinkserve_time_to_first_token_seconds_count"), turns);
  EXPECT_EQ(Sample(m.body, "sinkserve_sessions"), 0);
  EXPECT_EQ(Sample(m.body, "sinkserve_kv_cache_bytes"), 0);
  EXPECT_EQ(Sample(m.body, "sinkserve_num_requests_waiting"), 0);
  EXPECT_EQ(Sample(m.body, "sinkserve_num_requests_running"), 0);
  EXPECT_EQ(Sample(m.body, "sinkserve_kv_cache_usage_perc"), 0);
  EXPECT_GT(Sample(m.body, "sinkserve_step_batch_tokens_count"), 0);
  EXPECT_GT(Sample(m.body, "sinkserve_inter_token_latency_seconds_count"), 0);

  // Prometheus' own checker accepts the exposition.
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool (Debian's prometheus) is not installed; the counters were checked";
  }
  const std::string path = ::testing::TempDir() + "/sinkserve_metrics.txt";
  {
    std::ofstream out(path);
    out << m.body;
  }
  const std::string command = "promtool check metrics < '" + path + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string report;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) report.append(buf, n);
  EXPECT_EQ(pclose(pipe), 0) << "promtool check metrics:\n" << report;
  std::remove(path.c_str());
}

TEST_F(HttpTest, GreedyAnswersAreTheSameIdsAsGrpcAndGenerate) {
  StartHttp();
  if (!std::filesystem::exists(BinaryPath("sinkserve-generate"))) GTEST_SKIP() << "sinkserve-generate not built";
  constexpr int kNew = 80, kSinks = 4, kWindow = 60;  // the window fills: evictions on every path
  for (const std::string prompt : {"Once upon a time", "Tom and Lily went to the park. They saw a big dog."}) {
    SCOPED_TRACE(prompt);
    const std::vector<uint32_t> generated = GenerateIds(prompt, kNew, kSinks, kWindow);
    ASSERT_FALSE(generated.empty());

    const std::vector<uint32_t> via_grpc = GrpcIds(server_, prompt, kNew, kSinks, kWindow);
    ASSERT_FALSE(via_grpc.empty());

    for (bool stream : {false, true}) {
      const Json body = {{"prompt", prompt}, {"max_tokens", kNew}, {"temperature", 0}, {"stream", stream},
                         {"return_token_ids", true},
                         {"cache", {{"policy", "sink_window"}, {"sinks", kSinks}, {"window", kWindow}}}};
      const Response r = Post(port_, "/v1/completions", body, {{"x-session-id", "new"}});
      ASSERT_EQ(r.status, 200) << r.body;
      std::vector<uint32_t> via_http;
      if (stream) {
        for (const std::string& e : Events(r.body)) {
          if (e == "[DONE]") continue;
          const Json chunk = Json::parse(e);
          if (chunk["choices"].empty() || !chunk["choices"][0].contains("token_ids")) continue;
          for (uint32_t id : chunk["choices"][0]["token_ids"]) via_http.push_back(id);
        }
      } else {
        via_http = Json::parse(r.body)["sinkserve"]["token_ids"].get<std::vector<uint32_t>>();
      }
      EXPECT_EQ(via_http, via_grpc) << (stream ? "streamed" : "whole");
    }
    EXPECT_EQ(via_grpc, generated);
  }
}

TEST_F(HttpTest, DrainingRefusesNewTurnsWith503) {
  StartHttp();
  http_->BeginDrain();
  const Response health = Call(port_, http::verb::get, "/health");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(Json::parse(health.body)["status"], "draining");
  const Response turn = Post(port_, "/v1/chat/completions", Chat("Once", 4));
  EXPECT_EQ(turn.status, 503) << turn.body;
  EXPECT_EQ(Json::parse(turn.body)["error"]["type"], "overloaded_error");
}

TEST_F(HttpTest, ADisconnectCancelsTheTurn) {
  StartHttp();
  for (bool stream : {true, false}) {
    SCOPED_TRACE(stream ? "streaming" : "whole response");
    net::io_context ioc;
    tcp::socket socket(ioc);
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)));
    http::request<http::string_body> req{http::verb::post, "/v1/chat/completions", 11};
    req.set(http::field::host, "localhost");
    req.body() = Chat("Once", 1000000, stream).dump();
    req.prepare_payload();
    http::write(socket, req);
    // Wait until the turn runs, then hang up.
    for (int i = 0; i < 500 && server_.engine()->stats().running_turns == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_EQ(server_.engine()->stats().running_turns, 1);
    socket.close();
    EXPECT_TRUE(WaitIdle()) << "the turn kept running after its client left";
  }
  // Both stateless sessions are gone, and the server still answers.
  EXPECT_EQ(Post(port_, "/v1/chat/completions", Chat("Once", 3)).status, 200);
}

}  // namespace
}  // namespace sinkserve::testing
