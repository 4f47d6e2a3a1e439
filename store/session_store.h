// Where session blobs live (store/session_codec.h): SQLite in a data
// directory, or Redis shared by replicas. A SessionStore is one connection,
// used by one thread; blocking calls. StorePersistence (store_persistence.h)
// runs them on its own threads so the engine never waits for them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace sinkserve::store {

// Most deltas a stored session may have on top of its full blob. The
// engine writes a full blob long before (engine/engine_store.cc); a store
// that holds more is refused on load.
inline constexpr size_t kMaxDeltas = 256;

// One write of a batch: a put (blob set) or a removal, and its outcome. A
// put with a base_revision is a delta: it is kept after the session's full
// blob and the deltas before it, only when the stored revision is
// base_revision (FAILED_PRECONDITION otherwise); a put without one replaces
// the blob and drops its deltas.
struct StoreWrite {
  std::string id;
  uint64_t revision = 0;
  std::optional<std::string> blob;  // nullopt: remove
  uint64_t base_revision = 0;       // nonzero: `blob` is a delta on that revision
  // A piece (blob, no base_revision, stage): kept aside under `stage`, seen
  // by no load. A delta with `pieces` > 0 first makes that many pieces of
  // `stage` part of the session, in order (FAILED_PRECONDITION when they
  // are not all there), and drops any other stage's. A full put drops the
  // pieces of `stage`.
  uint64_t stage = 0;
  bool piece = false;
  int32_t pieces = 0;
  absl::Status status;              // set by Apply
  bool existed = false;             // a removal found the id
};

struct StoreRead {
  bool found = false;
  bool unchanged = false;  // its revision is the one asked about; blob not read
  std::string blob;
  std::vector<std::string> deltas;  // saved after `blob`, oldest first
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  // Applies the writes in order, in one transaction where the store has
  // them (group commit); each write's status says how it went. Puts keep
  // the blob for ttl_seconds.
  virtual void Apply(absl::Span<StoreWrite> writes) = 0;
  // The blob of `id` and its deltas, read together, or only `unchanged`
  // when its revision is `known_revision` (nonzero). Expired entries are
  // not found. At most kMaxDeltas + 1 deltas are read.
  virtual absl::StatusOr<StoreRead> Get(const std::string& id, uint64_t known_revision) = 0;
  // Drops expired entries where the store does not do it itself.
  virtual void Sweep() {}
};

// A store described by --session-store: "sqlite:DIR" (DIR/sessions.db,
// created with DIR when missing) or "redis://HOST:PORT". Returns a factory
// that opens one connection per call (the first is opened now, so a bad
// spec or an unreachable server is an error at startup), and whether
// other servers may share it.
struct StoreSpec {
  std::function<absl::StatusOr<std::unique_ptr<SessionStore>>()> connect;
  bool shared = false;
  std::string description;  // for logs, no secrets
};
absl::StatusOr<StoreSpec> ParseStoreSpec(const std::string& spec, double ttl_seconds);

absl::StatusOr<std::unique_ptr<SessionStore>> OpenSqliteStore(const std::string& dir, double ttl_seconds);
absl::StatusOr<std::unique_ptr<SessionStore>> OpenRedisStore(const std::string& host, int port, double ttl_seconds);

}  // namespace sinkserve::store
