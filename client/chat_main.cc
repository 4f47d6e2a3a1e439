// sinkserve-chat: a terminal client for sinkserve-server.
//
//   interactive:  sinkserve-chat [--server 127.0.0.1:50051] [--system TEXT]
//                 then type; /reset starts a new session, /stats shows usage,
//                 /quit leaves (Ctrl-D too).
//   scriptable:   sinkserve-chat --prompt "Once upon a time" --raw --prompt " and"
//                 (one turn per --prompt, printed as it streams)
//   resume:       --session ID (printed to stderr at open)
//   health probe: sinkserve-chat --health  (exit 0 when SERVING)
//
// Turn flags: --raw --max-new-tokens N --min-new-tokens N --ignore-eos --stop S
// (repeatable) --temperature --top-k --top-p --min-p --repetition-penalty --seed
// --penalty-alpha (contrastive search, with --top-k candidates).
// Open flags: --policy sink_window|window|dense --sinks N --window N
// --template NAME --system TEXT. Output: --print-ids prints token ids instead
// of text; --stats prints each turn's usage to stderr.
#include <grpcpp/generic/generic_stub.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "client/args.h"
#include "client/chat_client.h"

namespace sinkserve::client {
namespace {

constexpr char kTool[] = "sinkserve-chat";

// grpc.health.v1.Health/Check with an empty service name, over the generic
// stub: the request is the empty message; SERVING is field 1 = 1.
absl::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel, double timeout_s) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  grpc::CompletionQueue cq;
  grpc::ByteBuffer request;  // empty HealthCheckRequest
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  if (!status.ok()) return FromGrpc(status);
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (bytes == std::string("\x08\x01", 2)) return absl::OkStatus();
  return absl::UnavailableError("the server is not SERVING (starting up or draining)");
}

absl::StatusOr<v1::Turn> TurnFromArgs(const Args& args) {
  v1::Turn turn;
  turn.set_raw(args.Switch("raw"));
  auto u32 = [&](const char* name) { return args.Int(name, 0, 0, 0xffffffffLL); };
  absl::StatusOr<int64_t> max_new = u32("max-new-tokens");
  if (!max_new.ok()) return max_new.status();
  turn.set_max_new_tokens(static_cast<uint32_t>(*max_new));
  absl::StatusOr<int64_t> min_new = u32("min-new-tokens");
  if (!min_new.ok()) return min_new.status();
  turn.set_min_new_tokens(static_cast<uint32_t>(*min_new));
  turn.set_ignore_eos(args.Switch("ignore-eos"));
  for (const std::string& s : args.All("stop")) turn.add_stop(s);
  v1::SamplingParams* p = turn.mutable_sampling();
  for (const char* name : {"temperature", "top-p", "min-p", "repetition-penalty", "penalty-alpha"}) {
    if (!args.Has(name)) continue;
    absl::StatusOr<double> v = args.Double(name, 0);
    if (!v.ok()) return v.status();
    const std::string n = name;
    if (n == "temperature") p->set_temperature(static_cast<float>(*v));
    if (n == "top-p") p->set_top_p(static_cast<float>(*v));
    if (n == "min-p") p->set_min_p(static_cast<float>(*v));
    if (n == "repetition-penalty") p->set_repetition_penalty(static_cast<float>(*v));
    if (n == "penalty-alpha") p->set_penalty_alpha(static_cast<float>(*v));
  }
  if (args.Has("top-k")) {
    absl::StatusOr<int64_t> k = u32("top-k");
    if (!k.ok()) return k.status();
    p->set_top_k(static_cast<uint32_t>(*k));
  }
  if (args.Has("seed")) {
    absl::StatusOr<int64_t> seed = args.Int("seed", 0, 0, INT64_MAX);
    if (!seed.ok()) return seed.status();
    p->set_seed(static_cast<uint64_t>(*seed));
  }
  return turn;
}

absl::StatusOr<v1::Open> OpenFromArgs(const Args& args, const std::string& session) {
  v1::Open open;
  open.set_session_id(session);
  open.set_system_prompt(args.String("system"));
  open.set_chat_template(args.String("template"));
  const std::string policy = args.String("policy");
  if (policy == "sink_window") open.mutable_cache()->set_policy(v1::CACHE_POLICY_SINK_WINDOW);
  else if (policy == "window") open.mutable_cache()->set_policy(v1::CACHE_POLICY_WINDOW);
  else if (policy == "dense") open.mutable_cache()->set_policy(v1::CACHE_POLICY_DENSE);
  else if (!policy.empty()) return absl::InvalidArgumentError("--policy must be sink_window, window or dense");
  absl::StatusOr<int64_t> sinks = args.Int("sinks", 0, 0, 1 << 24);
  if (!sinks.ok()) return sinks.status();
  absl::StatusOr<int64_t> window = args.Int("window", 0, 0, 1 << 24);
  if (!window.ok()) return window.status();
  open.mutable_cache()->set_sink_tokens(static_cast<uint32_t>(*sinks));
  open.mutable_cache()->set_window_tokens(static_cast<uint32_t>(*window));
  return open;
}

void PrintUsage(const v1::TurnDone& done) {
  const v1::Usage& u = done.usage();
  std::cerr << absl::StrFormat(
      "[turn %d: %s, prompt %d, generated %d, session %d, cache %d, evicted %d, ttft %.1f ms, %.1f tok/s%s%s]\n",
      done.turn(), v1::FinishReason_Name(done.reason()), u.prompt_tokens(), u.generated_tokens(),
      u.session_tokens(), u.cache_tokens(), u.evicted_tokens(), u.time_to_first_token_ms(), u.tokens_per_second(),
      done.error().empty() ? "" : ", error: ", done.error());
}

absl::Status Run(int argc, char** argv) {
  Args args({"server", "session", "prompt", "system", "template", "policy", "sinks", "window", "max-new-tokens",
             "min-new-tokens", "stop", "temperature", "top-k", "top-p", "min-p", "repetition-penalty", "seed",
             "penalty-alpha",
             "timeout"},
            {"raw", "ignore-eos", "print-ids", "stats", "health"});
  if (absl::Status s = args.Parse(argc, argv); !s.ok()) return s;
  const std::string server = args.String("server", "127.0.0.1:50051");
  auto channel = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
  if (args.Switch("health")) {
    absl::StatusOr<double> timeout = args.Double("timeout", 3);
    if (!timeout.ok()) return timeout.status();
    return CheckHealth(channel, *timeout);
  }
  auto stub = v1::ChatService::NewStub(channel);
  absl::StatusOr<v1::Turn> turn_template = TurnFromArgs(args);
  if (!turn_template.ok()) return turn_template.status();
  const bool print_ids = args.Switch("print-ids");
  const bool stats = args.Switch("stats");

  auto open_session = [&](const std::string& id) -> absl::StatusOr<std::unique_ptr<ChatStream>> {
    absl::StatusOr<v1::Open> open = OpenFromArgs(args, id);
    if (!open.ok()) return open.status();
    auto stream = ChatStream::Open(stub.get(), *open);
    if (stream.ok()) {
      const v1::Opened& o = (*stream)->opened();
      std::cerr << absl::StrFormat("[%s session %s, model %s, position %d]\n", o.resumed() ? "resumed" : "new",
                                   o.session_id(), o.model(), o.position());
      if (o.restored() == v1::RESTORE_KIND_EXACT) std::cerr << "[restored from the session store]\n";
      if (o.restored() == v1::RESTORE_KIND_REPLAYED) {
        std::cerr << absl::StrFormat("[restored from the session store by %s]\n", o.restore_note());
      }
      // What the latest turn produced, which a dropped connection may have
      // cut short on this side.
      if (o.resumed() && o.last_turn().turn() > 0) {
        const v1::LastTurn& last = o.last_turn();
        std::cerr << absl::StrFormat("[turn %d: %d tokens, %s%s]\n", last.turn(), last.generated_tokens(),
                                     last.reason() == v1::FINISH_REASON_UNSPECIFIED ? "still running"
                                                                                     : v1::FinishReason_Name(last.reason()),
                                     last.truncated() ? ", its last 64 KiB" : "");
        std::printf("%s\n", last.text().c_str());
        std::fflush(stdout);
      }
    }
    return stream;
  };
  absl::StatusOr<std::unique_ptr<ChatStream>> stream = open_session(args.String("session"));
  if (!stream.ok()) return stream.status();

  v1::TurnDone last_done;
  auto run_turn = [&](const std::string& text) -> absl::Status {
    v1::Turn turn = *turn_template;
    turn.set_text(text);
    bool first_id = true;
    absl::StatusOr<TurnResult> result = (*stream)->RunTurn(turn, [&](const v1::Delta& d) {
      if (print_ids) {
        for (uint32_t id : d.token_ids()) {
          std::printf(first_id ? "%u" : " %u", id);
          first_id = false;
        }
      } else {
        std::fputs(d.text().c_str(), stdout);
      }
      std::fflush(stdout);
    });
    if (!result.ok()) return result.status();
    std::printf("\n");
    std::fflush(stdout);
    last_done = result->done;
    if (stats) PrintUsage(result->done);
    if (result->done.reason() == v1::FINISH_REASON_ERROR) {
      return absl::FailedPreconditionError(absl::StrFormat("turn failed: %s", result->done.error()));
    }
    return absl::OkStatus();
  };

  const std::vector<std::string> prompts = args.All("prompt");
  if (!prompts.empty()) {
    for (const std::string& p : prompts) {
      if (absl::Status s = run_turn(p); !s.ok()) return s;
    }
    return (*stream)->Close();
  }

  // Interactive.
  std::cerr << "[type a message; /reset for a new session, /stats for usage, /quit to leave]\n";
  std::string line;
  while (true) {
    std::cout << "> " << std::flush;
    if (!std::getline(std::cin, line) || line == "/quit") break;
    if (line.empty()) continue;
    if (line == "/stats") {
      PrintUsage(last_done);
      continue;
    }
    if (line == "/reset") {
      const std::string old_id = (*stream)->opened().session_id();
      (void)(*stream)->Close();
      grpc::ClientContext context;
      v1::DeleteSessionRequest del;
      del.set_session_id(old_id);
      v1::DeleteSessionResponse ignored;
      (void)stub->DeleteSession(&context, del, &ignored);
      stream = open_session("");
      if (!stream.ok()) return stream.status();
      last_done.Clear();
      continue;
    }
    if (absl::Status s = run_turn(line); !s.ok()) {
      std::cerr << kTool << ": " << s.message() << "\n";
      if (!absl::IsFailedPrecondition(s)) return s;  // the stream is gone
    }
  }
  return (*stream)->Close();
}

}  // namespace
}  // namespace sinkserve::client

int main(int argc, char** argv) {
  return sinkserve::client::ClientMain(sinkserve::client::kTool, sinkserve::client::Run, argc, argv);
}
