#include "store/store_persistence.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "store/session_codec.h"

namespace sinkserve::store {
namespace {

// At most this many writes, or this many blob bytes, in one transaction.
constexpr size_t kMaxBatchWrites = 256;
constexpr size_t kMaxBatchBytes = size_t{256} << 20;
// How often the writer drops expired sessions (SQLite).
constexpr auto kSweepInterval = std::chrono::seconds(60);

}  // namespace

absl::StatusOr<StoreSpec> ParseStoreSpec(const std::string& spec, double ttl_seconds) {
  StoreSpec out;
  absl::string_view rest = spec;
  if (absl::ConsumePrefix(&rest, "sqlite:")) {
    if (rest.empty()) return absl::InvalidArgumentError("--session-store sqlite:DIR needs a directory");
    const std::string dir(rest);
    out.connect = [dir, ttl_seconds] { return OpenSqliteStore(dir, ttl_seconds); };
    out.description = absl::StrFormat("SQLite in %s", dir);
    return out;
  }
  if (absl::ConsumePrefix(&rest, "redis://")) {
    std::string host;
    absl::string_view port_text;
    if (absl::ConsumePrefix(&rest, "[")) {
      const size_t close = rest.find(']');
      if (close == absl::string_view::npos) return absl::InvalidArgumentError("--session-store: unclosed [ in the address");
      host = std::string(rest.substr(0, close));
      rest.remove_prefix(close + 1);
      if (!absl::ConsumePrefix(&rest, ":")) return absl::InvalidArgumentError("--session-store redis://[HOST]:PORT needs a port");
      port_text = rest;
    } else {
      const size_t colon = rest.rfind(':');
      if (colon == absl::string_view::npos) return absl::InvalidArgumentError("--session-store redis://HOST:PORT needs a port");
      host = std::string(rest.substr(0, colon));
      port_text = rest.substr(colon + 1);
    }
    int port = 0;
    if (host.empty() || !absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrFormat("--session-store: '%s' is not redis://HOST:PORT", spec.substr(0, 200)));
    }
    out.connect = [host, port, ttl_seconds] { return OpenRedisStore(host, port, ttl_seconds); };
    out.shared = true;
    out.description = absl::StrFormat("Redis at %s:%d", host, port);
    return out;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "--session-store '%s' is neither sqlite:DIR nor redis://HOST:PORT", spec.substr(0, 200)));
}

absl::StatusOr<std::unique_ptr<StorePersistence>> StorePersistence::Create(const StoreSpec& spec, double ttl_seconds) {
  if (!(ttl_seconds > 0)) return absl::InvalidArgumentError("the session store's TTL must be > 0 seconds");
  absl::StatusOr<std::unique_ptr<SessionStore>> writer = spec.connect();
  if (!writer.ok()) return writer.status();
  absl::StatusOr<std::unique_ptr<SessionStore>> reader = spec.connect();
  if (!reader.ok()) return reader.status();
  return std::unique_ptr<StorePersistence>(
      new StorePersistence(*std::move(writer), *std::move(reader), spec.shared, ttl_seconds));
}

StorePersistence::StorePersistence(std::unique_ptr<SessionStore> writer, std::unique_ptr<SessionStore> reader,
                                   bool shared, double ttl_seconds)
    : writer_store_(std::move(writer)), reader_store_(std::move(reader)), shared_(shared), ttl_seconds_(ttl_seconds) {
  writer_ = std::thread([this] { WriterLoop(); });
  reader_ = std::thread([this] { ReaderLoop(); });
}

StorePersistence::~StorePersistence() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  write_cv_.notify_all();
  read_cv_.notify_all();
  applied_cv_.notify_all();
  writer_.join();
  reader_.join();
}

void StorePersistence::Save(std::shared_ptr<const SessionState> state, std::function<void(absl::Status)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Write w{++seq_, state->id, state, std::move(done), nullptr};
    unapplied_[w.id] = {w.seq, w.state};
    writes_.push_back(std::move(w));
  }
  write_cv_.notify_one();
}

void StorePersistence::Remove(std::string id, std::function<void(absl::StatusOr<bool>)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Write w{++seq_, std::move(id), nullptr, nullptr, std::move(done)};
    unapplied_[w.id] = {w.seq, nullptr};
    writes_.push_back(std::move(w));
  }
  write_cv_.notify_one();
}

void StorePersistence::Load(std::string id, uint64_t known_revision,
                            std::function<void(absl::StatusOr<Loaded>)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    reads_.push_back({std::move(id), known_revision, std::move(done)});
  }
  read_cv_.notify_one();
}

void StorePersistence::WriterLoop() {
  auto last_sweep = std::chrono::steady_clock::now();
  while (true) {
    std::vector<Write> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      write_cv_.wait_for(lock, kSweepInterval, [&] { return stop_ || !writes_.empty(); });
      if (writes_.empty() && stop_) return;  // every queued write is done
      size_t bytes = 0;
      while (!writes_.empty() && batch.size() < kMaxBatchWrites && bytes < kMaxBatchBytes) {
        if (writes_.front().state) bytes += writes_.front().state->kv.size();
        batch.push_back(std::move(writes_.front()));
        writes_.pop_front();
      }
    }
    if (!batch.empty()) {
      std::vector<StoreWrite> ops(batch.size());
      for (size_t i = 0; i < batch.size(); ++i) {
        ops[i].id = batch[i].id;
        if (batch[i].state) {
          ops[i].revision = batch[i].state->revision;
          const SessionState::Staging& staging = batch[i].state->staging;
          ops[i].stage = staging.stage;
          ops[i].piece = staging.piece;
          ops[i].pieces = staging.pieces;
          // A delta is checked against the revision the store holds, not
          // the last piece it chains on; a piece is not checked.
          ops[i].base_revision = staging.piece ? 0 : staging.stored_revision;
          ops[i].blob = EncodeSession(*batch[i].state);
        }
      }
      writer_store_->Apply(absl::MakeSpan(ops));
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const Write& w : batch) {
          auto it = unapplied_.find(w.id);
          if (it != unapplied_.end() && it->second.first == w.seq) unapplied_.erase(it);
        }
      }
      applied_cv_.notify_all();
      for (size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].saved) batch[i].saved(ops[i].status);
        if (batch[i].removed) {
          batch[i].removed(ops[i].status.ok() ? absl::StatusOr<bool>(ops[i].existed)
                                              : absl::StatusOr<bool>(ops[i].status));
        }
      }
    }
    if (std::chrono::steady_clock::now() - last_sweep >= kSweepInterval) {
      writer_store_->Sweep();
      last_sweep = std::chrono::steady_clock::now();
    }
  }
}

void StorePersistence::ReaderLoop() {
  while (true) {
    Read read;
    std::shared_ptr<const SessionState> queued;
    bool queued_removal = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      read_cv_.wait(lock, [&] { return stop_ || !reads_.empty(); });
      if (stop_) {
        // Answer what is still waiting, so no caller waits forever.
        for (Read& r : reads_) r.done(absl::UnavailableError("the session store is shutting down"));
        reads_.clear();
        return;
      }
      read = std::move(reads_.front());
      reads_.pop_front();
      // A queued delta is not a whole session: wait until it is in the store.
      auto delta_queued = [&] {
        auto it = unapplied_.find(read.id);
        return it != unapplied_.end() && it->second.second != nullptr && it->second.second->base_revision != 0;
      };
      applied_cv_.wait(lock, [&] { return stop_ || !delta_queued(); });
      if (stop_) {
        read.done(absl::UnavailableError("the session store is shutting down"));
        continue;
      }
      if (auto it = unapplied_.find(read.id); it != unapplied_.end()) {
        queued = it->second.second;
        queued_removal = queued == nullptr;
      }
    }
    if (queued_removal) {
      read.done(Loaded{});
    } else if (queued != nullptr) {
      Loaded loaded;
      loaded.kind = queued->revision == read.known_revision ? Loaded::Kind::kUnchanged : Loaded::Kind::kFound;
      if (loaded.kind == Loaded::Kind::kFound) loaded.state = *queued;
      read.done(std::move(loaded));
    } else {
      read.done(ReadFromStore(read));
    }
  }
}

absl::StatusOr<SessionPersistence::Loaded> StorePersistence::ReadFromStore(const Read& read) {
  absl::StatusOr<StoreRead> got = reader_store_->Get(read.id, read.known_revision);
  if (!got.ok()) return got.status();
  Loaded loaded;
  if (!got->found) return loaded;
  if (got->unchanged) {
    loaded.kind = Loaded::Kind::kUnchanged;
    return loaded;
  }
  absl::StatusOr<SessionState> state =
      got->deltas.size() > kMaxDeltas
          ? absl::DataLossError(absl::StrFormat("it has %d deltas, over the bound of %d", got->deltas.size(), kMaxDeltas))
          : DecodeWithDeltas(got->blob, got->deltas);
  if (!state.ok()) {
    return absl::DataLossError(absl::StrFormat("session '%s': %s; delete it and open a new one", read.id,
                                               state.status().message()));
  }
  loaded.kind = Loaded::Kind::kFound;
  loaded.state = *std::move(state);
  return loaded;
}

}  // namespace sinkserve::store
