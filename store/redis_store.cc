// The shared session store: Redis, through hiredis. Each session is a hash
// sinkserve:session:<id> with fields `rev` (decimal) and `blob`, expiring
// ttl_seconds after its last save, so a revision check reads a few bytes.
// A put is MULTI / HSET / PEXPIRE / EXEC, and a batch of writes is one
// pipeline. A broken connection is reopened on the next call.
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
    int replies = 0;
    for (const StoreWrite& w : writes) {
      const std::string key = Key(w.id);
      if (w.blob) {
        const std::string rev = absl::StrCat(w.revision);
        const std::string ttl = absl::StrCat(ttl_ms_);
        redisAppendCommand(ctx_, "MULTI");
        redisAppendCommand(ctx_, "HSET %b rev %b blob %b", key.data(), key.size(), rev.data(), rev.size(),
                           w.blob->data(), w.blob->size());
        redisAppendCommand(ctx_, "PEXPIRE %b %b", key.data(), key.size(), ttl.data(), ttl.size());
        redisAppendCommand(ctx_, "EXEC");
        replies += 4;
      } else {
        redisAppendCommand(ctx_, "DEL %b", key.data(), key.size());
        replies += 1;
      }
    }
    std::vector<Reply> got;
    for (int i = 0; i < replies; ++i) {
      void* r = nullptr;
      if (redisGetReply(ctx_, &r) != REDIS_OK) {
        const absl::Status failed = Error("writing sessions");
        for (StoreWrite& w : writes) w.status = failed;
        return;
      }
      got.emplace_back(static_cast<redisReply*>(r));
    }
    size_t at = 0;
    for (StoreWrite& w : writes) {
      if (w.blob) {
        const redisReply* exec = got[at + 3].get();
        w.status = exec->type == REDIS_REPLY_ARRAY && exec->elements == 2
                       ? absl::OkStatus()
                       : absl::UnavailableError(absl::StrFormat("session store (Redis): writing session %s failed: %s",
                                                                w.id, ReplyText(exec)));
        at += 4;
      } else {
        const redisReply* del = got[at].get();
        w.status = del->type == REDIS_REPLY_INTEGER
                       ? absl::OkStatus()
                       : absl::UnavailableError(absl::StrFormat("session store (Redis): deleting session %s failed: %s",
                                                                w.id, ReplyText(del)));
        w.existed = del->type == REDIS_REPLY_INTEGER && del->integer > 0;
        at += 1;
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
    Reply blob(static_cast<redisReply*>(redisCommand(ctx_, "HGET %b blob", key.data(), key.size())));
    if (blob == nullptr) return Error("reading a session");
    if (blob->type == REDIS_REPLY_NIL) return read;
    if (blob->type != REDIS_REPLY_STRING) {
      return absl::UnavailableError(
          absl::StrFormat("session store (Redis): reading session %s failed: %s", id, ReplyText(blob.get())));
    }
    read.found = true;
    read.blob.assign(blob->str, blob->len);
    return read;
  }

 private:
  static std::string Key(const std::string& id) { return absl::StrCat("sinkserve:session:", id); }
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
