// The embedded session store: one SQLite database in a data directory, one
// row per session with its full blob, and a row per delta saved after it
// (table deltas, in rowid order; stage 0, or the stage of a piece not yet
// committed). WAL journal, synchronous=FULL: a commit is on disk when
// Apply returns, so a done the client saw survives a crash of the process
// or the machine. A batch of writes is one transaction (group commit).
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>

#include "absl/strings/str_format.h"
#include "store/session_store.h"

namespace sinkserve::store {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class SqliteStore final : public SessionStore {
 public:
  SqliteStore(sqlite3* db, double ttl_seconds) : db_(db), ttl_ms_(static_cast<int64_t>(ttl_seconds * 1000)) {}
  ~SqliteStore() override {
    for (sqlite3_stmt* s : {put_, remove_, bump_, add_delta_, commit_pieces_, count_pieces_, drop_pieces_,
                            clear_deltas_, clear_stages_, get_revision_, get_blob_, get_deltas_, sweep_,
                            sweep_deltas_, sweep_stages_}) {
      sqlite3_finalize(s);
    }
    sqlite3_close(db_);
  }

  absl::Status Prepare() {
    const char* schema =
        "PRAGMA page_size=65536;"
        "PRAGMA journal_mode=WAL;"
        "PRAGMA secure_delete=FAST;"
        "PRAGMA temp_store=MEMORY;"
        "PRAGMA cache_size=-16384;"
        "PRAGMA synchronous=FULL;"
        "CREATE TABLE IF NOT EXISTS sessions ("
        "  id TEXT PRIMARY KEY, revision INTEGER NOT NULL, expires_ms INTEGER NOT NULL, blob BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_ms);"
        // The blob goes last: reading a column after it would walk its
        // overflow pages.
        "CREATE TABLE IF NOT EXISTS deltas (id TEXT NOT NULL, stage INTEGER NOT NULL, blob BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS deltas_id ON deltas (id, stage);"
        // The stages whose pieces a turn's end committed (the pieces keep
        // their stage: no row with a blob is rewritten).
        "CREATE TABLE IF NOT EXISTS stages (id TEXT NOT NULL, stage INTEGER NOT NULL, PRIMARY KEY (id, stage))"
        "  WITHOUT ROWID;";
    if (sqlite3_exec(db_, schema, nullptr, nullptr, nullptr) != SQLITE_OK) return Error("setting up the database");
    struct {
      sqlite3_stmt** stmt;
      const char* sql;
    } statements[] = {
        {&put_, "INSERT OR REPLACE INTO sessions (id, revision, expires_ms, blob) VALUES (?1, ?2, ?3, ?4)"},
        {&remove_, "DELETE FROM sessions WHERE id = ?1"},
        {&bump_, "UPDATE sessions SET revision = ?2, expires_ms = ?3 WHERE id = ?1 AND revision = ?4 AND expires_ms > ?5"},
        {&add_delta_, "INSERT INTO deltas (id, stage, blob) VALUES (?1, ?3, ?2)"},
        {&commit_pieces_, "INSERT OR IGNORE INTO stages (id, stage) VALUES (?1, ?2)"},
        {&count_pieces_, "SELECT COUNT(*) FROM deltas WHERE id = ?1 AND stage = ?2"},
        {&drop_pieces_,
         "DELETE FROM deltas WHERE id = ?1 AND stage != 0 AND stage NOT IN (SELECT stage FROM stages WHERE id = ?1)"},
        {&clear_deltas_, "DELETE FROM deltas WHERE id = ?1"},
        {&clear_stages_, "DELETE FROM stages WHERE id = ?1"},
        {&get_revision_, "SELECT revision FROM sessions WHERE id = ?1 AND expires_ms > ?2"},
        {&get_blob_, "SELECT blob FROM sessions WHERE id = ?1 AND expires_ms > ?2"},
        {&get_deltas_,
         "SELECT blob FROM deltas WHERE id = ?1 AND (stage = 0 OR stage IN (SELECT stage FROM stages WHERE id = ?1)) "
         "ORDER BY rowid LIMIT ?2"},
        {&sweep_, "DELETE FROM sessions WHERE expires_ms <= ?1"},
        {&sweep_deltas_, "DELETE FROM deltas WHERE id NOT IN (SELECT id FROM sessions)"},
        {&sweep_stages_, "DELETE FROM stages WHERE id NOT IN (SELECT id FROM sessions)"},
    };
    for (const auto& s : statements) {
      if (sqlite3_prepare_v2(db_, s.sql, -1, s.stmt, nullptr) != SQLITE_OK) return Error("preparing a statement");
    }
    return absl::OkStatus();
  }

  void Apply(absl::Span<StoreWrite> writes) override {
    const bool batch = writes.size() > 1 && sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
    for (StoreWrite& w : writes) w.status = Write(w);
    if (batch && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      const absl::Status failed = Error("committing");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      for (StoreWrite& w : writes) w.status = failed;
    }
  }

  absl::StatusOr<StoreRead> Get(const std::string& id, uint64_t known_revision) override {
    // One read transaction: the blob and its deltas as of one commit.
    if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return Error("starting a read");
    absl::StatusOr<StoreRead> read = Read(id, known_revision);
    sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    return read;
  }

  void Sweep() override {
    sqlite3_bind_int64(sweep_, 1, NowMs());
    sqlite3_step(sweep_);
    sqlite3_reset(sweep_);
    for (sqlite3_stmt* stmt : {sweep_deltas_, sweep_stages_}) {
      sqlite3_step(stmt);
      sqlite3_reset(stmt);
    }
  }

 private:
  absl::StatusOr<StoreRead> Read(const std::string& id, uint64_t known_revision) {
    StoreRead read;
    if (known_revision != 0) {
      absl::StatusOr<std::optional<int64_t>> stored = Integer(get_revision_, id, NowMs());
      if (!stored.ok()) return stored.status();
      if (!stored->has_value()) return read;
      if (static_cast<uint64_t>(**stored) == known_revision) {
        read.found = read.unchanged = true;
        return read;
      }
    }
    Bind(get_blob_, id, NowMs());
    int rc = sqlite3_step(get_blob_);
    if (rc == SQLITE_ROW) {
      read.found = true;
      read.blob = Column(get_blob_);
    }
    sqlite3_reset(get_blob_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("reading a session");
    if (!read.found) return read;
    Bind(get_deltas_, id, static_cast<int64_t>(kMaxDeltas) + 1);
    while ((rc = sqlite3_step(get_deltas_)) == SQLITE_ROW) read.deltas.push_back(Column(get_deltas_));
    sqlite3_reset(get_deltas_);
    if (rc != SQLITE_DONE) return Error("reading a session's deltas");
    return read;
  }

  // The one integer `stmt` (id in ?1, `second` in ?2) selects, if any row.
  absl::StatusOr<std::optional<int64_t>> Integer(sqlite3_stmt* stmt, const std::string& id, int64_t second) {
    Bind(stmt, id, second);
    const int rc = sqlite3_step(stmt);
    std::optional<int64_t> value;
    if (rc == SQLITE_ROW) value = sqlite3_column_int64(stmt, 0);
    sqlite3_reset(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("reading a session's state");
    return value;
  }

  // Drops every delta and piece of `id`, and its committed stages.
  bool ClearDeltas(const std::string& id) {
    return Run(clear_deltas_, id) == SQLITE_DONE && Run(clear_stages_, id) == SQLITE_DONE;
  }

  static std::string Column(sqlite3_stmt* stmt) {
    const void* data = sqlite3_column_blob(stmt, 0);
    const int bytes = sqlite3_column_bytes(stmt, 0);
    return bytes > 0 ? std::string(static_cast<const char*>(data), static_cast<size_t>(bytes)) : std::string();
  }

  // Runs `stmt` with the id in ?1 and `bind` setting the rest.
  int Run(sqlite3_stmt* stmt, const std::string& id, const std::function<void(sqlite3_stmt*)>& bind = nullptr) {
    sqlite3_bind_text(stmt, 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
    if (bind) bind(stmt);
    const int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
  }

  // One write. Its preconditions are read before anything changes: no
  // savepoints, which would copy every page the write touches into a
  // statement journal first.
  absl::Status Write(StoreWrite& w) {
    const int64_t now = NowMs();
    if (!w.blob) {
      if (Run(remove_, w.id) != SQLITE_DONE) return Error("deleting a session");
      w.existed = sqlite3_changes(db_) > 0;
      if (!ClearDeltas(w.id)) return Error("deleting a session's deltas");
      return absl::OkStatus();
    }
    auto add = [&](uint64_t stage) {
      return Run(add_delta_, w.id, [&](sqlite3_stmt* stmt) {
        sqlite3_bind_blob64(stmt, 2, w.blob->data(), w.blob->size(), SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 3, static_cast<int64_t>(stage));
      });
    };
    if (w.piece) {
      if (add(w.stage) != SQLITE_DONE) return Error("writing a piece of a session's turn");
      return absl::OkStatus();
    }
    if (w.base_revision == 0) {
      const int rc = Run(put_, w.id, [&](sqlite3_stmt* stmt) {
        sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(w.revision));
        sqlite3_bind_int64(stmt, 3, now + ttl_ms_);
        sqlite3_bind_blob64(stmt, 4, w.blob->data(), w.blob->size(), SQLITE_STATIC);
      });
      if (rc != SQLITE_DONE) return Error("writing a session");
      if (!ClearDeltas(w.id)) return Error("dropping a session's deltas");
      return absl::OkStatus();
    }
    absl::StatusOr<std::optional<int64_t>> stored = Integer(get_revision_, w.id, now);
    if (!stored.ok()) return stored.status();
    if (*stored != static_cast<int64_t>(w.base_revision)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "session store (SQLite): session %s is no longer at revision %d; its delta needs a full save",
          w.id.substr(0, 200), w.base_revision));
    }
    if (w.pieces > 0) {
      absl::StatusOr<std::optional<int64_t>> pieces = Integer(count_pieces_, w.id, static_cast<int64_t>(w.stage));
      if (!pieces.ok()) return pieces.status();
      if (*pieces != w.pieces) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "session store (SQLite): session %s has %d of its turn's %d pieces; its delta needs a full save",
            w.id.substr(0, 200), pieces->value_or(0), w.pieces));
      }
    }
    const int rc = Run(bump_, w.id, [&](sqlite3_stmt* stmt) {
      sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(w.revision));
      sqlite3_bind_int64(stmt, 3, now + ttl_ms_);
      sqlite3_bind_int64(stmt, 4, static_cast<int64_t>(w.base_revision));
      sqlite3_bind_int64(stmt, 5, now);
    });
    if (rc != SQLITE_DONE) return Error("writing a session's revision");
    if (w.pieces > 0) {
      const int committed = Run(commit_pieces_, w.id, [&](sqlite3_stmt* stmt) {
        sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(w.stage));
      });
      if (committed != SQLITE_DONE) return Error("committing a turn's pieces");
    }
    if (Run(drop_pieces_, w.id) != SQLITE_DONE) return Error("dropping a session's stale pieces");
    if (add(0) != SQLITE_DONE) return Error("writing a session's delta");
    return absl::OkStatus();
  }

  void Bind(sqlite3_stmt* stmt, const std::string& id, int64_t second) {
    sqlite3_bind_text(stmt, 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 2, second);
  }

  absl::Status Error(const char* what) const {
    return absl::UnavailableError(absl::StrFormat("session store (SQLite): %s failed: %s", what, sqlite3_errmsg(db_)));
  }

  sqlite3* db_;
  const int64_t ttl_ms_;
  sqlite3_stmt* put_ = nullptr;
  sqlite3_stmt* remove_ = nullptr;
  sqlite3_stmt* bump_ = nullptr;
  sqlite3_stmt* add_delta_ = nullptr;
  sqlite3_stmt* commit_pieces_ = nullptr;
  sqlite3_stmt* count_pieces_ = nullptr;
  sqlite3_stmt* drop_pieces_ = nullptr;
  sqlite3_stmt* clear_deltas_ = nullptr;
  sqlite3_stmt* clear_stages_ = nullptr;
  sqlite3_stmt* sweep_stages_ = nullptr;
  sqlite3_stmt* get_revision_ = nullptr;
  sqlite3_stmt* get_blob_ = nullptr;
  sqlite3_stmt* get_deltas_ = nullptr;
  sqlite3_stmt* sweep_ = nullptr;
  sqlite3_stmt* sweep_deltas_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SessionStore>> OpenSqliteStore(const std::string& dir, double ttl_seconds) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot create the session store directory %s: %s", dir, std::strerror(errno)));
  }
  const std::string path = dir + "/sessions.db";
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    const std::string message = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::InvalidArgumentError(absl::StrFormat("cannot open the session store %s: %s", path, message));
  }
  sqlite3_busy_timeout(db, 5000);  // the reader and the writer connection wait for each other's locks
  auto store = std::make_unique<SqliteStore>(db, ttl_seconds);
  if (absl::Status ready = store->Prepare(); !ready.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("the session store %s: %s", path, ready.message()));
  }
  return store;
}

}  // namespace sinkserve::store
