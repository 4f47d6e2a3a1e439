// The shared session store: Redis, through hiredis. Each session is a hash
// sinkserve:session:<id> with fields `rev` (decimal) and `blob` (the full
// blob), and a list sinkserve:deltas:<id> of the deltas saved after it,
// both expiring ttl_seconds after the last save, so a revision check reads
// a few bytes. A turn's pieces wait in sinkserve:staged:<stage>:<id>. A
// full put is MULTI / HSET / DEL deltas / PEXPIRE / EXEC; a delta is one
// script that moves the turn's pieces (LMOVE, no copy) and appends it, only
// while `rev` is its base (another replica may have saved the session
// meanwhile). A batch of writes is one pipeline. A broken connection is
// reopened on the next call.
#include <hiredis/hiredis.h>

#include <chrono>
#include <cinttypes>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "store/session_store.h"

namespace sinkserve::store {
namespace {

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

class RedisStore final : public SessionStore {
 public:
  RedisStore(std::string host, int port, double ttl_seconds)
      : host_(std::move(host)), port_(port), ttl_ms_(static_cast<int64_t>(ttl_seconds * 1000)) {}
  ~RedisStore() override {
    if (ctx_ != nullptr) redisFree(ctx_);
  }

  absl::Status Connect() {
    if (ctx_ != nullptr && ctx_->err == 0) return absl::OkStatus();
    if (ctx_ != nullptr) redisFree(ctx_);
    const timeval connect_timeout{2, 0};
    ctx_ = redisConnectWithTimeout(host_.c_str(), port_, connect_timeout);
    if (ctx_ == nullptr) return absl::UnavailableError("session store (Redis): out of memory");
    if (ctx_->err != 0) return Error("connecting");
    const timeval command_timeout{10, 0};
    redisSetTimeout(ctx_, command_timeout);
    return absl::OkStatus();
  }

  void Apply(absl::Span<StoreWrite> writes) override {
    if (absl::Status up = Connect(); !up.ok()) {
      for (StoreWrite& w : writes) w.status = up;
      return;
    }
    // One pipeline: every command goes out, then every reply comes back.
    std::vector<int> replies_of;
    for (const StoreWrite& w : writes) {
      const std::string key = Key(w.id), deltas = DeltasKey(w.id), staged = StagedKey(w.id, w.stage);
      const std::string rev = absl::StrCat(w.revision), ttl = absl::StrCat(ttl_ms_);
      if (!w.blob) {
        redisAppendCommand(ctx_, "DEL %b %b", key.data(), key.size(), deltas.data(), deltas.size());
        replies_of.push_back(1);
      } else if (w.piece) {
        redisAppendCommand(ctx_, "MULTI");
        redisAppendCommand(ctx_, "RPUSH %b %b", staged.data(), staged.size(), w.blob->data(), w.blob->size());
        redisAppendCommand(ctx_, "PEXPIRE %b %b", staged.data(), staged.size(), ttl.data(), ttl.size());
        redisAppendCommand(ctx_, "EXEC");
        replies_of.push_back(4);
      } else if (w.base_revision == 0) {
        redisAppendCommand(ctx_, "MULTI");
        redisAppendCommand(ctx_, "HSET %b rev %b blob %b", key.data(), key.size(), rev.data(), rev.size(),
                           w.blob->data(), w.blob->size());
        redisAppendCommand(ctx_, "DEL %b %b", deltas.data(), deltas.size(), staged.data(), staged.size());
        redisAppendCommand(ctx_, "PEXPIRE %b %b", key.data(), key.size(), ttl.data(), ttl.size());
        redisAppendCommand(ctx_, "EXEC");
        replies_of.push_back(5);
      } else {
        const std::string base = absl::StrCat(w.base_revision), pieces = absl::StrCat(w.pieces);
        redisAppendCommand(ctx_, "EVAL %s 3 %b %b %b %b %b %b %b %b", kAppendDelta, key.data(), key.size(),
                           deltas.data(), deltas.size(), staged.data(), staged.size(), base.data(), base.size(),
                           rev.data(), rev.size(), w.blob->data(), w.blob->size(), ttl.data(), ttl.size(),
                           pieces.data(), pieces.size());
        replies_of.push_back(1);
      }
    }
    std::vector<Reply> got;
    for (int n : replies_of) {
      for (int i = 0; i < n; ++i) {
        void* r = nullptr;
        if (redisGetReply(ctx_, &r) != REDIS_OK) {
          const absl::Status failed = Error("writing sessions");
          for (StoreWrite& w : writes) w.status = failed;
          return;
        }
        got.emplace_back(static_cast<redisReply*>(r));
      }
    }
    size_t at = 0;
    for (size_t i = 0; i < writes.size(); ++i) {
      StoreWrite& w = writes[i];
      const redisReply* last = got[at + replies_of[i] - 1].get();
      at += replies_of[i];
      if (!w.blob) {
        w.status = last->type == REDIS_REPLY_INTEGER ? absl::OkStatus() : Failed("deleting", w.id, last);
        w.existed = last->type == REDIS_REPLY_INTEGER && last->integer > 0;
      } else if (w.piece) {
        w.status = last->type == REDIS_REPLY_ARRAY && last->elements == 2 ? absl::OkStatus()
                                                                          : Failed("writing a piece of", w.id, last);
      } else if (w.base_revision == 0) {
        w.status = last->type == REDIS_REPLY_ARRAY && last->elements == 3 ? absl::OkStatus() : Failed("writing", w.id, last);
      } else if (last->type != REDIS_REPLY_INTEGER) {
        w.status = Failed("writing a delta of", w.id, last);
      } else if (last->integer != 1) {
        w.status = absl::FailedPreconditionError(absl::StrFormat(
            "session store (Redis): session %s is no longer at revision %d, or its turn's %d pieces are not all "
            "there; its delta needs a full save",
            w.id.substr(0, 200), w.base_revision, w.pieces));
      }
    }
  }

  absl::StatusOr<StoreRead> Get(const std::string& id, uint64_t known_revision) override {
    if (absl::Status up = Connect(); !up.ok()) return up;
    const std::string key = Key(id);
    StoreRead read;
    if (known_revision != 0) {
      Reply rev(static_cast<redisReply*>(redisCommand(ctx_, "HGET %b rev", key.data(), key.size())));
      if (rev == nullptr) return Error("reading a session's revision");
      if (rev->type == REDIS_REPLY_NIL) return read;
      uint64_t stored = 0;
      if (rev->type != REDIS_REPLY_STRING || !absl::SimpleAtoi(absl::string_view(rev->str, rev->len), &stored)) {
        return absl::DataLossError(absl::StrFormat("session store (Redis): session %s has a malformed revision", id));
      }
      if (stored == known_revision) {
        read.found = read.unchanged = true;
        return read;
      }
    }
    // The blob and its deltas as of one moment.
    const std::string deltas = DeltasKey(id);
    const std::string last = absl::StrCat(kMaxDeltas);
    redisAppendCommand(ctx_, "MULTI");
    redisAppendCommand(ctx_, "HGET %b blob", key.data(), key.size());
    redisAppendCommand(ctx_, "LRANGE %b 0 %b", deltas.data(), deltas.size(), last.data(), last.size());
    redisAppendCommand(ctx_, "EXEC");
    Reply exec;
    for (int i = 0; i < 4; ++i) {
      void* r = nullptr;
      if (redisGetReply(ctx_, &r) != REDIS_OK) return Error("reading a session");
      exec.reset(static_cast<redisReply*>(r));
    }
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 2) return Failed("reading", id, exec.get());
    const redisReply* blob = exec->element[0];
    const redisReply* list = exec->element[1];
    if (blob->type == REDIS_REPLY_NIL) return read;
    if (blob->type != REDIS_REPLY_STRING || list->type != REDIS_REPLY_ARRAY) return Failed("reading", id, blob);
    read.found = true;
    read.blob.assign(blob->str, blob->len);
    for (size_t i = 0; i < list->elements; ++i) {
      const redisReply* d = list->element[i];
      if (d->type != REDIS_REPLY_STRING) return Failed("reading a delta of", id, d);
      read.deltas.emplace_back(d->str, d->len);
    }
    return read;
  }

 private:
  // While the session is at revision ARGV[1] and its turn's staged list
  // KEYS[3] holds ARGV[5] pieces: moves them onto the deltas, appends the
  // delta ARGV[3], sets revision ARGV[2]; 1 when it did, 0 otherwise.
  static constexpr const char* kAppendDelta =
      "if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end "
      "local n = tonumber(ARGV[5]) "
      "if n > 0 and redis.call('LLEN', KEYS[3]) ~= n then return 0 end "
      "for i = 1, n do redis.call('LMOVE', KEYS[3], KEYS[2], 'LEFT', 'RIGHT') end "
      "redis.call('RPUSH', KEYS[2], ARGV[3]) "
      "redis.call('HSET', KEYS[1], 'rev', ARGV[2]) "
      "redis.call('PEXPIRE', KEYS[1], ARGV[4]) "
      "redis.call('PEXPIRE', KEYS[2], ARGV[4]) "
      "return 1";

  static std::string Key(const std::string& id) { return absl::StrCat("sinkserve:session:", id); }
  static std::string DeltasKey(const std::string& id) { return absl::StrCat("sinkserve:deltas:", id); }
  static std::string StagedKey(const std::string& id, uint64_t stage) {
    return absl::StrCat("sinkserve:staged:", stage, ":", id);
  }
  static absl::Status Failed(const char* what, const std::string& id, const redisReply* r) {
    return absl::UnavailableError(
        absl::StrFormat("session store (Redis): %s session %s failed: %s", what, id.substr(0, 200), ReplyText(r)));
  }
  static std::string ReplyText(const redisReply* r) {
    if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS) return std::string(r->str, r->len);
    return absl::StrFormat("unexpected reply type %d", r->type);
  }
  absl::Status Error(const char* what) {
    const std::string message = ctx_ != nullptr && ctx_->err != 0 ? ctx_->errstr : "no reply";
    // A context with an error is dead: the next call reconnects.
    if (ctx_ != nullptr) {
      redisFree(ctx_);
      ctx_ = nullptr;
    }
    return absl::UnavailableError(
        absl::StrFormat("session store (Redis at %s:%d): %s failed: %s", host_, port_, what, message));
  }

  const std::string host_;
  const int port_;
  const int64_t ttl_ms_;
  redisContext* ctx_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SessionStore>> OpenRedisStore(const std::string& host, int port, double ttl_seconds) {
  auto store = std::make_unique<RedisStore>(host, port, ttl_seconds);
  if (absl::Status up = store->Connect(); !up.ok()) return up;
  return store;
}

}  // namespace sinkserve::store
