// The engine's session store (engine/session_state.h) over a SessionStore:
// one writer thread and one reader thread, each with its own connection, so
// neither the engine nor a slow load waits for the other.
//   - Saves are encoded (store/session_codec.h) and applied on the writer
//     thread, all queued writes in one transaction (group commit); a save's
//     `done` runs once it is durable.
//   - Loads read your writes: a load of an id with a full save or removal
//     still queued answers from that, not from the store; one with a delta
//     queued waits until it is applied, then reads the store (which
//     applies the deltas to the full blob, store::ApplyDelta).
//   - The destructor finishes every queued write before it returns.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "engine/session_state.h"
#include "store/session_store.h"

namespace sinkserve::store {

class StorePersistence final : public SessionPersistence {
 public:
  // Opens the writer's and the reader's connections; an error when either fails.
  static absl::StatusOr<std::unique_ptr<StorePersistence>> Create(const StoreSpec& spec, double ttl_seconds);
  ~StorePersistence() override;

  void Save(std::shared_ptr<const SessionState> state, std::function<void(absl::Status)> done) override;
  void Load(std::string id, uint64_t known_revision, std::function<void(absl::StatusOr<Loaded>)> done) override;
  void Remove(std::string id, std::function<void(absl::StatusOr<bool>)> done) override;
  bool shared() const override { return shared_; }
  double ttl_seconds() const override { return ttl_seconds_; }

 private:
  StorePersistence(std::unique_ptr<SessionStore> writer, std::unique_ptr<SessionStore> reader, bool shared,
                   double ttl_seconds);

  struct Write {
    uint64_t seq = 0;
    std::string id;
    std::shared_ptr<const SessionState> state;  // null: a removal
    std::function<void(absl::Status)> saved;
    std::function<void(absl::StatusOr<bool>)> removed;
  };
  struct Read {
    std::string id;
    uint64_t known_revision = 0;
    std::function<void(absl::StatusOr<Loaded>)> done;
  };
  void WriterLoop();
  void ReaderLoop();
  absl::StatusOr<Loaded> ReadFromStore(const Read& read);

  const std::unique_ptr<SessionStore> writer_store_;
  const std::unique_ptr<SessionStore> reader_store_;
  const bool shared_;
  const double ttl_seconds_;

  std::mutex mu_;
  std::condition_variable write_cv_;
  std::condition_variable read_cv_;
  std::condition_variable applied_cv_;  // a batch of writes was applied
  std::deque<Write> writes_;
  std::deque<Read> reads_;
  // The latest queued write of each id not yet applied (seq, state; null
  // state: a removal), which loads answer from.
  absl::flat_hash_map<std::string, std::pair<uint64_t, std::shared_ptr<const SessionState>>> unapplied_;
  uint64_t seq_ = 0;
  bool stop_ = false;
  std::thread writer_;
  std::thread reader_;
};

}  // namespace sinkserve::store
