// sinkserve-server: serves endless multi-turn chat over gRPC, one
// bidirectional stream per conversation, every session on its own
// attention-sink + rolling-window KV cache, all batched by one engine thread.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/stubs/logging.h"
#include "common/runtime.h"
#include "engine/engine.h"
#include "engine/status_macros.h"
#include "server/api_keys.h"
#include "server/chat_server.h"
#include "server/convert.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "store/fingerprint.h"
#include "store/store_persistence.h"

namespace sinkserve {
namespace {

constexpr char kTool[] = "sinkserve-server";

absl::StatusOr<double> SecondsFlag(const Flags& flags, const char* name, double fallback) {
  ASSIGN_OR_RETURN(double v, flags.Double(name, fallback));
  if (!(v >= 0) || v > 1e9) return absl::InvalidArgumentError(absl::StrFormat("--%s must be >= 0 seconds, got %g", name, v));
  return v;
}

v1::ServerInfo Info(const EngineConfig& c, const Backend& backend, const std::string& model, int64_t max_message) {
  v1::ServerInfo info;
  info.set_model(model);
  info.set_backend(std::string(backend.name()));
  ToProto(c.default_cache, info.mutable_default_cache());
  info.set_default_chat_template(ChatTemplateName(c.default_template));
  info.set_max_sessions(static_cast<uint32_t>(c.max_sessions));
  info.set_max_window_tokens(static_cast<uint32_t>(c.max_window));
  info.set_max_prompt_bytes(static_cast<uint32_t>(c.max_prompt_bytes));
  info.set_max_new_tokens(static_cast<uint32_t>(c.max_new_tokens));
  info.set_default_max_new_tokens(static_cast<uint32_t>(c.default_max_new_tokens));
  info.set_max_message_bytes(static_cast<uint32_t>(max_message));
  info.set_session_ttl_seconds(c.session_ttl_seconds);
  info.set_vocab_size(static_cast<uint32_t>(backend.config().vocab_size));
  info.set_context_tokens(static_cast<uint32_t>(backend.config().max_seq_len));
  info.set_prefill_chunk_tokens(static_cast<uint32_t>(c.scheduler.prefill_chunk));
  info.set_step_token_budget(static_cast<uint32_t>(c.scheduler.step_token_budget));
  info.set_max_stop_strings(static_cast<uint32_t>(c.max_stop_strings));
  info.set_max_stop_bytes(static_cast<uint32_t>(c.max_stop_bytes));
  info.set_kv_budget_bytes(static_cast<uint64_t>(c.kv_budget_bytes));
  info.set_max_sessions_per_client(static_cast<uint32_t>(c.max_sessions_per_client));
  info.set_allow_takeover(c.allow_takeover);
  info.set_stalled_stream_seconds(c.stalled_stream_seconds);
  info.set_prefill_share(c.scheduler.prefill_share);
  return info;
}

// Protobuf logs an ERROR line for each message with a string field that is
// not UTF-8. Such a message is the client's mistake, answered with
// INVALID_ARGUMENT; a line per message would let any client flood the log.
// Everything else protobuf logs still goes to stderr.
void ProtobufLog(google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
  if (absl::StrContains(message, "invalid UTF-8")) return;
  static constexpr const char* kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  std::cerr << absl::StrFormat("[libprotobuf %s %s:%d] %s\n", kLevels[std::clamp(static_cast<int>(level), 0, 3)], file,
                               line, message);
}

// Below this many fds a server warns at start: a few hundred clients would
// exhaust it.
constexpr int64_t kFewFds = 4096;

struct FdLimit {
  int64_t soft = 0;
};

// Raises the soft limit on open files to the hard one: every connection is a
// descriptor, and gRPC's listener stops accepting for good once accept()
// fails with EMFILE (grpc/grpc#20418), so the limit must sit far above what
// clients reach.
FdLimit RaiseFdLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return {};
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return {limit.rlim_cur == RLIM_INFINITY ? INT64_MAX : static_cast<int64_t>(limit.rlim_cur)};
}

absl::Status Run(int argc, char** argv) {
  std::vector<std::string> valued = {"listen", "chat-template", "step-tokens", "max-sessions", "max-window",
                                     "max-prompt-bytes", "max-new-tokens", "default-max-new-tokens",
                                     "max-message-bytes", "session-ttl", "drain-timeout", "outbox", "kv-budget",
                                     "max-sessions-per-client", "stalled-stream-timeout", "keepalive",
                                     "keepalive-timeout", "handshake-timeout", "connection-idle",
                                     "max-streams-per-connection", "prefill-share", "http-listen", "api-key-file",
                                     "http-max-body-bytes", "http-max-connections", "tls-cert", "tls-key",
                                     "session-store", "store-ttl"};
  for (const auto* group : {&kModelFlags, &kCacheFlags, &kSamplingFlags}) valued.insert(valued.end(), group->begin(), group->end());
  Flags flags(valued, {"allow-takeover", "metrics-public"});
  RETURN_IF_ERROR(flags.Parse(argc, argv));

  EngineConfig config;
  ASSIGN_OR_RETURN(config.default_cache, ParseCacheConfig(flags));
  ASSIGN_OR_RETURN(config.scheduler.prefill_chunk, ParseChunk(flags));
  ASSIGN_OR_RETURN(config.scheduler.step_token_budget, flags.IntInRange("step-tokens", 512, 1, 1 << 20));
  ASSIGN_OR_RETURN(config.scheduler.prefill_share, flags.Double("prefill-share", 0.5));  // checked by Validate()
  ASSIGN_OR_RETURN(config.max_sessions, flags.IntInRange("max-sessions", 256, 1, 1 << 20));
  ASSIGN_OR_RETURN(config.max_sessions_per_client,
                   flags.IntInRange("max-sessions-per-client", std::max<int64_t>(config.max_sessions / 4, 1), 0,
                                    1 << 20));
  config.allow_takeover = flags.Switch("allow-takeover");
  ASSIGN_OR_RETURN(config.max_window, flags.IntInRange("max-window", 65536, 1, 1 << 24));
  ASSIGN_OR_RETURN(config.max_prompt_bytes, flags.IntInRange("max-prompt-bytes", 1 << 20, 1, 1 << 30));
  ASSIGN_OR_RETURN(config.max_new_tokens, flags.IntInRange("max-new-tokens", 1000000, 1, 0xffffffffLL));
  ASSIGN_OR_RETURN(config.default_max_new_tokens,
                   flags.IntInRange("default-max-new-tokens", std::min<int64_t>(512, config.max_new_tokens), 1,
                                    config.max_new_tokens));
  ASSIGN_OR_RETURN(int64_t max_message, flags.IntInRange("max-message-bytes", 4 << 20, 1024, 1 << 30));
  ASSIGN_OR_RETURN(config.session_ttl_seconds, SecondsFlag(flags, "session-ttl", 600));
  ASSIGN_OR_RETURN(config.stalled_stream_seconds, SecondsFlag(flags, "stalled-stream-timeout", 60));
  ASSIGN_OR_RETURN(double drain_timeout, SecondsFlag(flags, "drain-timeout", 30));
  // The session store: opened (and reached) before the model loads, so a
  // bad spec or an unreachable Redis fails fast.
  ASSIGN_OR_RETURN(double store_ttl, SecondsFlag(flags, "store-ttl", 7 * 24 * 3600));
  std::unique_ptr<store::StorePersistence> session_store;
  std::string store_description = "off";
  if (flags.Has("session-store")) {
    ASSIGN_OR_RETURN(store::StoreSpec spec, store::ParseStoreSpec(flags.String("session-store", ""), store_ttl));
    ASSIGN_OR_RETURN(session_store, store::StorePersistence::Create(spec, store_ttl));
    store_description = spec.description;
  }
  ASSIGN_OR_RETURN(int64_t outbox, flags.IntInRange("outbox", 64, 1, 1 << 20));
  config.outbox_capacity = static_cast<size_t>(outbox);
  ASSIGN_OR_RETURN(config.default_sampling, ParseSampling(flags));
  // The KV budget defaults to half the machine's memory: every open is
  // admitted by the bytes its cache will hold, so no request can make the
  // engine thread allocate what the machine does not have.
  const int64_t memory = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  ASSIGN_OR_RETURN(config.kv_budget_bytes, flags.Bytes("kv-budget", memory > 0 ? memory / 2 : 0));
  if (config.max_prompt_bytes > max_message) {
    return absl::InvalidArgumentError("--max-prompt-bytes must not exceed --max-message-bytes");
  }
  RETURN_IF_ERROR(config.Validate());  // before the model loads: a bad flag fails fast

  ASSIGN_OR_RETURN(Runtime runtime, LoadRuntime(flags));
  const std::string template_flag = flags.String("chat-template", "auto");
  if (template_flag == "auto") {
    const DetectedTemplate detected = DetectChatTemplateOrDefault(runtime.chat_template);
    config.default_template = detected.kind;
    if (detected.fallback) {
      std::cerr << absl::StrFormat(
          "%s: warning: the model's chat template is not one this server knows (%s); using '%s'. Pick one with "
          "--chat-template\n",
          kTool, ChatTemplateNameList(), ChatTemplateName(detected.kind));
    }
  } else {
    ASSIGN_OR_RETURN(config.default_template, ParseChatTemplate(template_flag));
  }
  config.model_name = runtime.model_name;
  if (session_store != nullptr) {
    // Stored caches are loaded only where the same files make the same K/V.
    std::vector<std::string> files = {flags.String("model", "")};
    if (flags.Has("tokenizer")) files.push_back(flags.String("tokenizer", ""));
    const absl::Time start = absl::Now();
    ASSIGN_OR_RETURN(config.model_fingerprint,
                     store::FingerprintFiles(files, absl::StrCat("weights=", flags.String("weights", "native"))));
    std::cerr << absl::StrFormat("%s: session store: %s, TTL %gs; model fingerprint %s (%.0f ms)\n", kTool,
                                 store_description, store_ttl, config.model_fingerprint.substr(0, 23),
                                 absl::ToDoubleMilliseconds(absl::Now() - start));
    config.store = session_store.get();
  }
  const Backend& backend = *runtime.backend;
  // A session's sinks and window default to at most the model's trained
  // context: positions in the cache run up to sinks + window, and a query's
  // attention costs time in proportion to the keys it sees, so a larger cap
  // lets one client's sessions slow every step (raise it explicitly).
  const int32_t context = backend.config().max_seq_len;
  const bool window_above_context = flags.Has("max-window") && config.max_window > context;
  if (!flags.Has("max-window")) {
    config.max_window = std::max({context, config.default_cache.window, config.default_cache.sinks});
  }
  // The HTTP front door's settings, checked before anything starts.
  HttpServerOptions http_options;
  http_options.listen = flags.String("http-listen", "127.0.0.1:8080");
  http_options.metrics_public = flags.Switch("metrics-public");
  ASSIGN_OR_RETURN(http_options.max_body_bytes,
                   flags.IntInRange("http-max-body-bytes", std::max<int64_t>(8 << 20, 4 * config.max_prompt_bytes), 1024,
                                    int64_t{1} << 31));
  ASSIGN_OR_RETURN(http_options.max_connections, flags.IntInRange("http-max-connections", 1024, 1, 1 << 20));
  ApiKeys keys;
  if (flags.Has("api-key-file")) {
    ASSIGN_OR_RETURN(keys, ApiKeys::Load(flags.String("api-key-file", "")));
  }
  Metrics metrics;
  config.on_step = [&metrics](int64_t tokens, int64_t sequences) { metrics.ObserveStep(tokens, sequences); };
  if (config.store != nullptr) {
    config.on_store = [&metrics](std::string_view op, double seconds, bool ok) { metrics.ObserveStore(op, seconds, ok); };
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                   Engine::Create(runtime.backend.get(), runtime.tokenizer.get(), config));
  metrics.SetEngine(engine.get());

  ChatServerOptions options;
  options.listen = flags.String("listen", "127.0.0.1:50051");
  options.max_message_bytes = max_message;
  ASSIGN_OR_RETURN(options.keepalive_seconds, SecondsFlag(flags, "keepalive", 30));
  ASSIGN_OR_RETURN(options.keepalive_timeout_seconds, SecondsFlag(flags, "keepalive-timeout", 10));
  ASSIGN_OR_RETURN(options.handshake_timeout_seconds, SecondsFlag(flags, "handshake-timeout", 10));
  ASSIGN_OR_RETURN(options.connection_idle_seconds, SecondsFlag(flags, "connection-idle", 300));
  ASSIGN_OR_RETURN(options.max_streams_per_connection, flags.IntInRange("max-streams-per-connection", 100, 1, 1 << 20));
  options.keys = &keys;
  options.metrics = &metrics;
  if (flags.Has("tls-cert") != flags.Has("tls-key")) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together (PEM files)");
  }
  options.tls_cert_file = http_options.tls_cert_file = flags.String("tls-cert", "");
  options.tls_key_file = http_options.tls_key_file = flags.String("tls-key", "");
  const FdLimit fds = RaiseFdLimit();
  google::protobuf::SetLogHandler(&ProtobufLog);  // before any request is parsed
  ASSIGN_OR_RETURN(std::unique_ptr<ChatServer> server,
                   ChatServer::Start(engine.get(), Info(config, backend, config.model_name, max_message), options));
  std::unique_ptr<HttpServer> http;
  if (http_options.listen != "off") {
    ASSIGN_OR_RETURN(http, HttpServer::Start(engine.get(), &keys, &metrics, http_options));
  }
  const CacheConfig& c = config.default_cache;
  std::cerr << absl::StrFormat(
      "%s: serving model=%s backend=%s cache=%s sinks=%d window=%d chunk=%d template=%s max_sessions=%d "
      "kv_budget=%dMiB session_ttl=%gs max_sessions_per_client=%d fd_limit=%d api_keys=%d metrics=%s http=%s "
      "session_store=%s listen=%s\n",
      kTool, config.model_name, backend.name(), CachePolicyName(c.policy), c.sinks, c.window,
      config.scheduler.prefill_chunk, ChatTemplateName(config.default_template), config.max_sessions,
      config.kv_budget_bytes >> 20, config.session_ttl_seconds, config.max_sessions_per_client, fds.soft,
      keys.size(), http_options.metrics_public || !keys.enabled() ? "open" : "key", http ? http->address() : "off",
      store_description, server->address());
  if (window_above_context) {
    std::cerr << absl::StrFormat(
        "%s: warning: --max-window %d is above the model's trained context of %d tokens; a session that large sees "
        "positions the model was not trained on, and its tokens cost more than others'\n",
        kTool, config.max_window, context);
  }
  if (fds.soft < kFewFds) {
    std::cerr << absl::StrFormat(
        "%s: warning: only %d file descriptors may be open (hard limit); each connection takes one, so raise it "
        "(ulimit -n, or the container's nofile) for many clients\n",
        kTool, fds.soft);
  }

  // SIGTERM/SIGINT were blocked in every thread (main, before any thread
  // started); wait for one here, then drain.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::cerr << absl::StrFormat("%s: %s received, draining for up to %gs\n", kTool,
                               signal_number == SIGTERM ? "SIGTERM" : "SIGINT", drain_timeout);
  if (http) http->BeginDrain();
  server->Drain(absl::Seconds(drain_timeout));
  http.reset();
  server.reset();
  engine.reset();  // before the backend and tokenizer it uses
  session_store.reset();  // after the engine: finishes the saves it queued
  std::cerr << absl::StrFormat("%s: stopped\n", kTool);
  return absl::OkStatus();
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) {
  // KV caches come and go with sessions. A fixed mmap threshold (glibc's
  // default one rises after the first large free, up to 32 MiB) keeps every
  // cache-sized buffer in its own mapping, returned to the OS on free, so
  // memory does not creep as sessions churn through a fragmented heap.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // inherited by every thread
  absl::Status status = sinkserve::Run(argc, argv);
  if (!status.ok()) return sinkserve::Fail(sinkserve::kTool, status);
  return 0;
}
