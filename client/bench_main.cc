// sinkserve-bench: load for sinkserve-server. N concurrent sessions, each on
// its own stream (and thread), run T turns of M new tokens. Reports
// time-to-first-token and inter-token latency p50/p99, aggregate tokens/s and
// errors, as a table and (--json FILE) as JSON.
//
//   sinkserve-bench --server 127.0.0.1:50051 --sessions 64 --turns 3 --max-new-tokens 64
//   sinkserve-bench --sessions 1,16 ...   runs one phase per count, in order, and
//                                         reports each phase's tok/s against the first
//
// Turns are raw text (--prompt, default "Once upon a time") with ignore_eos,
// so every turn generates exactly M tokens; --temperature (default 0) sets
// sampling. --http HOST:PORT drives the server's HTTP front door instead:
// each session is one keep-alive connection streaming POST /v1/completions
// (Server-Sent Events) with x-session-id, the same turns as over gRPC, and
// the same figures (a chunk's arrival counts as a delta's). Sessions are deleted when done (--keep leaves them). Timing
// starts after the channel is connected and one short untimed warm-up
// session (--no-warmup skips it).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "client/args.h"
#include "client/chat_client.h"

namespace sinkserve::client {
namespace {

constexpr char kTool[] = "sinkserve-bench";

struct BenchConfig {
  std::string server;
  std::string http;  // HOST:PORT of the HTTP front door; empty: gRPC
  int64_t turns = 3;
  int64_t max_new = 64;
  std::string prompt;
  double temperature = 0;
  bool keep = false;
};

struct Phase {
  int64_t sessions = 0;
  int64_t turns_ok = 0;
  int64_t errors = 0;
  int64_t tokens = 0;
  double wall_s = 0;
  std::vector<double> ttft_ms;
  std::vector<double> itl_ms;
  std::vector<std::string> error_messages;  // first few
  double tokens_per_second() const { return wall_s > 0 ? tokens / wall_s : 0; }
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  return v[i];
}

// One session's whole life; returns its own figures.
Phase RunSession(v1::ChatService::Stub* stub, const BenchConfig& config) {
  Phase out;
  auto fail = [&](const absl::Status& s) {
    ++out.errors;
    out.error_messages.push_back(std::string(s.message()));
  };
  v1::Open open;
  absl::StatusOr<std::unique_ptr<ChatStream>> stream = ChatStream::Open(stub, open);
  if (!stream.ok()) {
    fail(stream.status());
    return out;
  }
  for (int64_t t = 0; t < config.turns; ++t) {
    v1::Turn turn;
    turn.set_text(t == 0 ? config.prompt : " " + config.prompt);
    turn.set_raw(true);
    turn.set_ignore_eos(true);
    turn.set_max_new_tokens(static_cast<uint32_t>(config.max_new));
    turn.mutable_sampling()->set_temperature(static_cast<float>(config.temperature));
    absl::StatusOr<TurnResult> r = (*stream)->RunTurn(turn);
    if (!r.ok()) {
      fail(r.status());
      return out;
    }
    if (r->done.reason() == v1::FINISH_REASON_ERROR) {
      fail(absl::InternalError(r->done.error()));
      continue;
    }
    ++out.turns_ok;
    out.tokens += static_cast<int64_t>(r->token_ids.size());
    out.ttft_ms.push_back(r->ttft_ms);
    out.itl_ms.insert(out.itl_ms.end(), r->gaps_ms.begin(), r->gaps_ms.end());
  }
  const std::string id = (*stream)->opened().session_id();
  if (absl::Status s = (*stream)->Close(); !s.ok()) fail(s);
  if (!config.keep) {
    grpc::ClientContext context;
    v1::DeleteSessionRequest del;
    del.set_session_id(id);
    v1::DeleteSessionResponse ignored;
    if (grpc::Status s = stub->DeleteSession(&context, del, &ignored); !s.ok()) fail(FromGrpc(s));
  }
  return out;
}

// The same session over HTTP: one connection, streamed completions.
Phase RunHttpSession(const BenchConfig& config) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  namespace net = boost::asio;
  using Clock = std::chrono::steady_clock;
  Phase out;
  auto fail = [&](const std::string& message) {
    ++out.errors;
    out.error_messages.push_back(message);
  };
  const size_t colon = config.http.rfind(':');
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::error_code ec;
  net::ip::tcp::resolver resolver(ioc);
  const auto endpoints = resolver.resolve(config.http.substr(0, colon), config.http.substr(colon + 1), ec);
  if (!ec) stream.connect(endpoints, ec);
  if (ec) {
    fail("cannot connect to " + config.http + ": " + ec.message());
    return out;
  }
  stream.socket().set_option(net::ip::tcp::no_delay(true), ec);  // a request's header and body go at once
  beast::flat_buffer buffer;
  std::string session = "new";
  for (int64_t t = 0; t < config.turns; ++t) {
    const nlohmann::json body = {{"prompt", t == 0 ? config.prompt : " " + config.prompt},
                                 {"max_tokens", config.max_new},
                                 {"ignore_eos", true},
                                 {"temperature", config.temperature},
                                 {"stream", true},
                                 {"return_token_ids", true}};
    http::request<http::string_body> req{http::verb::post, "/v1/completions", 11};
    req.set(http::field::host, config.http);
    req.set(http::field::content_type, "application/json");
    req.set("x-session-id", session);
    req.body() = body.dump();
    req.prepare_payload();
    const Clock::time_point start = Clock::now();
    http::write(stream, req, ec);
    http::response_parser<http::empty_body> parser;
    parser.body_limit(boost::none);
    if (!ec) http::read_header(stream, buffer, parser, ec);
    if (ec) {
      fail("HTTP request failed: " + ec.message());
      return out;
    }
    if (parser.get().result() != http::status::ok) {
      http::response_parser<http::string_body> rest(std::move(parser));
      http::read(stream, buffer, rest, ec);
      fail("HTTP " + std::to_string(rest.get().result_int()) + ": " + rest.get().body());
      return out;
    }
    if (auto it = parser.get().find("x-session-id"); it != parser.get().end()) session = std::string(it->value());
    // Server-Sent Events, taken as they arrive.
    std::string pending;
    Clock::time_point last = start;
    bool first = true, finished = false;
    int64_t tokens = 0;
    auto on_chunk = [&](uint64_t, beast::string_view data, beast::error_code&) -> size_t {
      pending.append(data.data(), data.size());
      for (size_t end; (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
        const std::string event = pending.substr(0, end);
        if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
        const nlohmann::json j = nlohmann::json::parse(event.substr(6), nullptr, false);
        if (j.is_discarded()) continue;
        if (j.contains("error")) fail(j["error"].value("message", "an error event"));
        if (!j.contains("choices") || j["choices"].empty()) continue;
        const nlohmann::json& choice = j["choices"][0];
        if (!choice["finish_reason"].is_null()) finished = true;
        const int64_t n = choice.contains("token_ids") ? static_cast<int64_t>(choice["token_ids"].size()) : 0;
        if (n == 0) continue;
        const Clock::time_point now = Clock::now();
        const double ms = std::chrono::duration<double, std::milli>(now - last).count();
        if (first) {
          out.ttft_ms.push_back(ms);
          first = false;
        } else {
          out.itl_ms.push_back(ms);
        }
        last = now;
        tokens += n;
      }
      return data.size();
    };
    parser.on_chunk_body(on_chunk);
    http::read(stream, buffer, parser, ec);
    if (ec) {
      fail("HTTP stream failed: " + ec.message());
      return out;
    }
    if (!finished) {
      fail("the stream ended without a finish reason");
      continue;
    }
    ++out.turns_ok;
    out.tokens += tokens;
  }
  if (!config.keep && session != "new") {
    http::request<http::empty_body> del{http::verb::delete_, "/v1/sessions/" + session, 11};
    del.set(http::field::host, config.http);
    http::write(stream, del, ec);
    http::response<http::string_body> res;
    if (!ec) http::read(stream, buffer, res, ec);
    if (ec || res.result() != http::status::ok) fail("DELETE failed: " + (ec ? ec.message() : res.body()));
  }
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  return out;
}

Phase RunPhase(v1::ChatService::Stub* stub, const BenchConfig& config, int64_t sessions) {
  std::vector<Phase> results(sessions);
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < sessions; ++i) {
    threads.emplace_back([&, i] { results[i] = config.http.empty() ? RunSession(stub, config) : RunHttpSession(config); });
  }
  for (std::thread& t : threads) t.join();
  Phase total;
  total.sessions = sessions;
  total.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (Phase& r : results) {
    total.turns_ok += r.turns_ok;
    total.errors += r.errors;
    total.tokens += r.tokens;
    total.ttft_ms.insert(total.ttft_ms.end(), r.ttft_ms.begin(), r.ttft_ms.end());
    total.itl_ms.insert(total.itl_ms.end(), r.itl_ms.begin(), r.itl_ms.end());
    for (std::string& m : r.error_messages) {
      if (total.error_messages.size() < 5) total.error_messages.push_back(std::move(m));
    }
  }
  return total;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string PhaseJson(const Phase& p, double baseline_tps) {
  std::vector<std::string> errors;
  for (const std::string& m : p.error_messages) errors.push_back(JsonString(m));
  return absl::StrFormat(
      "{\"sessions\": %d, \"turns_ok\": %d, \"errors\": %d, \"tokens\": %d, \"wall_s\": %.4f, "
      "\"tokens_per_second\": %.2f, \"speedup_vs_first_phase\": %.3f, "
      "\"ttft_ms\": {\"p50\": %.3f, \"p99\": %.3f}, \"inter_token_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
      "\"error_messages\": [%s]}",
      p.sessions, p.turns_ok, p.errors, p.tokens, p.wall_s, p.tokens_per_second(),
      baseline_tps > 0 ? p.tokens_per_second() / baseline_tps : 0, Percentile(p.ttft_ms, 50),
      Percentile(p.ttft_ms, 99), Percentile(p.itl_ms, 50), Percentile(p.itl_ms, 99), absl::StrJoin(errors, ", "));
}

absl::Status Run(int argc, char** argv) {
  Args args({"server", "http", "sessions", "turns", "max-new-tokens", "prompt", "temperature", "json", "label"},
            {"keep", "no-warmup"});
  if (absl::Status s = args.Parse(argc, argv); !s.ok()) return s;
  BenchConfig config;
  config.server = args.String("server", "127.0.0.1:50051");
  config.http = args.String("http", "");
  if (!config.http.empty() && config.http.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError("--http expects HOST:PORT, e.g. 127.0.0.1:8080");
  }
  absl::StatusOr<int64_t> turns = args.Int("turns", 3, 1, 1000000);
  if (!turns.ok()) return turns.status();
  config.turns = *turns;
  absl::StatusOr<int64_t> max_new = args.Int("max-new-tokens", 64, 1, 0xffffffffLL);
  if (!max_new.ok()) return max_new.status();
  config.max_new = *max_new;
  config.prompt = args.String("prompt", "Once upon a time");
  absl::StatusOr<double> temperature = args.Double("temperature", 0);
  if (!temperature.ok()) return temperature.status();
  config.temperature = *temperature;
  config.keep = args.Switch("keep");
  std::vector<int64_t> counts;
  for (absl::string_view part : absl::StrSplit(args.String("sessions", "16"), ',')) {
    int64_t n;
    if (!absl::SimpleAtoi(part, &n) || n < 1 || n > 100000) {
      return absl::InvalidArgumentError("--sessions expects positive counts, e.g. 64 or 1,16");
    }
    counts.push_back(n);
  }

  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(config.server, grpc::InsecureChannelCredentials(), channel_args);
  auto stub = v1::ChatService::NewStub(channel);
  // Connection setup and the server's first-use costs are not throughput:
  // connect, then run one short untimed session.
  if (config.http.empty() &&
      !channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return absl::UnavailableError(absl::StrFormat("cannot connect to %s; is sinkserve-server running?", config.server));
  }
  if (!args.Switch("no-warmup")) {
    BenchConfig warmup = config;
    warmup.turns = 1;
    warmup.max_new = std::min<int64_t>(config.max_new, 16);
    Phase w = RunPhase(stub.get(), warmup, 1);
    if (w.errors > 0) return absl::UnavailableError(absl::StrFormat("warm-up failed: %s", w.error_messages[0]));
  }

  std::printf("%-9s %6s %7s %9s %9s %11s %9s %9s %9s %9s %8s\n", "sessions", "turns", "errors", "tokens", "wall_s",
              "tok/s", "x_first", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99");
  std::vector<std::string> phases_json;
  double baseline = 0;
  int64_t errors = 0;
  for (int64_t n : counts) {
    Phase p = RunPhase(stub.get(), config, n);
    if (baseline == 0) baseline = p.tokens_per_second();
    errors += p.errors;
    std::printf("%-9lld %6lld %7lld %9lld %9.3f %11.1f %9.2f %9.2f %9.2f %9.3f %8.3f\n", static_cast<long long>(n),
                static_cast<long long>(p.turns_ok), static_cast<long long>(p.errors), static_cast<long long>(p.tokens),
                p.wall_s, p.tokens_per_second(), baseline > 0 ? p.tokens_per_second() / baseline : 0,
                Percentile(p.ttft_ms, 50), Percentile(p.ttft_ms, 99), Percentile(p.itl_ms, 50),
                Percentile(p.itl_ms, 99));
    for (const std::string& m : p.error_messages) std::printf("  error: %s\n", m.c_str());
    std::fflush(stdout);
    phases_json.push_back(PhaseJson(p, baseline));
  }
  std::printf("(latencies in ms; x_first = tok/s relative to the first phase)\n");
  if (args.Has("json")) {
    std::ofstream out(args.String("json"));
    out << absl::StrFormat(
        "{\n  \"label\": %s,\n  \"server\": %s,\n  \"turns\": %d,\n  \"max_new_tokens\": %d,\n  \"prompt\": %s,\n"
        "  \"temperature\": %g,\n  \"phases\": [\n    %s\n  ]\n}\n",
        JsonString(args.String("label")), JsonString(config.server), config.turns, config.max_new,
        JsonString(config.prompt), config.temperature, absl::StrJoin(phases_json, ",\n    "));
    if (!out) return absl::UnavailableError(absl::StrFormat("cannot write %s", args.String("json")));
  }
  if (errors > 0) return absl::InternalError(absl::StrFormat("%d errors", errors));
  return absl::OkStatus();
}

}  // namespace
}  // namespace sinkserve::client

int main(int argc, char** argv) {
  return sinkserve::client::ClientMain(sinkserve::client::kTool, sinkserve::client::Run, argc, argv);
}
