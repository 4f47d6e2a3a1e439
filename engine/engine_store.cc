// The engine and its session store: saving a session after every turn, the
// done that waits for that save, restoring a session the server does not
// hold, and checking a held copy against a store other servers share.
// Every store call returns at once; its answer is posted back to the engine
// thread (engine/session_state.h).
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/engine.h"
#include "engine/status_macros.h"

namespace sinkserve {

int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<int32_t> VisibleTokens(const SessionState& state) {
  const CacheGeometry& g = state.geometry;
  std::vector<int32_t> tokens;
  const int64_t sinks = std::min<int64_t>(state.consumed, g.sinks);
  const int64_t window_begin = std::max<int64_t>(g.sinks, state.consumed - g.window);
  for (int64_t t = 0; t < sinks; ++t) tokens.push_back(state.slot_tokens[static_cast<size_t>(g.Slot(t))]);
  for (int64_t t = window_begin; t < state.consumed; ++t) {
    tokens.push_back(state.slot_tokens[static_cast<size_t>(g.Slot(t))]);
  }
  return tokens;
}

namespace {

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

std::function<void(std::function<void()>)> Engine::Poster() {
  return [mailbox = mailbox_](std::function<void()> command) {
    std::lock_guard<std::mutex> lock(mailbox->mu);
    if (mailbox->engine != nullptr) mailbox->engine->Post(std::move(command));
  };
}

std::shared_ptr<SessionState> Engine::Snapshot(Session& s, const std::vector<SlotRange>* delta,
                                               uint64_t base_revision) {
  auto state = std::make_shared<SessionState>();
  state->id = s.id;
  state->client = s.client;
  state->cache = s.cache;
  state->geometry = s.geometry;
  state->chat_template = ChatTemplateName(s.chat_template->kind());
  state->system_prompt = s.system_prompt;
  state->preamble = s.preamble;
  state->started = s.started;
  state->turns = s.turns;
  state->consumed = s.consumed;
  state->dropped = s.dropped;
  state->carry = s.carry;
  state->recent = s.recent;
  state->last_turn = s.last_turn;
  state->conversation_hash = s.conversation.value();
  state->conversation_messages = s.conversation.messages();
  state->conversation_known = s.conversation_known;
  state->fingerprint = fingerprint_;
  state->kv_rows = kv_shape_.rows;
  state->kv_slot_bytes = kv_shape_.slot_bytes;
  if (delta != nullptr) {
    state->base_revision = base_revision;
    state->delta_slots = *delta;
    for (const SlotRange& r : *delta) {
      state->slot_tokens.insert(state->slot_tokens.end(), s.slot_tokens.begin() + r.first,
                                s.slot_tokens.begin() + r.first + r.count);
      absl::StatusOr<std::string> kv = backend_->ExportCacheSlots(s.cache_id, r.first, r.count);
      if (!kv.ok()) return Snapshot(s);  // saved whole instead
      if (state->kv.empty()) {
        state->kv = *std::move(kv);  // the usual single range: no copy
      } else {
        state->kv += *kv;
      }
    }
  } else {
    const size_t used = static_cast<size_t>(std::min<int64_t>(s.consumed, s.geometry.Slots()));
    state->slot_tokens.assign(s.slot_tokens.begin(), s.slot_tokens.begin() + used);
    absl::StatusOr<std::string> kv = backend_->ExportCache(s.cache_id);
    if (kv.ok()) {
      state->kv = *std::move(kv);
    } else {
      // Saved without its cache: a restore replays its tokens instead.
      state->fingerprint = absl::StrFormat("(cache not exported: %s)", kv.status().message());
    }
  }
  do {
    state->revision = revisions_();
  } while (state->revision == 0 || state->revision == s.revision || state->revision == s.stage_tip);
  state->saved_unix_ms = UnixMillis();
  return state;
}

namespace {

// Bounds on a session's deltas since its full save: their K/V bytes, in
// caches, and their count. Past either, the next save after a turn's done
// is a full one (MaybeCompact), so a load reads at most about this many
// caches and deltas, and a save writes on average about 1 + 1/kChainCaches
// times the K/V its turns made.
constexpr int64_t kChainCaches = 4;
constexpr int kMaxChain = 128;
// Past this many, even a turn's end saves whole: a load refuses a session
// with more deltas than store::kMaxDeltas (256), and a long turn's pieces
// may run past kMaxChain before its end.
constexpr int kHardMaxChain = 192;
// A running turn's K/V is saved as a piece once EngineConfig's
// store_piece_bytes, and at least this many tokens, are unsaved.
constexpr int64_t kMinStageTokens = 16;

}  // namespace

std::optional<std::vector<SlotRange>> Engine::DeltaSlots(const Session& s) const {
  const CacheGeometry& g = s.geometry;
  const int64_t from = s.chain_consumed, to = s.consumed;
  if (from < 0 || s.revision == 0 || to < from || to - from >= g.ring || s.chain_deltas >= kHardMaxChain) {
    return std::nullopt;
  }
  std::vector<SlotRange> ranges;
  // Tokens [from, to) went to the sinks they reached, then to the ring,
  // which they cross at most once (fewer than `ring` of them).
  if (from < std::min<int64_t>(to, g.sinks)) {
    ranges.push_back({static_cast<int32_t>(from), static_cast<int32_t>(std::min<int64_t>(to, g.sinks) - from)});
  }
  const int64_t ring_from = std::max<int64_t>(from, g.sinks);
  if (ring_from < to) {
    const int32_t start = g.Slot(ring_from);
    const int64_t n = to - ring_from;
    const int32_t before_end = static_cast<int32_t>(std::min<int64_t>(n, g.Slots() - start));
    ranges.push_back({start, before_end});
    if (n > before_end) ranges.push_back({g.sinks, static_cast<int32_t>(n - before_end)});
  }
  return ranges;
}

bool Engine::ChainFull(const Session& s) const {
  const int64_t full_bytes = KvBytes(std::min<int64_t>(s.consumed, s.geometry.Slots()));
  return s.chain_deltas >= kMaxChain || s.chain_bytes > kChainCaches * full_bytes;
}

void Engine::Store(Session& s, std::shared_ptr<SessionState> state) {
  const bool is_delta = state->base_revision != 0;
  const uint64_t revision = state->revision;
  if (is_delta) {
    s.chain_bytes += static_cast<int64_t>(state->kv.size());
    ++s.chain_deltas;
  } else {
    s.chain_bytes = 0;
    s.chain_deltas = 0;
  }
  // A full save without its cache cannot carry deltas.
  s.chain_consumed = is_delta || state->fingerprint == fingerprint_ ? s.consumed : -1;
  if (state->staging.piece) {
    s.stage_tip = revision;
    ++s.stage_pieces;
  } else {
    s.revision = revision;
    s.stage = 0;
    s.stage_pieces = 0;
    s.stage_tip = 0;
  }
  ++s.saves_in_flight;
  config_.store->Save(std::move(state), [this, post = Poster(), id = s.id, revision, is_delta,
                                         asked = Clock::now()](absl::Status status) {
    // `this` is alive whenever `post` runs the command (the engine cuts the
    // mailbox off before it stops).
    post([this, id, revision, is_delta, asked, status] { OnSaved(id, revision, is_delta, status, asked); });
  });
}

void Engine::SaveSession(Session& s) {
  const std::optional<std::vector<SlotRange>> delta = DeltaSlots(s);
  std::shared_ptr<SessionState> state = Snapshot(s, delta ? &*delta : nullptr, ChainTip(s));
  state->staging.stage = s.stage;
  if (state->base_revision != 0) {  // a delta: on the stored revision, with the turn's pieces
    state->staging.pieces = s.stage_pieces;
    state->staging.stored_revision = s.revision;
  }
  Store(s, std::move(state));
}

void Engine::MaybeStage(Session& s) {
  if (config_.store == nullptr || config_.store_piece_bytes <= 0 || s.ephemeral || s.revision == 0 ||
      s.chain_consumed < 0 || s.turn == nullptr) {
    return;
  }
  const int64_t unsaved = s.consumed - s.chain_consumed;
  if (unsaved < kMinStageTokens || KvBytes(unsaved) < config_.store_piece_bytes || ChainFull(s)) return;
  const std::optional<std::vector<SlotRange>> delta = DeltaSlots(s);
  if (!delta) return;
  std::shared_ptr<SessionState> state = Snapshot(s, &*delta, ChainTip(s));
  if (state->base_revision == 0) {  // the cache did not export: the turn's end saves it whole
    s.chain_consumed = -1;
    return;
  }
  while (s.stage == 0) s.stage = revisions_();
  state->staging.stage = s.stage;
  state->staging.piece = true;
  Store(s, std::move(state));
}

void Engine::MaybeCompact(Session& s) {
  if (config_.store == nullptr || s.ephemeral || s.revision == 0 || !ChainFull(s)) return;
  std::shared_ptr<SessionState> state = Snapshot(s);
  state->staging.stage = s.stage;
  Store(s, std::move(state));
}

void Engine::OnSaved(const std::string& id, uint64_t revision, bool delta, const absl::Status& status,
                     Clock::time_point asked) {
  if (config_.on_store) config_.on_store("save", SecondsSince(asked), status.ok());
  auto it = sessions_.find(id);
  Session* s = it == sessions_.end() ? nullptr : it->second.get();
  if (s != nullptr) --s->saves_in_flight;
  if (!status.ok() && delta && s != nullptr) {
    // The store no longer holds this delta's base (an earlier save failed,
    // or another server saved the session): save it whole, and let a done
    // waiting for this delta wait for that. A later save in flight fails
    // the same way and saves again itself.
    s->chain_consumed = -1;
    if (revision == s->revision) {
      SaveSession(*s);
      if (s->done_pending && s->done_revision == revision) s->done_revision = s->revision;
    }
    return;
  }
  if (!status.ok()) {
    // Logged at the 1st, 2nd, 4th, 8th... failure: a store that is down
    // must not flood the log with a line per turn.
    const int64_t failures = store_errors_.fetch_add(1, std::memory_order_relaxed) + 1;
    if ((failures & (failures - 1)) == 0) {
      std::fprintf(stderr, "session store: saving session %s failed (%lld store errors so far): %s\n", id.c_str(),
                   static_cast<long long>(failures), std::string(status.message()).c_str());
    }
    if (s != nullptr) s->chain_consumed = -1;
  }
  if (s == nullptr) return;  // deleted or unloaded meanwhile; the save carried its own copy
  if (status.ok() && revision == s->revision) s->saved_revision = revision;
  if (s->done_pending && s->done_revision == revision) DeliverDone(*s, status.ok());
}

void Engine::FinishTurnOutput(Session& s, DoneEvent done) {
  if (config_.store == nullptr || s.ephemeral || s.saves_in_flight == 0) {
    s.outbox->Push(std::move(done));
    if (s.closing) EndStreamOf(s, absl::OkStatus());
    return;
  }
  // Nothing acknowledged is lost: the done goes out once the store has the
  // session as of this turn (SaveSession ran just before).
  s.done_pending = true;
  s.done_revision = s.revision;
  s.pending_done = std::move(done);
  s.done_outbox = s.outbox;
}

void Engine::DeliverDone(Session& s, bool saved) {
  s.done_pending = false;
  DoneEvent done = std::move(s.pending_done);
  std::shared_ptr<Outbox> outbox = std::move(s.done_outbox);
  if (outbox == nullptr || s.outbox != outbox) return;  // that stream is gone
  done.saved = saved;
  outbox->Push(std::move(done));
  if (s.closing) EndStreamOf(s, absl::OkStatus());
}

void Engine::WithStored(const std::string& id,
                        std::function<void(absl::StatusOr<SessionPersistence::Loaded>)> then) {
  config_.store->Load(id, 0, [this, post = Poster(), then = std::move(then), asked = Clock::now()](
                                 absl::StatusOr<SessionPersistence::Loaded> loaded) mutable {
    post([this, then = std::move(then), loaded = std::move(loaded), asked]() mutable {
      if (config_.on_store) config_.on_store("load", SecondsSince(asked), loaded.ok());
      if (!loaded.ok()) store_errors_.fetch_add(1, std::memory_order_relaxed);
      then(std::move(loaded));
    });
  });
}

void Engine::StartLoad(const std::shared_ptr<Outbox>& outbox, const OpenRequest& request, uint64_t known_revision) {
  std::vector<PendingOpen>& waiting = loading_[request.session_id];
  waiting.push_back({outbox, request, {}});
  loading_by_outbox_[outbox.get()] = request.session_id;
  if (waiting.size() > 1) return;  // one load per id answers every stream waiting for it
  config_.store->Load(request.session_id, known_revision,
                      [this, post = Poster(), id = request.session_id, asked = Clock::now()](
                          absl::StatusOr<SessionPersistence::Loaded> loaded) mutable {
                        post([this, id, loaded = std::move(loaded), asked]() mutable {
                          OnLoaded(id, std::move(loaded), asked);
                        });
                      });
}

bool Engine::DeferWhileLoading(const Outbox* outbox, std::function<void()> command) {
  auto waiting = loading_by_outbox_.find(outbox);
  if (waiting == loading_by_outbox_.end()) return false;
  for (PendingOpen& p : loading_[waiting->second]) {
    if (p.outbox.get() == outbox) p.after.push_back(std::move(command));
  }
  return true;
}

void Engine::Resolved(PendingOpen& p) {
  if (auto again = loading_by_outbox_.find(p.outbox.get()); again != loading_by_outbox_.end()) {
    for (PendingOpen& q : loading_[again->second]) {
      if (q.outbox == p.outbox) q.after.insert(q.after.end(), p.after.begin(), p.after.end());
    }
    return;
  }
  if (Attached(p.outbox.get()) == nullptr) return;  // refused: the stream has ended
  for (auto& command : p.after) command();
}

void Engine::OnLoaded(const std::string& id, absl::StatusOr<SessionPersistence::Loaded> loaded,
                      Clock::time_point asked) {
  if (config_.on_store) config_.on_store("load", SecondsSince(asked), loaded.ok());
  if (!loaded.ok()) store_errors_.fetch_add(1, std::memory_order_relaxed);
  std::vector<PendingOpen> waiting;
  if (auto it = loading_.find(id); it != loading_.end()) {
    waiting = std::move(it->second);
    loading_.erase(it);
  }
  for (const PendingOpen& p : waiting) loading_by_outbox_.erase(p.outbox.get());
  if (waiting.empty()) return;  // every stream that asked has gone
  using Kind = SessionPersistence::Loaded::Kind;
  auto held = sessions_.find(id);
  PendingOpen& first = waiting.front();
  if (draining_ || stopping_) {
    for (const PendingOpen& p : waiting) {
      p.outbox->Push(EndEvent{absl::UnavailableError(
          "the server is shutting down and accepts no new streams; the session is kept in the session store, "
          "resume it on another replica")});
    }
    return;
  }
  if (!loaded.ok()) {
    for (const PendingOpen& p : waiting) p.outbox->Push(EndEvent{loaded.status()});
    return;
  }
  if (loaded->kind == Kind::kNotFound) {
    // Deleted (or expired) in the store: a copy held here is stale too.
    if (held != sessions_.end() && held->second->outbox == nullptr) DestroySession(id);
    for (const PendingOpen& p : waiting) {
      p.outbox->Push(EndEvent{absl::NotFoundError(absl::StrFormat(
          "no session '%s': it never existed, was deleted, or expired after %g s in the session store; open with "
          "an empty session_id to start a new one",
          id, config_.store->ttl_seconds()))});
    }
    return;
  }
  auto reopen_all = [&](size_t from) {
    for (size_t i = from; i < waiting.size(); ++i) {
      DoOpen(waiting[i].outbox, waiting[i].request, /*store_checked=*/true);
      Resolved(waiting[i]);
    }
  };
  if (loaded->kind == Kind::kUnchanged) {
    // The copy held here is the latest (if it is still here, DoOpen attaches it).
    reopen_all(0);
    return;
  }
  // Found: newer than any copy held here, which another server went on from.
  if (held != sessions_.end()) {
    if (held->second->outbox != nullptr || held->second->saves_in_flight > 0) {
      // Attached or saving here meanwhile: this server's copy wins.
      reopen_all(0);
      return;
    }
    DestroySession(id);
  }
  absl::StatusOr<Restored> restored = RestoreSession(std::move(loaded->state), first.request);
  if (!restored.ok()) {
    first.outbox->Push(EndEvent{restored.status()});
  } else {
    (restored->kind == RestoreKind::kExact ? restored_exact_ : restored_replayed_)
        .fetch_add(1, std::memory_order_relaxed);
    AttachSession(first.outbox, *restored->session, /*resumed=*/true, restored->kind, std::move(restored->note));
  }
  Resolved(first);
  // The others meet the session as any second stream would.
  reopen_all(1);
}

namespace {

absl::Status Unreadable(const SessionState& state, absl::string_view why) {
  return absl::DataLossError(
      absl::StrFormat("the stored session '%s' cannot be restored: %s; delete it and open a new one", state.id, why));
}

}  // namespace

absl::StatusOr<Engine::Restored> Engine::RestoreSession(SessionState state, const OpenRequest& request) {
  if (state.id != request.session_id) return Unreadable(state, "it is stored under another id");
  if (OwnedByOther(state.client, request.client)) {
    return absl::PermissionDeniedError("this session belongs to another API key; it is left as it was");
  }
  // What a stored blob says is checked like any input: it may come from
  // another version, another model, or a store someone else can write.
  absl::StatusOr<ChatTemplateKind> kind = ParseChatTemplate(state.chat_template);
  if (!kind.ok()) return Unreadable(state, kind.status().message());
  if (absl::Status servable = CheckServable(state.cache.policy); !servable.ok()) {
    return Unreadable(state, servable.message());
  }
  if (state.cache.policy != CachePolicy::kDense && state.cache.window > config_.max_window) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the stored session '%s' has a window of %d tokens, over this server's --max-window %d", state.id,
        state.cache.window, config_.max_window));
  }
  absl::StatusOr<CacheGeometry> geometry = GeometryFor(state.cache, config_.scheduler.prefill_chunk, context_);
  if (!geometry.ok()) return Unreadable(state, geometry.status().message());
  const int64_t used = std::min<int64_t>(state.consumed, state.geometry.Slots());
  if (state.consumed < 0 || state.dropped < 0 || state.geometry.sinks != state.cache.sinks ||
      state.geometry.window != state.cache.window || state.geometry.ring < state.geometry.window ||
      static_cast<int64_t>(state.slot_tokens.size()) != used) {
    return Unreadable(state, "its counters and cache geometry disagree");
  }
  for (const std::vector<int32_t>* ids : {&state.slot_tokens, &state.carry, &state.recent, &state.preamble}) {
    for (int32_t id : *ids) {
      if (id < 0 || id >= vocab_size_) {
        return Unreadable(state, absl::StrFormat("it holds token %d, outside this model's vocabulary of %d", id,
                                                 vocab_size_));
      }
    }
  }
  RETURN_IF_ERROR(MakeRoomFor(state.client));

  auto s = std::make_unique<Session>();
  s->id = state.id;
  s->cache = state.cache;
  s->geometry = *geometry;
  s->chat_template = templates_[static_cast<size_t>(*kind)].get();
  s->system_prompt = state.system_prompt;
  s->client = state.client;
  s->preamble = state.preamble;
  s->started = state.started;
  s->turns = state.turns;
  s->recent = state.recent;
  s->last_turn = state.last_turn;
  s->conversation = ConversationHash(state.conversation_hash, state.conversation_messages);
  s->conversation_known = state.conversation_known;
  s->revision = s->saved_revision = state.revision;
  s->detached_at = Clock::now();
  RETURN_IF_ERROR(CreateSessionCache(*s));

  Restored out{s.get(), RestoreKind::kExact, ""};
  if (state.fingerprint != fingerprint_) {
    out.note = absl::StrFormat("it was saved by another model or KV layout (%s; this server: %s)",
                               state.fingerprint.substr(0, 160), fingerprint_);
  } else if (geometry->sinks != state.geometry.sinks || geometry->window != state.geometry.window ||
             geometry->ring != state.geometry.ring) {
    out.note = absl::StrFormat("its cache ring has %d slots and this server's has %d (another --prefill-chunk)",
                               state.geometry.ring, geometry->ring);
  } else if (absl::Status imported = backend_->ImportCache(s->cache_id, state.consumed, state.kv); !imported.ok()) {
    out.note = std::string(imported.message());
  }
  if (out.note.empty()) {
    s->consumed = state.consumed;
    s->dropped = state.dropped;
    s->carry = std::move(state.carry);
    std::copy(state.slot_tokens.begin(), state.slot_tokens.end(), s->slot_tokens.begin());
  } else {
    // Replay: the tokens the next query would see are fed again, ahead of
    // the carried token, by the next turn; the conversation's length and
    // its evicted count stay as they were.
    std::vector<int32_t> replay = VisibleTokens(state);
    out.kind = RestoreKind::kReplayed;
    out.note = absl::StrFormat("replaying its %d visible tokens: %s", replay.size(), out.note);
    s->consumed = 0;
    s->dropped = state.dropped + state.consumed - static_cast<int64_t>(replay.size());
    replay.insert(replay.end(), state.carry.begin(), state.carry.end());
    s->carry = std::move(replay);
  }
  s->evicted_reported = s->evicted_tokens();
  Register(std::move(s));
  return out;
}

}  // namespace sinkserve
