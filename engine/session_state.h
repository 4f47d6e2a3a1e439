// A session as a value, and the store the engine keeps it in.
//
// SessionState is everything a session needs to go on in another process:
// its config, the conversation's counters, the tokens in its cache slots and
// the cache's K/V bytes as the backend stores them. Between turns there is no
// sampler state to keep (each turn seeds its own sampler), only the
// repetition window. store/session_codec.h turns it into a versioned,
// checksummed blob.
//
// SessionPersistence is what the engine asks of a store. Every call returns
// at once; the work runs on the store's own threads and `done` runs there
// too (the engine posts it back to its thread). Saves and removals of one id
// run in the order they were asked for.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/cache_geometry.h"
#include "engine/cache_policy.h"
#include "engine/chat_types.h"

namespace sinkserve {

// Slots [first, first + count) of a cache.
struct SlotRange {
  int32_t first = 0;
  int32_t count = 0;
};

struct SessionState {
  std::string id;
  std::string client;  // the identity that opened it (an API key's "key#N" owns it)
  CacheConfig cache;
  CacheGeometry geometry;         // as the saving server made it (its ring depends on its prefill chunk)
  std::string chat_template;      // ChatTemplateName
  std::string system_prompt;
  std::vector<int32_t> preamble;  // BOS + system block, still to feed when !started
  bool started = false;
  uint32_t turns = 0;
  int64_t consumed = 0;  // tokens the cache has consumed
  int64_t dropped = 0;   // tokens before the cache was last rebuilt by a replay (not in `consumed`)
  std::vector<int32_t> carry;
  std::vector<int32_t> recent;
  LastTurn last_turn;
  uint64_t conversation_hash = 0;
  int64_t conversation_messages = 0;
  bool conversation_known = false;
  // The token in each of the first min(consumed, Slots()) cache slots.
  std::vector<int32_t> slot_tokens;
  // Which model and backend KV layout made `kv`: a restore where it differs
  // replays the visible tokens instead of loading `kv`.
  std::string fingerprint;
  std::string kv;         // Backend::ExportCache
  // The layout of `kv` (Backend::KvShape): rows of slot_bytes per slot.
  int64_t kv_rows = 0;
  int64_t kv_slot_bytes = 0;
  uint64_t revision = 0;  // changes with every save
  int64_t saved_unix_ms = 0;
  // A delta (base_revision != 0) is the state after the turns since the
  // stored revision base_revision, holding only the cache slots they wrote:
  // `slot_tokens` has the tokens of `delta_slots` in order, and `kv` each
  // range's rows (Backend::ExportCacheSlots) one range after another.
  // Everything else is whole. The store keeps it on top of its base; a
  // load applies it (store::ApplyDelta).
  uint64_t base_revision = 0;
  std::vector<SlotRange> delta_slots;

  // How the store files a delta; not part of the blob. While a turn runs,
  // the engine saves its K/V in pieces (deltas, each on the one before),
  // which the store keeps aside under `stage` and no load sees; the delta
  // at the turn's end commits them in one step, checking that the stored
  // revision is still `stored_revision` (set on every delta but pieces; a
  // full save leaves it 0) and that all `pieces` are there.
  // So a crash mid-turn leaves the session as of its last turn, and the
  // turn's end writes only the tokens since the last piece.
  struct Staging {
    uint64_t stage = 0;  // nonzero: the turn's pieces (a full save drops them)
    bool piece = false;
    int32_t pieces = 0;
    uint64_t stored_revision = 0;
  };
  Staging staging;
};

// The tokens a replay feeds to rebuild the cache of `state` when its K/V
// cannot be loaded: the sinks, then the window's tokens, oldest first
// (every token the next query would see, and no more).
std::vector<int32_t> VisibleTokens(const SessionState& state);

// Milliseconds since the Unix epoch (SessionState::saved_unix_ms).
int64_t UnixMillis();

class SessionPersistence {
 public:
  struct Loaded {
    enum class Kind { kNotFound, kUnchanged, kFound };
    Kind kind = Kind::kNotFound;
    SessionState state;  // kFound
  };

  virtual ~SessionPersistence() = default;

  // Writes `state` (replacing the id's earlier state); `done` gets the
  // outcome once it is durable, or why it is not.
  virtual void Save(std::shared_ptr<const SessionState> state, std::function<void(absl::Status)> done) = 0;
  // The stored state of `id`: kUnchanged when its revision is
  // `known_revision` (nonzero), without reading the blob. A blob that
  // cannot be read (corrupt, truncated, another format version) is an
  // error status saying so.
  virtual void Load(std::string id, uint64_t known_revision, std::function<void(absl::StatusOr<Loaded>)> done) = 0;
  // Deletes `id`; `done` gets whether it was there.
  virtual void Remove(std::string id, std::function<void(absl::StatusOr<bool>)> done) = 0;
  // True when other servers write the same store (Redis): a session this
  // server holds may have gone on elsewhere, so a resume checks the revision.
  virtual bool shared() const = 0;
  // Seconds a stored session lives after its last save.
  virtual double ttl_seconds() const = 0;
};

}  // namespace sinkserve
