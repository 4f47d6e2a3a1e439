// The engine thread's loop, its commands, and session lifecycle. The step
// itself (schedule, forward, postprocess) is in engine_step.cc.
#include "engine/engine.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve {
namespace {

absl::Status NoSuchSession(const std::string& id, double ttl_seconds) {
  return absl::NotFoundError(absl::StrFormat(
      "no session '%s': it never existed, was deleted, or expired after %g s detached", id, ttl_seconds));
}

absl::Status NoSessionToDelete(const std::string& id) {
  return absl::NotFoundError(absl::StrFormat("no session '%s' to delete (already deleted or expired?)", id));
}

// How often detached sessions are checked against the idle TTL.
constexpr auto kSweepInterval = std::chrono::milliseconds(100);

absl::Status Unavailable(const char* what) {
  return absl::UnavailableError(absl::StrFormat(
      "the server is shutting down and accepts no %s; its sessions live only in this process and end with it, so "
      "open a new session once it is back",
      what));
}

// NOT_FOUND for an id that is not the shape NewSessionId makes (32
// lowercase hex digits): such an id is never looked up, nor echoed back.
absl::Status CheckSessionIdShape(std::string_view id) {
  const bool hex32 = id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
                       return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                     });
  if (hex32) return absl::OkStatus();
  return absl::NotFoundError(absl::StrFormat(
      "no session with that id (%d bytes); session ids are the 32 lowercase hex digits an opened answer gave",
      id.size()));
}

}  // namespace

std::string NewSessionId() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    // getrandom only fails on kernels older than 3.17 or a bad buffer; an id
    // that is not random would be a security bug, so stop here.
    if (n < 0) std::abort();
    got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (size_t i = 0; i < sizeof(bytes); ++i) {
    id[2 * i] = kHex[bytes[i] >> 4];
    id[2 * i + 1] = kHex[bytes[i] & 15];
  }
  return id;
}

namespace {

// The scheduler's config with its cost model filled in from the model.
SchedulerConfig ForModel(SchedulerConfig config, const ModelConfig& model) {
  if (config.weight_keys_per_token < 0) config.weight_keys_per_token = WeightKeysPerToken(model);
  return config;
}

}  // namespace

absl::Status EngineConfig::Validate() const {
  if (scheduler.prefill_chunk < 1) return absl::InvalidArgumentError("prefill chunk must be >= 1");
  if (scheduler.step_token_budget < 1) return absl::InvalidArgumentError("step token budget must be >= 1");
  if (!(scheduler.prefill_share > 0) || scheduler.prefill_share > 1e6) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prefill share must be in (0, 1e6], got %g", scheduler.prefill_share));
  }
  if (max_sessions < 1) return absl::InvalidArgumentError("max sessions must be >= 1");
  if (max_window < 1) return absl::InvalidArgumentError("max window must be >= 1");
  if (max_prompt_bytes < 1) return absl::InvalidArgumentError("max prompt bytes must be >= 1");
  if (max_new_tokens < 1) return absl::InvalidArgumentError("max new tokens must be >= 1");
  if (default_max_new_tokens < 1 || default_max_new_tokens > max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat("default max new tokens must be in [1, %d], got %d",
                                                      max_new_tokens, default_max_new_tokens));
  }
  if (absl::Status servable = CheckServable(default_cache.policy); !servable.ok()) return servable;
  if (default_cache.policy != CachePolicy::kDense && default_cache.window > max_window) {
    return absl::InvalidArgumentError(absl::StrFormat("default window %d exceeds max window %d",
                                                      default_cache.window, max_window));
  }
  if (!(session_ttl_seconds >= 0)) return absl::InvalidArgumentError("session TTL must be >= 0");
  if (!(stalled_stream_seconds > 0)) return absl::InvalidArgumentError("the stalled-stream timeout must be > 0");
  if (max_sessions_per_client < 0) return absl::InvalidArgumentError("max sessions per client must be >= 0");
  if (outbox_capacity < 1) return absl::InvalidArgumentError("outbox capacity must be >= 1");
  if (kv_budget_bytes < 0) return absl::InvalidArgumentError("the KV budget must be >= 0 bytes");
  if (max_stop_strings < 0 || max_stop_bytes < 0) return absl::InvalidArgumentError("stop string caps must be >= 0");
  return default_sampling.Validate();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(Backend* backend, const Tokenizer* tokenizer,
                                                       EngineConfig config) {
  RETURN_IF_ERROR(config.Validate());
  if (tokenizer->size() > backend->config().vocab_size) {
    return absl::InvalidArgumentError("the tokenizer has more tokens than the model");
  }
  // The default cache must make a valid geometry, or every open would fail.
  RETURN_IF_ERROR(GeometryFor(config.default_cache, config.scheduler.prefill_chunk,
                              backend->config().max_seq_len).status());
  return std::unique_ptr<Engine>(new Engine(backend, tokenizer, std::move(config)));
}

Engine::Engine(Backend* backend, const Tokenizer* tokenizer, EngineConfig config)
    : backend_(backend),
      tokenizer_(tokenizer),
      config_(std::move(config)),
      model_name_(!config_.model_name.empty()       ? config_.model_name
                  : !backend->config().name.empty() ? backend->config().name
                                                    : "model"),
      vocab_size_(backend->config().vocab_size),
      context_(backend->config().max_seq_len),
      scheduler_(ForModel(config_.scheduler, backend->config())),
      keep_hidden_(backend->SupportsCandidates()),
      dim_(backend->config().dim),
      revisions_(std::random_device{}()),
      fingerprint_(absl::StrCat(config_.model_fingerprint, "|", backend->KvLayout())),
      kv_shape_(backend->ExportShape()),
      mailbox_(std::make_shared<Mailbox>()),
      last_sweep_(Clock::now()) {
  mailbox_->engine = this;
  for (ChatTemplateKind kind : kAllChatTemplateKinds) {
    templates_.push_back(std::make_unique<ChatTemplate>(kind, *tokenizer_));
  }
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mailbox_->mu);
    mailbox_->engine = nullptr;  // store answers from now on are dropped
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

std::shared_ptr<Outbox> Engine::NewOutbox() {
  return std::make_shared<Outbox>(config_.outbox_capacity, [this] { Wake(); });
}

void Engine::Post(std::function<void()> command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back(std::move(command));
  }
  cv_.notify_one();
}

void Engine::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_one();
}

void Engine::Open(std::shared_ptr<Outbox> outbox, OpenRequest request) {
  Post([this, outbox = std::move(outbox), request = std::move(request)] { DoOpen(outbox, request); });
}

void Engine::StartTurn(std::shared_ptr<Outbox> outbox, TurnRequest request) {
  Post([this, outbox = std::move(outbox), request = std::move(request)] { DoTurn(outbox, request); });
}

void Engine::Cancel(std::shared_ptr<Outbox> outbox) {
  Post([this, outbox = std::move(outbox)] {
    if (DeferWhileLoading(outbox.get(), [this, outbox] { Cancel(outbox); })) return;
    Session* s = Attached(outbox.get());
    if (s != nullptr && s->phase != Phase::kIdle) EndTurn(*s, FinishReason::kCancelled, "", /*emit=*/true);
  });
}

void Engine::HalfClose(std::shared_ptr<Outbox> outbox) {
  Post([this, outbox = std::move(outbox)] { DoHalfClose(outbox); });
}

void Engine::EndStream(std::shared_ptr<Outbox> outbox, absl::Status status) {
  Post([this, outbox = std::move(outbox), status = std::move(status)] { DoEndStream(outbox, status); });
}

void Engine::Detach(std::shared_ptr<Outbox> outbox) {
  Post([this, outbox = std::move(outbox)] { DoDetach(outbox.get()); });
}

static absl::Status NotYours() {
  return absl::PermissionDeniedError("this session belongs to another API key; it is left as it was");
}

bool Engine::OwnedByOther(const std::string& owner, const std::string& client) {
  return !client.empty() && owner.starts_with("key#") && owner != client;
}

void Engine::GetSession(std::string id, std::string client,
                        std::function<void(absl::StatusOr<SessionSnapshot>)> done) {
  Post([this, id = std::move(id), client = std::move(client), done = std::move(done)] {
    if (absl::Status shape = CheckSessionIdShape(id); !shape.ok()) {
      done(shape);
      return;
    }
    auto it = sessions_.find(id);
    if (it == sessions_.end() && config_.store != nullptr) {
      WithStored(id, [this, id, client, done](absl::StatusOr<SessionPersistence::Loaded> loaded) {
        if (!loaded.ok()) return done(loaded.status());
        if (loaded->kind != SessionPersistence::Loaded::Kind::kFound) return done(NoSuchSession(id, config_.store->ttl_seconds()));
        const SessionState& st = loaded->state;
        if (OwnedByOther(st.client, client)) return done(NotYours());
        SessionSnapshot snap;
        snap.session_id = st.id;
        snap.cache = st.cache;
        snap.length = st.dropped + st.consumed + static_cast<int64_t>(st.carry.size());
        snap.cache_tokens = st.geometry.VisibleTokens(st.consumed);
        snap.evicted_tokens = st.dropped + st.geometry.EvictedTokens(st.consumed);
        snap.turns = st.turns;
        snap.idle_seconds = std::max(0.0, (UnixMillis() - st.saved_unix_ms) / 1000.0);
        snap.chat_template = st.chat_template;
        done(std::move(snap));
      });
      return;
    }
    if (it == sessions_.end()) {
      done(NoSuchSession(id, config_.session_ttl_seconds));
      return;
    }
    if (OwnedByOther(*it->second, client)) {
      done(NotYours());
      return;
    }
    const Session& s = *it->second;
    SessionSnapshot snap;
    snap.session_id = s.id;
    snap.cache = s.cache;
    snap.length = s.length();
    snap.cache_tokens = s.cache_tokens();
    snap.evicted_tokens = s.evicted_tokens();
    snap.turns = s.turns;
    snap.attached = s.outbox != nullptr;
    snap.generating = !s.idle();
    if (!snap.attached) snap.idle_seconds = std::chrono::duration<double>(Clock::now() - s.detached_at).count();
    snap.chat_template = ChatTemplateName(s.chat_template->kind());
    done(std::move(snap));
  });
}

void Engine::DeleteSession(std::string id, std::string client, std::function<void(absl::Status)> done) {
  Post([this, id = std::move(id), client = std::move(client), done = std::move(done)] {
    if (absl::Status shape = CheckSessionIdShape(id); !shape.ok()) {
      done(shape);
      return;
    }
    auto it = sessions_.find(id);
    SessionPersistence* store = config_.store;
    // Removes the stored copy too, then answers.
    auto remove_stored = [this, store, id, done] {
      store->Remove(id, [post = Poster(), done](absl::StatusOr<bool> removed) {
        post([done, removed] { done(removed.status()); });
      });
    };
    if (it == sessions_.end() && store != nullptr) {
      WithStored(id, [this, id, client, done, remove_stored](absl::StatusOr<SessionPersistence::Loaded> loaded) {
        if (!loaded.ok()) return done(loaded.status());
        if (loaded->kind != SessionPersistence::Loaded::Kind::kFound) {
          return done(NoSessionToDelete(id));
        }
        if (OwnedByOther(loaded->state.client, client)) return done(NotYours());
        if (sessions_.contains(id)) return done(absl::AbortedError("the session was resumed meanwhile; delete it again"));
        remove_stored();
      });
      return;
    }
    if (it == sessions_.end()) {
      done(NoSessionToDelete(id));
      return;
    }
    if (OwnedByOther(*it->second, client)) {
      done(NotYours());
      return;
    }
    Session& s = *it->second;
    if (s.outbox != nullptr) {
      EndStreamOf(s, absl::AbortedError(
          "this session was deleted by a DeleteSession call; open a new session to continue"));
    }
    const bool stored = store != nullptr && !s.ephemeral;
    DestroySession(id);
    if (stored) return remove_stored();
    done(absl::OkStatus());
  });
}

void Engine::BeginDrain() {
  Post([this] { draining_ = true; });
}

void Engine::EndAllStreams(absl::Status status) {
  Post([this, status = std::move(status)] { EndAll(status); });
}

EngineStats Engine::stats() const {
  EngineStats s{session_count_.load(), running_turns_.load(), steps_.load(),       kv_bytes_.load(),
                attached_count_.load(), queued_turns_.load(),  evicted_tokens_.load()};
  s.restored_exact = restored_exact_.load();
  s.restored_replayed = restored_replayed_.load();
  s.unloaded = unloaded_.load();
  s.store_errors = store_errors_.load();
  return s;
}

void Engine::Loop() {
  std::deque<std::function<void()>> commands;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool busy = !active_.empty() &&
                        std::any_of(active_.begin(), active_.end(), [](Session* s) { return Scheduler::Runnable(*s); });
      auto ready = [&] { return stop_ || wake_ || !commands_.empty(); };
      if (!busy) {
        // Sleep until a command or a wake; sessions need a timed wake for
        // the idle TTL and the stalled-stream check.
        if (!sessions_.empty()) {
          cv_.wait_for(lock, kSweepInterval, ready);
        } else {
          cv_.wait(lock, ready);
        }
      }
      wake_ = false;
      stopping_ = stop_;
      commands.swap(commands_);
      if (stop_ && commands.empty()) break;
    }
    for (auto& command : commands) command();
    commands.clear();
    const Clock::time_point now = Clock::now();
    if (now - last_sweep_ >= kSweepInterval) {
      ExpireIdle(now);
      EndStalled(now);
      last_sweep_ = now;
    }
    if (Step()) steps_.fetch_add(1, std::memory_order_relaxed);
    // The gauges other threads read, after every command and step (a turn
    // cancelled while it prefills leaves no step to update them).
    attached_count_.store(static_cast<int64_t>(attached_.size()), std::memory_order_relaxed);
    queued_turns_.store(std::count_if(active_.begin(), active_.end(),
                                      [](const Session* s) { return s->phase == Phase::kPrefill; }),
                        std::memory_order_relaxed);
  }
  EndAll(absl::UnavailableError("the server stopped, and its sessions ended with it; open a new session once it is back"));
  while (!sessions_.empty()) DestroySession(sessions_.begin()->first);
}

Session* Engine::Attached(Outbox* outbox) {
  auto it = attached_.find(outbox);
  return it == attached_.end() ? nullptr : it->second;
}

void Engine::DoOpen(const std::shared_ptr<Outbox>& outbox, const OpenRequest& request, bool store_checked) {
  if (draining_ || stopping_) {
    outbox->Push(EndEvent{Unavailable("new streams")});
    return;
  }
  if (Session* open = Attached(outbox.get()); open != nullptr) {
    EndStreamOf(*open, absl::FailedPreconditionError("open was already sent on this stream; send turns"));
    return;
  }
  if (loading_by_outbox_.contains(outbox.get())) {
    outbox->Push(EndEvent{absl::FailedPreconditionError("open was already sent on this stream; send turns")});
    return;
  }
  Session* s = nullptr;
  bool resumed = false;
  if (!request.session_id.empty()) {
    if (absl::Status shape = CheckSessionIdShape(request.session_id); !shape.ok()) {
      outbox->Push(EndEvent{shape});
      return;
    }
    auto it = sessions_.find(request.session_id);
    if (it != sessions_.end() && OwnedByOther(*it->second, request.client)) {
      outbox->Push(EndEvent{NotYours()});
      return;
    }
    if (it == sessions_.end() && config_.store != nullptr) return StartLoad(outbox, request, 0);
    if (it == sessions_.end()) {
      outbox->Push(EndEvent{absl::NotFoundError(absl::StrFormat(
          "no session '%s': it never existed, was deleted, or expired after %g s detached; "
          "open with an empty session_id to start a new one",
          request.session_id, config_.session_ttl_seconds))});
      return;
    }
    s = it->second.get();
    resumed = true;
    // Another server sharing the store may have gone on with it: check that
    // this copy is the latest (a copy with unsaved changes is the latest).
    if (s->outbox == nullptr && config_.store != nullptr && config_.store->shared() && !store_checked &&
        s->saves_in_flight == 0 && s->revision != 0 && s->saved_revision == s->revision) {
      return StartLoad(outbox, request, s->revision);
    }
    if (s->outbox != nullptr) {
      if (!config_.allow_takeover) {
        outbox->Push(EndEvent{absl::FailedPreconditionError(
            "that session is attached to another stream; resume it once that stream ends (a dead connection is "
            "noticed within the keepalive timeout), or run the server with --allow-takeover")});
        return;
      }
      // The newest stream wins (a client reconnecting before the server saw
      // its old stream die); the old one is told why it ends.
      EndStreamOf(*s, absl::AbortedError("this session was resumed on another stream"));
    }
  } else {
    absl::StatusOr<Session*> created = AdmitSession(request);
    if (!created.ok()) {
      outbox->Push(EndEvent{created.status()});
      return;
    }
    s = *created;
  }
  AttachSession(outbox, *s, resumed, RestoreKind::kNone, "");
}

void Engine::AttachSession(const std::shared_ptr<Outbox>& outbox, Session& session, bool resumed,
                           RestoreKind restored, std::string restore_note) {
  Session* s = &session;
  s->outbox = outbox;
  s->stalled = false;
  attached_[outbox.get()] = s;
  OpenedEvent opened{s->id, s->cache, model_name_, s->length(), resumed, LastTurn(), restored, std::move(restore_note)};
  if (resumed) {
    opened.last_turn = s->last_turn;
    LastTurn& last = opened.last_turn;
    if (last.text.size() > kLastTurnTextBytes) {
      last.text = std::string(Utf8Tail(last.text, kLastTurnTextBytes));
      last.truncated = true;
    }
  }
  outbox->Push(std::move(opened));
}

absl::StatusOr<Session*> Engine::AdmitSession(const OpenRequest& request) {
  RETURN_IF_ERROR(MakeRoomFor(request.client));
  ASSIGN_OR_RETURN(std::unique_ptr<Session> created, NewSession(request));
  Session* s = created.get();
  Register(std::move(created));
  if (config_.store != nullptr && !s->ephemeral) SaveSession(*s);
  return s;
}

absl::Status Engine::MakeRoomFor(const std::string& client) {
  ExpireIdle(Clock::now());
  const int64_t quota = config_.max_sessions_per_client;
  if (quota > 0) {
    auto held = client_sessions_.find(client);
    if (held != client_sessions_.end() && held->second >= quota && !ReclaimDetached(&client)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "this client holds its limit of %d sessions, all attached to streams; end or delete one first", quota));
    }
  }
  if (static_cast<int64_t>(sessions_.size()) >= config_.max_sessions && !ReclaimDetached(nullptr)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the server holds its limit of %d sessions, all attached to streams; retry when one ends, or delete "
        "sessions you no longer need (DeleteSession)",
        config_.max_sessions));
  }
  return absl::OkStatus();
}

void Engine::Register(std::unique_ptr<Session> s) {
  ++client_sessions_[s->client];
  const std::string id = s->id;
  sessions_[id] = std::move(s);
  session_count_.store(static_cast<int64_t>(sessions_.size()));
}

absl::Status Engine::CreateSessionCache(Session& s) {
  const int64_t cache_bytes = backend_->CacheBytes(s.geometry);
  RETURN_IF_ERROR(MakeKvRoom(cache_bytes));
  absl::StatusOr<CacheId> id = backend_->CreateCache(s.geometry);
  if (!id.ok()) {
    if (absl::IsResourceExhausted(id.status())) return id.status();
    return absl::InternalError(absl::StrFormat("could not create the session's cache: %s", id.status().message()));
  }
  s.cache_id = *id;
  s.slot_tokens.assign(static_cast<size_t>(s.geometry.Slots()), -1);
  if (keep_hidden_) s.hidden = HiddenRing(s.geometry, dim_);
  kv_bytes_.fetch_add(cache_bytes, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Session>> Engine::NewSession(const OpenRequest& request) {
  auto s = std::make_unique<Session>();
  ASSIGN_OR_RETURN(s->cache, ResolveCacheConfig(request.cache, config_.default_cache, config_.max_window, context_));
  if (static_cast<int64_t>(request.system_prompt.size()) > config_.max_prompt_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the system prompt has %d bytes, over this server's limit of %d", request.system_prompt.size(),
        config_.max_prompt_bytes));
  }
  ChatTemplateKind kind = config_.default_template;
  if (!request.chat_template.empty()) {
    ASSIGN_OR_RETURN(kind, ParseChatTemplate(request.chat_template));
  }
  s->chat_template = templates_[static_cast<size_t>(kind)].get();
  absl::StatusOr<CacheGeometry> geometry = GeometryFor(s->cache, config_.scheduler.prefill_chunk, context_);
  if (!geometry.ok()) return absl::InvalidArgumentError(geometry.status().message());
  s->geometry = *geometry;
  RETURN_IF_ERROR(CreateSessionCache(*s));
  s->id = NewSessionId();
  s->system_prompt = request.system_prompt;
  s->client = request.client;
  s->ephemeral = request.ephemeral;
  s->preamble = s->chat_template->Preamble(s->system_prompt);
  return s;
}

void Engine::DoTurn(const std::shared_ptr<Outbox>& outbox, const TurnRequest& request) {
  if (DeferWhileLoading(outbox.get(), [this, outbox, request] { DoTurn(outbox, request); })) return;
  Session* s = Attached(outbox.get());
  if (draining_ || stopping_) {
    outbox->Push(EndEvent{Unavailable("new turns")});
    return;
  }
  if (s == nullptr) {
    outbox->Push(EndEvent{absl::FailedPreconditionError("a turn arrived before open; send open first")});
    return;
  }
  if (!s->idle()) {
    EndStreamOf(*s, absl::FailedPreconditionError(absl::StrFormat(
        "turn %d is already running on this stream; wait for its done message or send cancel", s->turns)));
    return;
  }
  if (request.expect_conversation &&
      !(s->conversation_known && s->conversation == *request.expect_conversation)) {
    EndStreamOf(*s, absl::FailedPreconditionError(
        "the earlier messages are not this session's conversation (or the server no longer knows it, after a "
        "cancelled turn); send only the new user message, or start a new session"));
    return;
  }
  ++s->turns;
  if (absl::Status status = PrepareTurn(*s, request); !status.ok()) {
    DoneEvent done{FinishReason::kError, Usage(*s), s->turns, std::string(status.message())};
    outbox->Push(std::move(done));
    return;
  }
  s->phase = Phase::kPrefill;
  active_.push_back(s);
  running_turns_.fetch_add(1);
}

absl::Status Engine::PrepareTurn(Session& s, const TurnRequest& request) {
  ASSIGN_OR_RETURN(TurnOptions options, ResolveTurn(request, config_.turn_defaults()));
  if (options.sampling.contrastive() && !keep_hidden_) {
    return absl::UnimplementedError(absl::StrFormat(
        "penalty_alpha (contrastive search) does not run on the %s backend yet; this server cannot take it",
        backend_->name()));
  }
  const bool first = !s.started;
  std::vector<int32_t> prompt = first ? s.preamble : std::vector<int32_t>{};
  const ChatTemplate& tmpl = *s.chat_template;
  int64_t history_bytes = 0;
  for (const HistoryMessage& m : request.history) history_bytes += static_cast<int64_t>(m.text.size());
  if (history_bytes + static_cast<int64_t>(request.text.size()) > config_.max_prompt_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the turn's messages hold %d bytes; the limit is %d", history_bytes + request.text.size(),
        config_.max_prompt_bytes));
  }
  bool first_user = first;
  for (const HistoryMessage& m : request.history) {
    const std::vector<int32_t> part =
        m.assistant ? tmpl.RawText(m.text) : tmpl.UserTurn(m.text, first_user, s.system_prompt);
    if (!m.assistant) first_user = false;
    prompt.insert(prompt.end(), part.begin(), part.end());
  }
  std::vector<int32_t> body = request.raw ? tmpl.RawText(request.text)
                                          : tmpl.UserTurn(request.text, first_user, s.system_prompt);
  prompt.insert(prompt.end(), body.begin(), body.end());
  if (prompt.empty() && s.carry.empty()) {
    return absl::InvalidArgumentError("the turn's text encodes to no tokens; send some text");
  }
  std::vector<int32_t> feed = s.carry;
  feed.insert(feed.end(), prompt.begin(), prompt.end());
  RETURN_IF_ERROR(CheckCacheCapacity(s.cache, s.consumed, static_cast<int64_t>(feed.size()), context_));

  auto turn = std::make_unique<TurnState>(std::move(options), *tokenizer_, tmpl.end_tokens(), vocab_size_);
  turn->number = s.turns;
  turn->feed = std::move(feed);
  turn->prompt_tokens = static_cast<int64_t>(prompt.size());
  turn->start = Clock::now();
  for (int32_t id : prompt) PushRecent(&s.recent, id);
  for (const HistoryMessage& m : request.history) s.conversation.Add(m.assistant, m.text);
  s.conversation.Add(false, request.text);
  s.conversation.StartAssistant();
  s.turn = std::move(turn);
  s.last_turn = LastTurn();
  s.last_turn.turn = s.turns;
  s.carry.clear();
  s.preamble.clear();
  s.started = true;
  return absl::OkStatus();
}

void Engine::DoHalfClose(const std::shared_ptr<Outbox>& outbox) {
  if (DeferWhileLoading(outbox.get(), [this, outbox] { DoHalfClose(outbox); })) return;
  Session* s = Attached(outbox.get());
  if (s == nullptr) {
    // Never opened, or already ended (then this OK comes too late to count).
    outbox->Push(EndEvent{absl::OkStatus()});
  } else if (s->idle()) {
    EndStreamOf(*s, absl::OkStatus());
  } else {
    s->closing = true;  // EndTurn ends the stream after the turn's done
  }
}

void Engine::DoEndStream(const std::shared_ptr<Outbox>& outbox, const absl::Status& status) {
  DropPendingOpen(outbox.get());
  if (Session* s = Attached(outbox.get()); s != nullptr) {
    EndStreamOf(*s, status);
  } else {
    outbox->Push(EndEvent{status});
  }
}

void Engine::EndStreamOf(Session& s, const absl::Status& status) {
  std::shared_ptr<Outbox> outbox = s.outbox;
  DetachSession(s);
  outbox->Push(EndEvent{status});
}

void Engine::DropPendingOpen(const Outbox* outbox) {
  if (auto waiting = loading_by_outbox_.find(outbox); waiting != loading_by_outbox_.end()) {
    std::vector<PendingOpen>& opens = loading_[waiting->second];
    std::erase_if(opens, [outbox](const PendingOpen& p) { return p.outbox.get() == outbox; });
    loading_by_outbox_.erase(waiting);
  }
}

void Engine::DoDetach(Outbox* outbox) {
  DropPendingOpen(outbox);
  Session* s = Attached(outbox);
  if (s != nullptr) DetachSession(*s);
}

void Engine::DetachSession(Session& s) {
  if (s.phase != Phase::kIdle) EndTurn(s, FinishReason::kCancelled, "", /*emit=*/false);
  attached_.erase(s.outbox.get());
  s.outbox = nullptr;
  s.done_outbox = nullptr;  // a done still waiting for its save has no one to go to
  s.closing = false;
  s.detached_at = Clock::now();
}

void Engine::DestroySession(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  if (s.outbox != nullptr) DetachSession(s);
  if (s.phase != Phase::kIdle) EndTurn(s, FinishReason::kCancelled, "", /*emit=*/false);
  backend_->DestroyCache(s.cache_id);
  kv_bytes_.fetch_sub(backend_->CacheBytes(s.geometry), std::memory_order_relaxed);
  if (auto held = client_sessions_.find(s.client); held != client_sessions_.end() && --held->second <= 0) {
    client_sessions_.erase(held);
  }
  sessions_.erase(it);
  session_count_.store(static_cast<int64_t>(sessions_.size()));
}

void Engine::ExpireIdle(Clock::time_point now) {
  const auto ttl = std::chrono::duration<double>(config_.session_ttl_seconds);
  std::vector<std::string> expired;
  for (const auto& [id, s] : sessions_) {
    if (s->outbox == nullptr && now - s->detached_at >= ttl) expired.push_back(id);
  }
  for (const std::string& id : expired) DestroySession(id);
  if (config_.store != nullptr) unloaded_.fetch_add(static_cast<int64_t>(expired.size()), std::memory_order_relaxed);
}

void Engine::EndStalled(Clock::time_point now) {
  const auto limit = std::chrono::duration<double>(config_.stalled_stream_seconds);
  std::vector<Session*> stalled;
  for (const auto& [outbox, s] : attached_) {
    if (!outbox->Full()) {
      s->stalled = false;
    } else if (!s->stalled) {
      s->stalled = true;
      s->stalled_since = now;
    } else if (now - s->stalled_since >= limit) {
      stalled.push_back(s);
    }
  }
  for (Session* s : stalled) {
    EndStreamOf(*s, absl::DeadlineExceededError(absl::StrFormat(
        "the client read nothing for %g s, so this stream ends; its session is kept for %g s, resume it to go on",
        config_.stalled_stream_seconds, config_.session_ttl_seconds)));
  }
}

bool Engine::ReclaimDetached(const std::string* client) {
  const Session* oldest = nullptr;
  for (const auto& [id, s] : sessions_) {
    if (s->outbox != nullptr || (client != nullptr && s->client != *client)) continue;
    if (oldest == nullptr || s->detached_at < oldest->detached_at) oldest = s.get();
  }
  if (oldest == nullptr) return false;
  // With a store this only unloads it: its last save is resumable there (a
  // save still in flight carries its own copy).
  DestroySession(oldest->id);
  if (config_.store != nullptr) unloaded_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

absl::Status Engine::MakeKvRoom(int64_t cache_bytes) {
  const int64_t budget = config_.kv_budget_bytes;
  if (budget == 0) return absl::OkStatus();
  auto free_bytes = [&] { return budget - kv_bytes_.load(std::memory_order_relaxed); };
  int64_t reclaimable = 0;
  for (const auto& [id, s] : sessions_) {
    if (s->outbox == nullptr) reclaimable += backend_->CacheBytes(s->geometry);
  }
  if (cache_bytes > free_bytes() + reclaimable) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "this session's KV cache needs %d bytes but only %d of the server's %d-byte KV budget are free; ask for a "
        "smaller window, or retry when sessions end",
        cache_bytes, std::max<int64_t>(free_bytes(), 0), budget));
  }
  while (cache_bytes > free_bytes() && ReclaimDetached(nullptr)) {
  }
  return absl::OkStatus();
}

void Engine::EndAll(const absl::Status& status) {
  // Running turns end with the stream: the status is their last word (a
  // done message pushed first could race the reactor's normal finish).
  std::vector<Session*> attached;
  for (const auto& [outbox, s] : attached_) attached.push_back(s);
  for (Session* s : attached) EndStreamOf(*s, status);
}

}  // namespace sinkserve
