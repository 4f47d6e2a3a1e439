// Durable sessions (#13): the blob codec, and a session saved by one server
// and restored by another through SQLite and through Redis, continuing token
// for token as if it had never stopped; damaged blobs and another model's
// blobs give a clear error or the documented replay, never a crash.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include <zlib.h>

#include "sinkserve/store/v1/session_state.pb.h"
#include "store/session_codec.h"
#include "store/store_persistence.h"
#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

SessionState SampleState() {
  SessionState s;
  s.id = "0123456789abcdef0123456789abcdef";
  s.client = "key#2";
  s.cache = {CachePolicy::kSinkWindow, 4, 60};
  s.geometry = {4, 60, 123};
  s.chat_template = "llama2";
  s.system_prompt = "be brief";
  s.preamble = {1, 2};
  s.started = true;
  s.turns = 7;
  s.consumed = 1000;
  s.dropped = 5;
  s.carry = {42};
  s.recent = {3, 4, 5};
  s.last_turn = {7, "the end", false, 99, true, FinishReason::kStop};
  s.conversation_hash = 0xfeedfacecafebeefull;
  s.conversation_messages = 14;
  s.conversation_known = true;
  s.slot_tokens.assign(127, 9);
  s.fingerprint = "sha256:abc|cpu:f32";
  s.kv = std::string(4096, '\x5a');
  s.revision = 0x1234567890abcdefull;
  s.saved_unix_ms = 1700000000000;
  return s;
}

TEST(DurableTest, CodecRoundTripsAndEveryDamageIsAClearError) {
  const SessionState s = SampleState();
  const std::string blob = store::EncodeSession(s);
  absl::StatusOr<SessionState> back = store::DecodeSession(blob);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, s.id);
  EXPECT_EQ(back->client, s.client);
  EXPECT_EQ(back->geometry.ring, 123);
  EXPECT_EQ(back->consumed, 1000);
  EXPECT_EQ(back->dropped, 5);
  EXPECT_EQ(back->carry, s.carry);
  EXPECT_EQ(back->slot_tokens, s.slot_tokens);
  EXPECT_EQ(back->last_turn.text, "the end");
  EXPECT_EQ(back->last_turn.reason, FinishReason::kStop);
  EXPECT_EQ(back->conversation_hash, s.conversation_hash);
  EXPECT_EQ(back->kv, s.kv);
  EXPECT_EQ(back->revision, s.revision);

  auto expect_loss = [](const std::string& damaged, const std::string& says) {
    absl::StatusOr<SessionState> r = store::DecodeSession(damaged);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status();
  };
  expect_loss(blob.substr(0, blob.size() - 1), "truncated");
  expect_loss(blob.substr(0, 10), "truncated");
  expect_loss("", "truncated");
  std::string flipped = blob;
  flipped[blob.size() - 10] ^= 1;  // in the K/V bytes
  expect_loss(flipped, "checksum");
  flipped = blob;
  flipped[store::kSessionHeaderBytes + 3] ^= 1;  // in the metadata
  expect_loss(flipped, "checksum");
  std::string version = blob;
  version[4] = 3;
  expect_loss(version, "format version 3");
  std::string magic = blob;
  magic[0] = 'X';
  expect_loss(magic, "magic");
  std::string huge = blob;
  for (int i = 8; i < 16; ++i) huge[i] = '\xff';
  expect_loss(huge, "bounds");

  // Random damage anywhere: an error or (a byte the checks cannot see) a
  // value, never a crash.
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string damaged = blob;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) damaged[rng() % damaged.size()] = static_cast<char>(rng());
    if (rng() % 3 == 0) damaged.resize(rng() % damaged.size());
    (void)store::DecodeSession(damaged);
  }
}

// A blob whose metadata is well formed and correctly checksummed but lists
// delta slot ranges as an odd number of integers (a broken or hostile
// writer) is refused by name, not read past its end.
TEST(DurableTest, DeltaSlotRangesThatAreNotPairsAreRefused) {
  SessionState s = SampleState();
  s.delta_slots = {{0, 2}};
  s.base_revision = 7;
  const std::string blob = store::EncodeSession(s);
  uint64_t meta_bytes = 0;
  for (int i = 0; i < 8; ++i) meta_bytes |= uint64_t{static_cast<uint8_t>(blob[8 + i])} << (8 * i);
  store::v1::SessionMeta meta;
  ASSERT_TRUE(meta.ParseFromString(blob.substr(store::kSessionHeaderBytes, meta_bytes)));
  meta.add_delta_slots(3);  // three integers: not pairs
  const std::string odd_meta = meta.SerializeAsString();
  std::string odd = blob.substr(0, store::kSessionHeaderBytes) + odd_meta + blob.substr(store::kSessionHeaderBytes + meta_bytes);
  for (int i = 0; i < 8; ++i) odd[8 + i] = static_cast<char>(uint64_t{odd_meta.size()} >> (8 * i));
  const uint32_t crc = static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(odd_meta.data()), static_cast<uInt>(odd_meta.size())));
  for (int i = 0; i < 4; ++i) odd[24 + i] = static_cast<char>(crc >> (8 * i));
  ASSERT_TRUE(store::DecodeSession(blob).ok());
  const absl::StatusOr<SessionState> r = store::DecodeSession(odd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("not pairs"), std::string::npos) << r.status();
}

// A delta brings a full state forward: its slots overwrite the base's (the
// K/V grows as the cache fills), everything else is the delta's; one that
// does not fit is a DATA_LOSS naming why, and leaves the base alone.
TEST(DurableTest, DeltasApplyOnTheirBaseAndMisfitsAreClearErrors) {
  // rows 2, 3 bytes a slot; the base has 4 slots written (a cache of 4 + 8).
  SessionState base = SampleState();
  base.geometry = {2, 8, 8};
  base.cache.sinks = 2;
  base.cache.window = 8;
  base.consumed = 4;
  base.kv_rows = 2;
  base.kv_slot_bytes = 3;
  base.slot_tokens = {10, 11, 12, 13};
  base.kv = "aaabbbcccdddAAABBBCCCDDD";  // row 0: slots 0..3, then row 1
  SessionState delta = base;
  delta.base_revision = base.revision;
  delta.revision = base.revision + 1;
  delta.consumed = 6;  // wrote slots 4 and 5, and rewrote slot 1 (say)
  delta.turns = base.turns + 1;
  delta.delta_slots = {{1, 1}, {4, 2}};
  delta.slot_tokens = {21, 14, 15};
  delta.kv = "xxx" "XXX" "eeefff" "EEEFFF";  // range by range, each row by row
  delta.carry = {77};

  const std::string delta_blob = store::EncodeSession(delta);
  absl::StatusOr<SessionState> decoded = store::DecodeSession(delta_blob);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->base_revision, delta.base_revision);
  ASSERT_EQ(decoded->delta_slots.size(), 2u);
  EXPECT_EQ(decoded->delta_slots[1].first, 4);
  EXPECT_EQ(decoded->delta_slots[1].count, 2);

  SessionState merged = base;
  ASSERT_TRUE(store::ApplyDelta(&merged, *decoded).ok());
  EXPECT_EQ(merged.kv, "aaaxxxcccdddeeefff" "AAAXXXCCCDDDEEEFFF");
  EXPECT_EQ(merged.slot_tokens, (std::vector<int32_t>{10, 21, 12, 13, 14, 15}));
  EXPECT_EQ(merged.consumed, 6);
  EXPECT_EQ(merged.turns, base.turns + 1);
  EXPECT_EQ(merged.carry, std::vector<int32_t>{77});
  EXPECT_EQ(merged.revision, delta.revision);
  EXPECT_EQ(merged.base_revision, 0u);
  EXPECT_TRUE(merged.delta_slots.empty());

  auto expect_misfit = [&](SessionState bad, const std::string& says) {
    SessionState target = base;
    const absl::Status status = store::ApplyDelta(&target, std::move(bad));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << says;
    EXPECT_NE(status.message().find(says), std::string::npos) << status;
    EXPECT_EQ(target.kv, base.kv) << "a refused delta must leave the base alone";
  };
  SessionState bad = delta;
  bad.base_revision = base.revision - 1;
  expect_misfit(bad, "chain is broken");
  bad = delta;
  bad.delta_slots = {{1, 1}, {5, 2}};  // slot 6 is past what 6 tokens wrote
  expect_misfit(bad, "writes slots");
  bad = delta;
  bad.delta_slots = {{1, 1}, {4, 1}, {0, 1}};  // slot 5 is new and left unwritten
  bad.slot_tokens = {1, 2, 3};
  expect_misfit(bad, "unwritten");
  bad = delta;
  bad.kv.pop_back();
  expect_misfit(bad, "disagree");
  bad = delta;
  bad.fingerprint = "another model";
  expect_misfit(bad, "does not fit");
  bad = delta;
  bad.consumed = 3;
  expect_misfit(bad, "does not fit");
  bad = delta;
  bad.delta_slots = {{-1, 1}, {4, 2}};
  expect_misfit(bad, "writes slots");
}

// A write of `blob` (a removal without one) as the store's writer makes it.
store::StoreWrite Put(std::string id, uint64_t revision, std::optional<std::string> blob,
                      uint64_t base_revision = 0) {
  store::StoreWrite w;
  w.id = std::move(id);
  w.revision = revision;
  w.blob = std::move(blob);
  w.base_revision = base_revision;
  return w;
}

// A free loopback TCP port.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// A redis-server child on a loopback port, without persistence; stopped
// with the object.
class RedisServer {
 public:
  RedisServer() {
    if (access("/usr/bin/redis-server", X_OK) != 0) return;
    port_ = FreePort();
    pid_ = fork();
    if (pid_ == 0) {
      const std::string port = std::to_string(port_);
      execl("/usr/bin/redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
      _exit(127);
    }
    // Ready once it accepts a connection.
    for (int i = 0; i < 100; ++i) {
      if (store::OpenRedisStore("127.0.0.1", port_, 60).ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    Stop();
  }
  ~RedisServer() { Stop(); }
  bool ok() const { return pid_ > 0; }
  std::string spec() const { return absl::StrFormat("redis://127.0.0.1:%d", port_); }

 private:
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  int port_ = 0;
  pid_t pid_ = -1;
};

std::unique_ptr<store::StorePersistence> OpenStore(const std::string& spec) {
  absl::StatusOr<store::StoreSpec> parsed = store::ParseStoreSpec(spec, 3600);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<store::StorePersistence>> opened = store::StorePersistence::Create(*parsed, 3600);
  EXPECT_TRUE(opened.ok()) << opened.status();
  return opened.ok() ? *std::move(opened) : nullptr;
}

// A store in front of another: loads and removals go through; saves are
// the subclass's.
class StoreInFront : public SessionPersistence {
 public:
  explicit StoreInFront(SessionPersistence* inner) : inner_(inner) {}
  void Load(std::string id, uint64_t known, std::function<void(absl::StatusOr<Loaded>)> done) override {
    inner_->Load(std::move(id), known, std::move(done));
  }
  void Remove(std::string id, std::function<void(absl::StatusOr<bool>)> done) override {
    inner_->Remove(std::move(id), std::move(done));
  }
  bool shared() const override { return inner_->shared(); }
  double ttl_seconds() const override { return inner_->ttl_seconds(); }

 protected:
  SessionPersistence* inner_;
};

// A store that counts the saves going through it: full ones, deltas at
// turns' ends, pieces of running turns, and deltas the store refused.
class CountingStore final : public StoreInFront {
 public:
  using StoreInFront::StoreInFront;
  void Save(std::shared_ptr<const SessionState> state, std::function<void(absl::Status)> done) override {
    const bool delta = state->base_revision != 0;
    (state->staging.piece ? pieces : delta ? deltas : fulls).fetch_add(1);
    inner_->Save(std::move(state), [this, delta, done = std::move(done)](absl::Status status) {
      if (delta && !status.ok()) refused_deltas.fetch_add(1);
      done(status);
    });
  }

  std::atomic<int> fulls{0}, deltas{0}, pieces{0}, refused_deltas{0};
};

// What a load makes of a raw read: the full blob with its deltas applied.
absl::StatusOr<SessionState> Compose(const store::StoreRead& read) {
  return store::DecodeWithDeltas(read.blob, read.deltas);
}

EngineConfig WithStore(SessionPersistence* store, const std::string& fingerprint = "stories260K-test") {
  EngineConfig config;
  config.store = store;
  config.model_fingerprint = fingerprint;
  config.store_piece_bytes = 16 << 10;  // stories260K makes 1.25 KiB a token: a piece every ~13 tokens
  return config;
}

v1::CacheConfig SmallWindow() {
  v1::CacheConfig cache;
  cache.set_sink_tokens(4);
  cache.set_window_tokens(60);
  return cache;
}

// The conversation every restore test has: five raw greedy turns of 100
// tokens on a 4 + 60 cache (about 540 tokens, so the window wraps eight
// times), then the turns that are compared: 200 greedy tokens, then 200
// sampled at temperature 1 with a fixed seed (sampling notices a logit
// that greedy decoding would not).
const std::vector<std::string> kTurns = {"Once upon a time", " Then the dog", " The sun was", " Lily said",
                                         " One day"};
constexpr uint32_t kTurnTokens = 100;
constexpr uint32_t kLastTokens = 200;
const char kLastPrompt[] = " At last";
const char kSampledPrompt[] = " And then";

// Runs `texts` on stream `c` (opened), each a raw greedy turn of `tokens`
// ignoring EOS; returns every turn's ids (empty on failure).
std::vector<std::vector<uint32_t>> RunTurns(RawStream& c, const std::vector<std::string>& texts, uint32_t tokens,
                                            std::vector<v1::TurnDone>* dones = nullptr) {
  std::vector<std::vector<uint32_t>> all;
  for (const std::string& text : texts) {
    std::vector<uint32_t> ids;
    v1::TurnDone done;
    if (!c.Turn(text, tokens, /*ignore_eos=*/true) || !c.ReadDone(&done, &ids)) return {};
    if (dones != nullptr) dones->push_back(done);
    all.push_back(std::move(ids));
  }
  return all;
}

// The compared turns on `c`: the greedy ids, then the sampled ones.
std::vector<uint32_t> RunLast(RawStream& c) {
  auto greedy = RunTurns(c, {kLastPrompt}, kLastTokens);
  if (greedy.empty()) return {};
  v1::ChatRequest r;
  v1::Turn* t = r.mutable_turn();
  t->set_text(kSampledPrompt);
  t->set_raw(true);
  t->set_max_new_tokens(kLastTokens);
  t->set_ignore_eos(true);
  t->mutable_sampling()->set_temperature(1.0f);
  t->mutable_sampling()->set_top_k(0);
  t->mutable_sampling()->set_top_p(1.0f);
  t->mutable_sampling()->set_min_p(0.0f);
  t->mutable_sampling()->set_seed(7);
  std::vector<uint32_t> sampled;
  v1::TurnDone done;
  if (!c.Write(r) || !c.ReadDone(&done, &sampled) || sampled.size() != kLastTokens) return {};
  std::vector<uint32_t> all = greedy[0];
  all.insert(all.end(), sampled.begin(), sampled.end());
  return all;
}

// The uninterrupted reference: the five turns and the last on one server
// without a store.
std::vector<uint32_t> ReferenceLastTurn(size_t turns = kTurns.size()) {
  TestServer s;
  if (!s.ok()) return {};
  RawStream c(s.stub());
  std::string id;
  if (!c.OpenAttached(&id, SmallWindow())) return {};
  const std::vector<std::string> first(kTurns.begin(), kTurns.begin() + static_cast<std::ptrdiff_t>(turns));
  if (RunTurns(c, first, kTurnTokens).size() != turns) return {};
  std::vector<uint32_t> last = RunLast(c);
  c.Finish();
  return last;
}

// Five turns on a server with `store`; returns the session id.
std::string SaveConversation(SessionPersistence* store, const std::string& fingerprint = "stories260K-test",
                             uint64_t* length = nullptr) {
  TestServer s(WithStore(store, fingerprint));
  EXPECT_TRUE(s.ok()) << s.error();
  RawStream c(s.stub());
  std::string id;
  EXPECT_TRUE(c.OpenAttached(&id, SmallWindow()));
  std::vector<v1::TurnDone> dones;
  EXPECT_EQ(RunTurns(c, kTurns, kTurnTokens, &dones).size(), kTurns.size());
  for (const v1::TurnDone& d : dones) EXPECT_TRUE(d.saved()) << "turn " << d.turn() << " was not saved";
  if (!dones.empty()) {
    EXPECT_GT(dones.back().usage().evicted_tokens(), 7 * 60u) << "the window should have wrapped several times";
    if (length != nullptr) *length = dones.back().usage().session_tokens();
  }
  c.Finish();
  return id;
}

// Opens `id` on a fresh server over `store` and runs the last turn.
struct Resumed {
  v1::Opened opened;
  std::vector<uint32_t> ids;
  grpc::Status status;
};
Resumed ResumeAndRunLast(SessionPersistence* store, const std::string& id,
                         const std::string& fingerprint = "stories260K-test") {
  Resumed out;
  TestServer s(WithStore(store, fingerprint));
  EXPECT_TRUE(s.ok()) << s.error();
  RawStream c(s.stub());
  v1::ChatResponse r;
  if (!c.Open(id) || !c.stream->Read(&r) || !r.has_opened()) {
    out.status = c.Finish();
    return out;
  }
  out.opened = r.opened();
  out.ids = RunLast(c);
  out.status = c.Finish();
  return out;
}

void ExpectExactRestore(const std::string& spec) {
  const std::vector<uint32_t> reference = ReferenceLastTurn();
  ASSERT_EQ(reference.size(), 2 * kLastTokens);
  std::string id;
  {
    std::unique_ptr<store::StorePersistence> store = OpenStore(spec);
    ASSERT_NE(store, nullptr);
    CountingStore counting(store.get());
    id = SaveConversation(&counting);
    // Turns of ~105 tokens on a 4 + 60 cache (ring 123): the store holds a
    // full blob and deltas on it (pieces of each turn, committed by its
    // end), which the restore below applies.
    EXPECT_GE(counting.deltas.load(), 5) << "the turns should have been saved as deltas";
    EXPECT_GE(counting.pieces.load(), 5) << "the running turns should have been saved in pieces";
    EXPECT_GE(counting.fulls.load(), 2) << "past four caches of deltas, a full save should have compacted them";
    EXPECT_EQ(counting.refused_deltas.load(), 0);
  }
  // A new server process in all but name: new store connections, new
  // engine, new backend, the session only in the store.
  std::unique_ptr<store::StorePersistence> store = OpenStore(spec);
  ASSERT_NE(store, nullptr);
  const Resumed resumed = ResumeAndRunLast(store.get(), id);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_TRUE(resumed.opened.resumed());
  EXPECT_EQ(resumed.opened.restored(), v1::RESTORE_KIND_EXACT) << resumed.opened.restore_note();
  EXPECT_EQ(resumed.opened.last_turn().turn(), kTurns.size());
  EXPECT_EQ(resumed.ids, reference) << "the restored session did not continue token for token";
}

TEST(DurableTest, ExactRestoreThroughSqlite) {
  REQUIRE_SHARED(kModel);
  ScopedTempDir temp;
  const std::string dir = temp.path().string() + "/store";
  ExpectExactRestore("sqlite:" + dir);
}

TEST(DurableTest, ExactRestoreThroughRedis) {
  REQUIRE_SHARED(kModel);
  RedisServer redis;
  if (!redis.ok()) GTEST_SKIP() << "redis-server is not installed (apt-get install redis-server)";
  ExpectExactRestore(redis.spec());
}

TEST(DurableTest, AnotherModelReplaysTheVisibleTokens) {
  REQUIRE_SHARED(kModel);
  ScopedTempDir temp;
  const std::string dir = temp.path().string() + "/store";
  std::unique_ptr<store::StorePersistence> store = OpenStore("sqlite:" + dir);
  ASSERT_NE(store, nullptr);
  uint64_t length = 0;
  const std::string id = SaveConversation(store.get(), "stories260K-test", &length);
  const Resumed resumed = ResumeAndRunLast(store.get(), id, "another-model");
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(resumed.opened.restored(), v1::RESTORE_KIND_REPLAYED);
  EXPECT_NE(resumed.opened.restore_note().find("replaying its 64 visible tokens"), std::string::npos)
      << resumed.opened.restore_note();
  EXPECT_NE(resumed.opened.restore_note().find("another model"), std::string::npos);
  EXPECT_EQ(resumed.ids.size(), 2 * kLastTokens);
  EXPECT_EQ(resumed.opened.position(), length) << "a replay keeps the conversation's length";
  // Replayed keys were computed over other windows than the originals: the
  // same conversation recomputed, not the same cache. stories260K hardly
  // notices (printed, not judged).
  const std::vector<uint32_t> reference = ReferenceLastTurn();
  ASSERT_EQ(reference.size(), resumed.ids.size());
  size_t same = 0;
  while (same < reference.size() && reference[same] == resumed.ids[same]) ++same;
  std::printf("replayed restore: the first %zu of %zu tokens equal the uninterrupted run's\n", same, reference.size());
}

// The conversation saved in a SQLite store in `dir`: its id, its blob, and a
// connection to the store to write damaged blobs with.
void SaveInSqlite(const std::string& dir, std::string* id, std::string* blob,
                  std::unique_ptr<store::SessionStore>* raw) {
  {
    std::unique_ptr<store::StorePersistence> store = OpenStore("sqlite:" + dir);
    ASSERT_NE(store, nullptr);
    *id = SaveConversation(store.get());
  }
  absl::StatusOr<std::unique_ptr<store::SessionStore>> opened = store::OpenSqliteStore(dir, 3600);
  ASSERT_TRUE(opened.ok()) << opened.status();
  *raw = *std::move(opened);
  absl::StatusOr<store::StoreRead> read = (*raw)->Get(*id, 0);
  ASSERT_TRUE(read.ok() && read->found);
  absl::StatusOr<SessionState> state = Compose(*read);
  ASSERT_TRUE(state.ok()) << state.status();
  *blob = store::EncodeSession(*state);
}

// The exact comparison sees the cache: the same stored session with its
// values zeroed (checksums made anew) restores "exactly" and continues
// differently.
TEST(DurableTest, ExactRestoreContinuesFromTheStoredCacheBytes) {
  REQUIRE_SHARED(kModel);
  ScopedTempDir temp;
  const std::string dir = temp.path().string() + "/store";
  std::string id, blob;
  std::unique_ptr<store::SessionStore> raw;
  ASSERT_NO_FATAL_FAILURE(SaveInSqlite(dir, &id, &blob, &raw));
  absl::StatusOr<SessionState> state = store::DecodeSession(blob);
  ASSERT_TRUE(state.ok()) << state.status();
  std::fill(state->kv.begin() + state->kv.size() / 2, state->kv.end(), '\0');  // every value
  store::StoreWrite w = Put(id, state->revision, store::EncodeSession(*state));
  raw->Apply(absl::MakeSpan(&w, 1));
  ASSERT_TRUE(w.status.ok()) << w.status;
  std::unique_ptr<store::StorePersistence> store = OpenStore("sqlite:" + dir);
  ASSERT_NE(store, nullptr);
  const Resumed resumed = ResumeAndRunLast(store.get(), id);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(resumed.opened.restored(), v1::RESTORE_KIND_EXACT);
  EXPECT_NE(resumed.ids, ReferenceLastTurn());
}

TEST(DurableTest, DamagedBlobsEndTheOpenWithAClearErrorAndTheServerGoesOn) {
  REQUIRE_SHARED(kModel);
  ScopedTempDir temp;
  const std::string dir = temp.path().string() + "/store";
  std::string id, blob;
  std::unique_ptr<store::SessionStore> raw;
  ASSERT_NO_FATAL_FAILURE(SaveInSqlite(dir, &id, &blob, &raw));
  const std::string good = blob;
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  std::string version = good;
  version[4] = 9;
  struct Case {
    std::string blob, says;
  } cases[] = {{good.substr(0, good.size() / 3), "truncated"},
               {flipped, "checksum"},
               {version, "format version 9"},
               {"not a session", "truncated"}};
  for (const Case& c : cases) {
    store::StoreWrite w = Put(id, 1, c.blob);
    raw->Apply(absl::MakeSpan(&w, 1));
    ASSERT_TRUE(w.status.ok()) << w.status;
    std::unique_ptr<store::StorePersistence> store = OpenStore("sqlite:" + dir);
    ASSERT_NE(store, nullptr);
    TestServer s(WithStore(store.get()));
    ASSERT_TRUE(s.ok()) << s.error();
    RawStream stream(s.stub());
    ASSERT_TRUE(stream.Open(id));
    const grpc::Status status = stream.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS) << c.says;
    EXPECT_NE(status.error_message().find(c.says), std::string::npos) << status.error_message();
    ExpectStillServes(s);
  }
}

TEST(DurableTest, DeleteRemovesTheStoredSessionAndIdleOnesStayResumable) {
  REQUIRE_SHARED(kModel);
  ScopedTempDir temp;
  const std::string dir = temp.path().string() + "/store";
  std::unique_ptr<store::StorePersistence> store = OpenStore("sqlite:" + dir);
  ASSERT_NE(store, nullptr);
  EngineConfig config = WithStore(store.get());
  config.session_ttl_seconds = 0;  // dropped from memory as soon as it is detached
  TestServer s(config);
  ASSERT_TRUE(s.ok()) << s.error();
  std::string id;
  {
    RawStream c(s.stub());
    ASSERT_TRUE(c.OpenAttached(&id, SmallWindow()));
    ASSERT_EQ(RunTurns(c, {"Once upon a time"}, 20).size(), 1u);
    c.Finish();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // past the TTL sweep
  EXPECT_EQ(s.engine()->stats().sessions, 0);
  grpc::Status status;
  const v1::SessionInfo info = GetSession(s, id, &status);  // from the store
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.turns(), 1u);
  {
    RawStream c(s.stub());
    v1::ChatResponse r;
    ASSERT_TRUE(c.Open(id) && c.stream->Read(&r) && r.has_opened());
    EXPECT_EQ(r.opened().restored(), v1::RESTORE_KIND_EXACT);
    c.Finish();
  }
  grpc::ClientContext context;
  v1::DeleteSessionRequest request;
  request.set_session_id(id);
  v1::DeleteSessionResponse response;
  ASSERT_TRUE(s.stub()->DeleteSession(&context, request, &response).ok());
  GetSession(s, id, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  absl::StatusOr<std::unique_ptr<store::SessionStore>> raw = store::OpenSqliteStore(dir, 3600);
  ASSERT_TRUE(raw.ok());
  absl::StatusOr<store::StoreRead> read = (*raw)->Get(id, 0);
  ASSERT_TRUE(read.ok());
  EXPECT_FALSE(read->found) << "the deleted session is still in the store";
}

// Stored sessions live --store-ttl after their last save, in both stores;
// a revision check reads only the revision.
void ExpectTtlAndRevisions(store::SessionStore& st) {
  store::StoreWrite w = Put("0123456789abcdef0123456789abcdef", 42, "blob");
  st.Apply(absl::MakeSpan(&w, 1));
  ASSERT_TRUE(w.status.ok()) << w.status;
  absl::StatusOr<store::StoreRead> r = st.Get(w.id, 42);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->found && r->unchanged && r->blob.empty());
  r = st.Get(w.id, 41);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->found && !r->unchanged && r->blob == "blob");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  st.Sweep();
  r = st.Get(w.id, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->found) << "the entry outlived its TTL";
  store::StoreWrite gone = Put(w.id, 0, std::nullopt);
  st.Apply(absl::MakeSpan(&gone, 1));
  EXPECT_TRUE(gone.status.ok());
  EXPECT_FALSE(gone.existed);
}

// Deltas in a store: kept in order on their base while the stored revision
// is theirs, refused (FAILED_PRECONDITION) once it is not, dropped by a
// full put and by a removal.
void ExpectDeltaChain(store::SessionStore& st) {
  const std::string id = "delta-chain";
  store::StoreWrite full = Put(id, 1, "full");
  store::StoreWrite d2 = Put(id, 2, "d2", 1);
  store::StoreWrite d3 = Put(id, 3, "d3", 2);
  std::vector<store::StoreWrite> batch = {full, d2, d3};
  st.Apply(absl::MakeSpan(batch));
  for (const store::StoreWrite& w : batch) ASSERT_TRUE(w.status.ok()) << w.status;
  absl::StatusOr<store::StoreRead> r = st.Get(id, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->blob, "full");
  EXPECT_EQ(r->deltas, (std::vector<std::string>{"d2", "d3"}));
  r = st.Get(id, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->unchanged) << "a delta moves the stored revision";

  store::StoreWrite stale = Put(id, 4, "d4", 2);  // another server saved revision 3 on top of 2
  st.Apply(absl::MakeSpan(&stale, 1));
  EXPECT_EQ(stale.status.code(), absl::StatusCode::kFailedPrecondition) << stale.status;
  store::StoreWrite orphan = Put("no-such-session", 2, "d", 1);
  st.Apply(absl::MakeSpan(&orphan, 1));
  EXPECT_EQ(orphan.status.code(), absl::StatusCode::kFailedPrecondition) << orphan.status;
  r = st.Get("no-such-session", 0);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->found);

  store::StoreWrite again = Put(id, 5, "full5");
  st.Apply(absl::MakeSpan(&again, 1));
  ASSERT_TRUE(again.status.ok());
  r = st.Get(id, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->blob, "full5");
  EXPECT_TRUE(r->deltas.empty()) << "a full put drops the deltas before it";

  // A turn's pieces: no load sees them until the delta at its end commits
  // them, all of them or nothing.
  auto piece = [&](uint64_t stage, std::string blob) {
    store::StoreWrite w = Put(id, 0, std::move(blob));
    w.stage = stage;
    w.piece = true;
    return w;
  };
  std::vector<store::StoreWrite> pieces = {piece(8, "stale"), piece(9, "p1"), piece(9, "p2")};
  st.Apply(absl::MakeSpan(pieces));
  for (const store::StoreWrite& w : pieces) ASSERT_TRUE(w.status.ok()) << w.status;
  r = st.Get(id, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->deltas.empty()) << "a load saw a piece of a turn that has not ended";
  store::StoreWrite short_commit = Put(id, 6, "end", 5);
  short_commit.stage = 9;
  short_commit.pieces = 3;  // only two are there
  st.Apply(absl::MakeSpan(&short_commit, 1));
  EXPECT_EQ(short_commit.status.code(), absl::StatusCode::kFailedPrecondition) << short_commit.status;
  store::StoreWrite commit = Put(id, 6, "end", 5);
  commit.stage = 9;
  commit.pieces = 2;
  st.Apply(absl::MakeSpan(&commit, 1));
  ASSERT_TRUE(commit.status.ok()) << commit.status;
  r = st.Get(id, 6);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->unchanged);
  r = st.Get(id, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->deltas, (std::vector<std::string>{"p1", "p2", "end"})) << "pieces commit in order, stale ones do not";
  // A full put drops its turn's pieces.
  store::StoreWrite p3 = piece(10, "p3");
  store::StoreWrite whole = Put(id, 7, "full7");
  whole.stage = 10;
  store::StoreWrite late = Put(id, 8, "late", 7);
  late.stage = 10;
  late.pieces = 1;
  std::vector<store::StoreWrite> dropped = {p3, whole, late};
  st.Apply(absl::MakeSpan(dropped));
  EXPECT_TRUE(dropped[0].status.ok() && dropped[1].status.ok());
  EXPECT_EQ(dropped[2].status.code(), absl::StatusCode::kFailedPrecondition) << dropped[2].status;
  r = st.Get(id, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->blob, "full7");
  EXPECT_TRUE(r->deltas.empty());

  store::StoreWrite d6 = Put(id, 8, "d8", 7);
  store::StoreWrite gone = Put(id, 0, std::nullopt);
  std::vector<store::StoreWrite> last = {d6, gone};
  st.Apply(absl::MakeSpan(last));
  EXPECT_TRUE(last[0].status.ok() && last[1].status.ok() && last[1].existed);
  store::StoreWrite revived = Put(id, 9, "full9");
  st.Apply(absl::MakeSpan(&revived, 1));
  r = st.Get(id, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->deltas.empty()) << "a removal drops the deltas too";
}

// Runs `check` on a fresh SQLite store, then on a fresh Redis (skipped
// with a message where redis-server is missing), both with `ttl_seconds`.
void CheckBothStores(double ttl_seconds, const std::function<void(store::SessionStore&)>& check) {
  ScopedTempDir temp;
  absl::StatusOr<std::unique_ptr<store::SessionStore>> sqlite =
      store::OpenSqliteStore(temp.path().string() + "/s", ttl_seconds);
  ASSERT_TRUE(sqlite.ok()) << sqlite.status();
  check(**sqlite);
  RedisServer redis;
  if (!redis.ok()) GTEST_SKIP() << "redis-server is not installed (apt-get install redis-server); SQLite checked";
  absl::StatusOr<store::StoreSpec> spec = store::ParseStoreSpec(redis.spec(), ttl_seconds);
  ASSERT_TRUE(spec.ok());
  absl::StatusOr<std::unique_ptr<store::SessionStore>> r = spec->connect();
  ASSERT_TRUE(r.ok()) << r.status();
  check(**r);
}

TEST(DurableTest, StoresKeepDeltasOnTheirBaseOnly) { CheckBothStores(60, ExpectDeltaChain); }

// The engine saves a turn as a delta on the revision it saved last; when
// another writer has moved the stored session meanwhile, the store refuses
// it and the engine saves the session whole, and the turn's done waits
// for that: nothing acknowledged is lost, and the restore is exact.
TEST(DurableTest, ADeltaWhoseBaseMovedIsSavedWhole) {
  REQUIRE_SHARED(kModel);
  ScopedTempDir temp;
  const std::string dir = temp.path().string() + "/store";
  std::string id;
  {
    std::unique_ptr<store::StorePersistence> store = OpenStore("sqlite:" + dir);
    ASSERT_NE(store, nullptr);
    CountingStore counting(store.get());
    TestServer s(WithStore(&counting));
    ASSERT_TRUE(s.ok()) << s.error();
    RawStream c(s.stub());
    ASSERT_TRUE(c.OpenAttached(&id, SmallWindow()));
    std::vector<v1::TurnDone> dones;
    ASSERT_EQ(RunTurns(c, {kTurns[0]}, kTurnTokens, &dones).size(), 1u);
    // Another writer: the same state under another revision.
    absl::StatusOr<std::unique_ptr<store::SessionStore>> raw = store::OpenSqliteStore(dir, 3600);
    ASSERT_TRUE(raw.ok()) << raw.status();
    absl::StatusOr<store::StoreRead> read = (*raw)->Get(id, 0);
    ASSERT_TRUE(read.ok() && read->found);
    absl::StatusOr<SessionState> state = Compose(*read);
    ASSERT_TRUE(state.ok()) << state.status();
    state->revision = 777;
    store::StoreWrite moved = Put(id, 777, store::EncodeSession(*state));
    (*raw)->Apply(absl::MakeSpan(&moved, 1));
    ASSERT_TRUE(moved.status.ok()) << moved.status;
    std::vector<std::string> rest(kTurns.begin() + 1, kTurns.end());
    ASSERT_EQ(RunTurns(c, rest, kTurnTokens, &dones).size(), rest.size());
    for (const v1::TurnDone& d : dones) EXPECT_TRUE(d.saved()) << "turn " << d.turn() << " was not saved";
    c.Finish();
    EXPECT_GE(counting.refused_deltas.load(), 1) << "the delta on the moved revision should have been refused";
  }
  std::unique_ptr<store::StorePersistence> store = OpenStore("sqlite:" + dir);
  ASSERT_NE(store, nullptr);
  const Resumed resumed = ResumeAndRunLast(store.get(), id);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(resumed.opened.restored(), v1::RESTORE_KIND_EXACT) << resumed.opened.restore_note();
  EXPECT_EQ(resumed.ids, ReferenceLastTurn()) << "the restored session did not continue token for token";
}

// A store whose turn-end saves can be held back, as if the server died
// after a running turn's pieces reached the store and before its end did.
class HoldingStore final : public StoreInFront {
 public:
  using StoreInFront::StoreInFront;
  void Save(std::shared_ptr<const SessionState> state, std::function<void(absl::Status)> done) override {
    if (state->staging.piece) {
      inner_->Save(std::move(state), [this, done = std::move(done)](absl::Status status) {
        if (status.ok()) pieces.fetch_add(1);
        done(status);
      });
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (hold_) {
        held_.push_back(std::move(done));
        return;
      }
    }
    inner_->Save(std::move(state), std::move(done));
  }

  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  // Stops holding; the held saves fail, as they would have with the server.
  void Release() {
    std::vector<std::function<void(absl::Status)>> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      hold_ = false;
      held.swap(held_);
    }
    for (auto& done : held) done(absl::UnavailableError("the test held this save back"));
  }

  std::atomic<int> pieces{0};

 private:
  std::mutex mu_;
  bool hold_ = false;
  std::vector<std::function<void(absl::Status)>> held_;
};

// A server dies mid-turn after some of the turn's pieces reached the store:
// another server restores the session as of its last finished turn (the
// pieces are invisible) and goes on exactly as one that never ran the turn.
TEST(DurableTest, PiecesOfATurnThatNeverEndedAreNotRestored) {
  REQUIRE_SHARED(kModel);
  ScopedTempDir temp;
  const std::string spec = "sqlite:" + temp.path().string() + "/store";
  std::unique_ptr<store::StorePersistence> store = OpenStore(spec);
  ASSERT_NE(store, nullptr);
  HoldingStore holding(store.get());
  std::string id;
  {
    TestServer s(WithStore(&holding));
    ASSERT_TRUE(s.ok()) << s.error();
    RawStream c(s.stub());
    ASSERT_TRUE(c.OpenAttached(&id, SmallWindow()));
    ASSERT_EQ(RunTurns(c, {kTurns[0], kTurns[1]}, kTurnTokens).size(), 2u);
    const int pieces_before = holding.pieces.load();
    holding.Hold();
    ASSERT_TRUE(c.Turn(kTurns[2], kTurnTokens, /*ignore_eos=*/true));
    // The turn's end is held as it is handed to the store; its pieces,
    // handed over before it, are counted once written.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while ((holding.held() == 0 || holding.pieces.load() == pieces_before) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_EQ(holding.held(), 1u) << "the third turn's end should be waiting for its save";
    EXPECT_GT(holding.pieces.load(), pieces_before) << "the third turn should have stored pieces";

    // Another server, on the store as the dead one left it.
    std::unique_ptr<store::StorePersistence> other = OpenStore(spec);
    ASSERT_NE(other, nullptr);
    const Resumed resumed = ResumeAndRunLast(other.get(), id);
    ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
    EXPECT_EQ(resumed.opened.restored(), v1::RESTORE_KIND_EXACT) << resumed.opened.restore_note();
    EXPECT_EQ(resumed.opened.last_turn().turn(), 2u) << "the restore should be as of the last finished turn";
    EXPECT_EQ(resumed.ids, ReferenceLastTurn(2)) << "the restored session did not continue token for token";
    holding.Release();
    c.context.TryCancel();
  }
}

TEST(DurableTest, StoresExpireEntriesAfterTheirTtl) { CheckBothStores(0.3, ExpectTtlAndRevisions); }

TEST(DurableTest, BadStoreSpecsAreClearErrors) {
  for (const char* spec : {"mysql://x", "redis://nohost", "redis://h:0", "redis://h:99999", "sqlite:", "redis://[::1"}) {
    absl::StatusOr<store::StoreSpec> parsed = store::ParseStoreSpec(spec, 60);
    EXPECT_FALSE(parsed.ok()) << spec;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
  // A Redis nobody listens on: an error at startup, not at the first save.
  absl::StatusOr<store::StoreSpec> parsed = store::ParseStoreSpec(absl::StrFormat("redis://127.0.0.1:%d", FreePort()), 60);
  ASSERT_TRUE(parsed.ok());
  absl::StatusOr<std::unique_ptr<store::StorePersistence>> opened = store::StorePersistence::Create(*parsed, 60);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.status().message().find("connecting"), std::string::npos) << opened.status();
}

}  // namespace
}  // namespace sinkserve::testing
