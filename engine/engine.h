// The engine: one thread that owns every session and KV cache and runs
// continuous batching over them. Each step is three verbs:
//   Schedule()    decode tokens of every generating session + prefill chunks
//                 under a per-step token budget (engine/scheduler.h),
//   Forward       one Backend call for the whole batch,
//   Postprocess() sample, detokenize, check stops, push deltas to outboxes.
// Sessions with no work cost nothing; with no work at all the thread sleeps.
//
// Other threads never touch engine state: every public method posts a command
// to the engine thread's queue and returns at once. Streams receive answers
// through their Outbox; unary queries through a callback that runs on the
// engine thread (it must not block).
//
// The engine alone keeps a stream's protocol state (opened or not, a turn
// running, half-closed): a front door forwards what the client sends and
// writes what the outbox yields, and every stream ends with the EndEvent the
// engine pushes.
//
// Per-token eviction is exactly Sequence's: the cache geometry comes from
// GeometryFor with the prefill chunk, and dense caches are capped by
// CheckCacheCapacity (engine/cache_policy.h).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/cache_policy.h"
#include "engine/chat_types.h"
#include "engine/outbox.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/session.h"
#include "engine/session_state.h"
#include "engine/text/chat_template.h"
#include "engine/text/tokenizer.h"
#include "engine/turn.h"

namespace sinkserve {

struct EngineConfig {
  std::string model_name;                  // reported to clients; empty: the model's own name
  CacheConfig default_cache;               // policy, sinks, window for new sessions
  int32_t max_window = 65536;              // cap on a session's window tokens
  SchedulerConfig scheduler;               // prefill chunk and per-step budget
  int64_t max_sessions = 256;              // attached + detached
  // Sessions one client identity may hold, attached or detached (0: no cap).
  // A client at its cap reclaims its own longest-detached session first.
  int64_t max_sessions_per_client = 64;
  // Resuming a session another stream holds: false ends the newcomer with
  // FAILED_PRECONDITION; true moves the session (the old stream gets ABORTED).
  bool allow_takeover = false;
  int64_t max_prompt_bytes = 1 << 20;      // per turn text and system prompt
  int64_t max_new_tokens = 1000000;        // cap on a turn's max_new_tokens
  int64_t default_max_new_tokens = 512;    // when a turn asks for none
  int64_t max_stop_strings = 16;           // per turn
  int64_t max_stop_bytes = 1024;           // per turn, all stop strings together
  SamplingParams default_sampling;
  ChatTemplateKind default_template = ChatTemplateKind::kRaw;
  double session_ttl_seconds = 600;        // detached sessions live this long
  // A stream whose client reads nothing this long (its outbox stays full)
  // ends with DEADLINE_EXCEEDED; its session is detached and kept for the TTL.
  double stalled_stream_seconds = 60;
  size_t outbox_capacity = 64;             // events per stream before it pauses
  // Bytes all sessions' KV caches may hold together (0: no limit). An open
  // whose cache does not fit gets RESOURCE_EXHAUSTED, before any allocation.
  int64_t kv_budget_bytes = 0;
  // Called on the engine thread after each step is scheduled, with the
  // step's tokens and sequences (metrics); must not block.
  std::function<void(int64_t tokens, int64_t sequences)> on_step;

  // The session store (null: sessions live in memory only). With one, every
  // turn's end is saved (its done goes out once the store has it), an open
  // of an id this server does not hold restores it from the store, idle and
  // evicted sessions stay resumable there, and max_sessions bounds only the
  // sessions held in memory. It must outlive the engine.
  SessionPersistence* store = nullptr;
  // With a store, a running turn's K/V goes to it in pieces of at least
  // this many bytes (SessionState::Staging), so a turn's done waits for
  // about this much at most; 0: only at the turn's end. Each piece costs a
  // write of its own, so small pieces cost more than they save.
  int64_t store_piece_bytes = int64_t{1} << 20;
  // Names the model's weights (a hash of its files); with the backend's KV
  // layout it decides whether a stored cache can be loaded or is replayed.
  std::string model_fingerprint;
  // Called on the engine thread when a save or a load finishes: "save" or
  // "load", its seconds from request to answer, and whether it worked.
  std::function<void(std::string_view op, double seconds, bool ok)> on_store;

  absl::Status Validate() const;
  // The turn defaults and caps this config sets (engine/turn.h).
  TurnDefaults turn_defaults() const {
    return {default_sampling, max_new_tokens, default_max_new_tokens, max_prompt_bytes, max_stop_strings,
            max_stop_bytes};
  }
};

struct EngineStats {
  int64_t sessions = 0;       // live sessions, attached or detached
  int64_t running_turns = 0;  // sessions with a turn in progress
  int64_t steps = 0;          // forward passes run
  int64_t kv_bytes = 0;       // bytes the live sessions' KV caches hold
  int64_t attached = 0;       // sessions attached to a stream
  int64_t queued_turns = 0;   // running turns still prefilling their prompt (no token yet)
  int64_t evicted_tokens = 0; // tokens evicted from caches since start, as of each turn's end
  int64_t restored_exact = 0;     // sessions brought back from the store with their cache
  int64_t restored_replayed = 0;  // ... by replaying their visible tokens
  int64_t unloaded = 0;           // idle sessions dropped from memory while the store keeps them
  int64_t store_errors = 0;       // saves and loads that failed
};

class Engine {
 public:
  // Starts the engine thread. `backend` and `tokenizer` must outlive it.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(Backend* backend, const Tokenizer* tokenizer,
                                                        EngineConfig config);
  // Ends every attached stream with UNAVAILABLE, frees every cache, joins.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A fresh outbox for one stream, wired to wake this engine.
  std::shared_ptr<Outbox> NewOutbox();

  // Stream commands, in the order the client sent them; answers arrive in
  // the outbox. Open twice, a turn before open and a turn while one runs end
  // the stream with FAILED_PRECONDITION; a cancel with no turn does nothing.
  void Open(std::shared_ptr<Outbox> outbox, OpenRequest request);
  void StartTurn(std::shared_ptr<Outbox> outbox, TurnRequest request);
  void Cancel(std::shared_ptr<Outbox> outbox);
  // The client will send nothing more: the stream ends with OK once its turn
  // (if one runs) is done.
  void HalfClose(std::shared_ptr<Outbox> outbox);
  // Ends the stream with `status` (a request the front door could not read),
  // after everything already queued for it.
  void EndStream(std::shared_ptr<Outbox> outbox, absl::Status status);
  // The stream is gone: stop generating at once and keep the session for
  // the idle TTL. Idempotent.
  void Detach(std::shared_ptr<Outbox> outbox);

  // Unary queries; `done` runs on the engine thread and must not block.
  void GetSession(std::string id, std::function<void(absl::StatusOr<SessionSnapshot>)> done) {
    GetSession(std::move(id), "", std::move(done));
  }
  void DeleteSession(std::string id, std::function<void(absl::Status)> done) {
    DeleteSession(std::move(id), "", std::move(done));
  }
  // The same on behalf of `client`: a session an API key opened is
  // PERMISSION_DENIED to every other key (as when resuming it), and left as
  // it was. An empty client skips the check.
  void GetSession(std::string id, std::string client, std::function<void(absl::StatusOr<SessionSnapshot>)> done);
  void DeleteSession(std::string id, std::string client, std::function<void(absl::Status)> done);

  // Draining: new sessions and resumes get UNAVAILABLE; running turns go on.
  void BeginDrain();
  // Ends every attached stream with `status` (after the drain timeout).
  void EndAllStreams(absl::Status status);

  EngineStats stats() const;
  const EngineConfig& config() const { return config_; }
  const std::string& model_name() const { return model_name_; }

 private:
  Engine(Backend* backend, const Tokenizer* tokenizer, EngineConfig config);

  void Post(std::function<void()> command);
  void Wake();
  void Loop();

  // Commands (engine thread).
  // `store_checked`: the store has just confirmed that the copy held here is its latest.
  void DoOpen(const std::shared_ptr<Outbox>& outbox, const OpenRequest& request, bool store_checked = false);
  // A new session under the session caps and the KV budget, registered.
  absl::StatusOr<Session*> AdmitSession(const OpenRequest& request);
  absl::StatusOr<std::unique_ptr<Session>> NewSession(const OpenRequest& request);
  void DoTurn(const std::shared_ptr<Outbox>& outbox, const TurnRequest& request);
  absl::Status PrepareTurn(Session& s, const TurnRequest& request);
  void DoHalfClose(const std::shared_ptr<Outbox>& outbox);
  void DoEndStream(const std::shared_ptr<Outbox>& outbox, const absl::Status& status);
  void DoDetach(Outbox* outbox);
  // Forgets an open of `outbox` that waits for the store (its stream is gone).
  void DropPendingOpen(const Outbox* outbox);
  void DetachSession(Session& s);
  // Detaches `s` from its stream and ends that stream with `status`.
  void EndStreamOf(Session& s, const absl::Status& status);
  void DestroySession(const std::string& id);
  void ExpireIdle(Clock::time_point now);
  // Ends the streams whose clients stopped reading longer than allowed.
  void EndStalled(Clock::time_point now);
  // Destroys the detached session detached longest (of `client` only when
  // it is set). False when there is none.
  bool ReclaimDetached(const std::string* client);
  // RESOURCE_EXHAUSTED unless `cache_bytes` fit the KV budget, reclaiming
  // detached sessions (longest-detached first) when that makes them fit.
  absl::Status MakeKvRoom(int64_t cache_bytes);
  void EndAll(const absl::Status& status);
  Session* Attached(Outbox* outbox);
  // True when `client` may not see `s`: it was opened with an API key
  // ("key#N" identity) and `client` is another identity.
  static bool OwnedByOther(const Session& s, const std::string& client) { return OwnedByOther(s.client, client); }
  static bool OwnedByOther(const std::string& owner, const std::string& client);

  // The session store (engine_store.cc).
  // Attaches `s` to the stream and answers Opened.
  void AttachSession(const std::shared_ptr<Outbox>& outbox, Session& s, bool resumed, RestoreKind restored,
                     std::string restore_note);
  // The quotas a new or restored session of `client` must fit, reclaiming
  // detached sessions where that helps.
  absl::Status MakeRoomFor(const std::string& client);
  // Reserves `s`'s cache (its geometry set) under the KV budget.
  absl::Status CreateSessionCache(Session& s);
  void Register(std::unique_ptr<Session> s);
  // Saves `s` as it is now; the done pushed by FinishTurnOutput waits for it.
  void SaveSession(Session& s);
  void OnSaved(const std::string& id, uint64_t revision, bool delta, const absl::Status& status,
               Clock::time_point asked);
  // The slots written since the latest save, when a delta can carry them.
  std::optional<std::vector<SlotRange>> DeltaSlots(const Session& s) const;
  // Exported K/V bytes of `slots` cache slots.
  int64_t KvBytes(int64_t slots) const { return slots * kv_shape_.rows * kv_shape_.slot_bytes; }
  // The revision the session's next delta chains on: its running turn's
  // latest piece, else its latest save.
  static uint64_t ChainTip(const Session& s) { return s.stage_pieces > 0 ? s.stage_tip : s.revision; }
  // Whether the session's deltas since its full save are past their bounds.
  bool ChainFull(const Session& s) const;
  // Saves a running turn's K/V written so far as a piece, once there is
  // enough of it (SessionState::Staging).
  void MaybeStage(Session& s);
  // After a turn's delta: a full save when the deltas are past their
  // bounds, which no done waits for.
  void MaybeCompact(Session& s);
  // Delivers a turn's done (now, or once its save is confirmed).
  void FinishTurnOutput(Session& s, DoneEvent done);
  void DeliverDone(Session& s, bool saved);
  // Asks the store for `request.session_id` for this stream; answers in OnLoaded.
  void StartLoad(const std::shared_ptr<Outbox>& outbox, const OpenRequest& request, uint64_t known_revision);
  void OnLoaded(const std::string& id, absl::StatusOr<SessionPersistence::Loaded> loaded, Clock::time_point asked);
  // Keeps `command` for after the open of `outbox` is answered, when that
  // open waits for the store; false when it does not.
  bool DeferWhileLoading(const Outbox* outbox, std::function<void()> command);

  struct Restored {
    Session* session;
    RestoreKind kind;
    std::string note;
  };
  absl::StatusOr<Restored> RestoreSession(SessionState state, const OpenRequest& request);
  // `delta`: only those slots' tokens and K/V, on top of the latest save.
  std::shared_ptr<SessionState> Snapshot(Session& s, const std::vector<SlotRange>* delta = nullptr,
                                        uint64_t base_revision = 0);
  // Hands `state` to the store, with OnSaved to follow.
  void Store(Session& s, std::shared_ptr<SessionState> state);
  // Runs `then` on the engine thread with the store's state of `id`.
  void WithStored(const std::string& id, std::function<void(absl::StatusOr<SessionPersistence::Loaded>)> then);
  // Posts `command` to this engine if it still exists (store callbacks).
  std::function<void(std::function<void()>)> Poster();

  // The step (engine/engine_step.cc).
  bool Step();
  void Postprocess(const ScheduledSeq& item, absl::Span<float> logits);
  void SampleNext(Session& s, absl::Span<float> logits);
  // Streams an emitted token and ends the turn if it finished it (or the
  // cache is full); true when the turn goes on.
  bool Emit(Session& s, const Turn::Step& step);
  // Contrastive search: the candidates for the next step from `logits`, or
  // the turn's end on a non-finite logit; and, after the candidates ran
  // (their logits rows and hidden states), the pick, committed and emitted.
  void NextCandidates(Session& s, absl::Span<float> logits);
  void PickContrastive(Session& s, absl::Span<float> logits, absl::Span<const float> hidden);
  // Ends the running turn. With `emit`, flushes held text and pushes Done,
  // then ends the stream if the client had half-closed.
  void EndTurn(Session& s, FinishReason reason, const std::string& error, bool emit);
  TurnUsage Usage(const Session& s) const;

  Backend* backend_;
  const Tokenizer* tokenizer_;
  const EngineConfig config_;
  const std::string model_name_;
  const int32_t vocab_size_;
  const int32_t context_;

  // Command queue (any thread -> engine thread).
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> commands_;
  bool wake_ = false;
  bool stop_ = false;

  // Engine-thread state.
  absl::flat_hash_map<std::string, std::unique_ptr<Session>> sessions_;
  absl::flat_hash_map<const Outbox*, Session*> attached_;
  absl::flat_hash_map<std::string, int64_t> client_sessions_;  // sessions per client identity
  std::vector<Session*> active_;  // sessions with a running turn
  Scheduler scheduler_;
  std::vector<ScheduledSeq> plan_;  // this step's sessions, in batch order
  Batch batch_;                     // built from plan_ for the backend
  std::vector<float> logits_;       // (logit rows, vocab): one per plan_ entry, or one per candidate
  const bool keep_hidden_;          // the backend runs contrastive candidates: keep every token's hidden state
  const int32_t dim_;               // the model's hidden width
  std::vector<float> hidden_;       // (step tokens, dim) when keep_hidden_
  std::vector<std::unique_ptr<ChatTemplate>> templates_;  // one per ChatTemplateKind
  // Opens waiting for the store, by session id, and the id each stream waits for.
  struct PendingOpen {
    std::shared_ptr<Outbox> outbox;
    OpenRequest request;
    std::vector<std::function<void()>> after;  // what the client sent meanwhile, in order
  };
  // The open of `p` was answered (attached, refused, or waiting for the
  // store again): runs, drops or moves what its client sent meanwhile.
  void Resolved(PendingOpen& p);
  absl::flat_hash_map<std::string, std::vector<PendingOpen>> loading_;
  absl::flat_hash_map<const Outbox*, std::string> loading_by_outbox_;
  std::mt19937_64 revisions_;  // seeded from the OS: revisions of saves
  const std::string fingerprint_;  // model fingerprint + backend KV layout
  const Backend::KvShape kv_shape_;  // of the backend's exported K/V
  // Store callbacks post through this; the destructor cuts it off.
  struct Mailbox {
    std::mutex mu;
    Engine* engine = nullptr;
  };
  std::shared_ptr<Mailbox> mailbox_;
  bool draining_ = false;
  bool stopping_ = false;  // the destructor asked the loop to end
  Clock::time_point last_sweep_;

  std::atomic<int64_t> session_count_{0};
  std::atomic<int64_t> running_turns_{0};
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> kv_bytes_{0};  // written on the engine thread only
  std::atomic<int64_t> attached_count_{0};
  std::atomic<int64_t> queued_turns_{0};
  std::atomic<int64_t> evicted_tokens_{0};
  std::atomic<int64_t> restored_exact_{0};
  std::atomic<int64_t> restored_replayed_{0};
  std::atomic<int64_t> unloaded_{0};
  std::atomic<int64_t> store_errors_{0};
  std::thread thread_;  // last: starts after every member above exists
};

// A new session id: 128 bits from the OS CSPRNG (getrandom), as 32 hex digits.
std::string NewSessionId();

}  // namespace sinkserve
