// The embedded session store: one SQLite database in a data directory, one
// row per session. WAL journal, synchronous=FULL: a commit is on disk when
// Apply returns, so a done the client saw survives a crash of the process
// or the machine. A batch of writes is one transaction (group commit).
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>

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
    for (sqlite3_stmt* s : {put_, remove_, get_revision_, get_blob_, sweep_}) sqlite3_finalize(s);
    sqlite3_close(db_);
  }

  absl::Status Prepare() {
    const char* schema =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=FULL;"
        "CREATE TABLE IF NOT EXISTS sessions ("
        "  id TEXT PRIMARY KEY, revision INTEGER NOT NULL, expires_ms INTEGER NOT NULL, blob BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_ms);";
    if (sqlite3_exec(db_, schema, nullptr, nullptr, nullptr) != SQLITE_OK) return Error("setting up the database");
    struct {
      sqlite3_stmt** stmt;
      const char* sql;
    } statements[] = {
        {&put_, "INSERT OR REPLACE INTO sessions (id, revision, expires_ms, blob) VALUES (?1, ?2, ?3, ?4)"},
        {&remove_, "DELETE FROM sessions WHERE id = ?1"},
        {&get_revision_, "SELECT revision FROM sessions WHERE id = ?1 AND expires_ms > ?2"},
        {&get_blob_, "SELECT blob FROM sessions WHERE id = ?1 AND expires_ms > ?2"},
        {&sweep_, "DELETE FROM sessions WHERE expires_ms <= ?1"},
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
    StoreRead read;
    if (known_revision != 0) {
      Bind(get_revision_, id, NowMs());
      const int rc = sqlite3_step(get_revision_);
      if (rc == SQLITE_ROW) {
        read.found = true;
        read.unchanged = static_cast<uint64_t>(sqlite3_column_int64(get_revision_, 0)) == known_revision;
      }
      sqlite3_reset(get_revision_);
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("reading a session's revision");
      if (!read.found || read.unchanged) return read;
      read.found = false;
    }
    Bind(get_blob_, id, NowMs());
    const int rc = sqlite3_step(get_blob_);
    if (rc == SQLITE_ROW) {
      read.found = true;
      const void* data = sqlite3_column_blob(get_blob_, 0);
      const int bytes = sqlite3_column_bytes(get_blob_, 0);
      if (bytes > 0) read.blob.assign(static_cast<const char*>(data), static_cast<size_t>(bytes));
    }
    sqlite3_reset(get_blob_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("reading a session");
    return read;
  }

  void Sweep() override {
    sqlite3_bind_int64(sweep_, 1, NowMs());
    sqlite3_step(sweep_);
    sqlite3_reset(sweep_);
  }

 private:
  absl::Status Write(StoreWrite& w) {
    sqlite3_stmt* stmt = w.blob ? put_ : remove_;
    sqlite3_bind_text(stmt, 1, w.id.data(), static_cast<int>(w.id.size()), SQLITE_STATIC);
    if (w.blob) {
      sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(w.revision));
      sqlite3_bind_int64(stmt, 3, NowMs() + ttl_ms_);
      sqlite3_bind_blob64(stmt, 4, w.blob->data(), w.blob->size(), SQLITE_STATIC);
    }
    const int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc != SQLITE_DONE) return Error(w.blob ? "writing a session" : "deleting a session");
    w.existed = !w.blob && sqlite3_changes(db_) > 0;
    return absl::OkStatus();
  }

  void Bind(sqlite3_stmt* stmt, const std::string& id, int64_t now) {
    sqlite3_bind_text(stmt, 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 2, now);
  }

  absl::Status Error(const char* what) const {
    return absl::UnavailableError(absl::StrFormat("session store (SQLite): %s failed: %s", what, sqlite3_errmsg(db_)));
  }

  sqlite3* db_;
  const int64_t ttl_ms_;
  sqlite3_stmt* put_ = nullptr;
  sqlite3_stmt* remove_ = nullptr;
  sqlite3_stmt* get_revision_ = nullptr;
  sqlite3_stmt* get_blob_ = nullptr;
  sqlite3_stmt* sweep_ = nullptr;
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
