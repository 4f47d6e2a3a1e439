// The Backend interface: one call runs one forward pass over a batch of many
// sessions. Continuous batching is then a scheduling question, not a rewrite.
//
// The batch is plain data, in the style of nano-vllm: a flat array of new
// token ids plus one entry per sequence saying which cache it uses, how many
// tokens that sequence had consumed before this step, and how many of the flat
// tokens are its own. Prefill chunks and decode tokens are just token counts.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "engine/cache_geometry.h"
#include "engine/model/model.h"

namespace sinkserve {

using CacheId = int32_t;

struct SeqEntry {
  CacheId cache = -1;
  int64_t n_past = 0;       // tokens this sequence consumed before this step
  int32_t token_begin = 0;  // its first token in Batch::tokens
  int32_t n_tokens = 0;     // its new tokens this step (1 for decode)
  bool all_logits = false;  // a logits row per token, else only for the last
  // Contrastive search's candidates: the tokens are alternatives for the one
  // position n_past, not a sequence. Each attends as query n_past would (the
  // cache's visible keys and its own) and gets a logits row (all_logits must
  // be set); none is appended until Backend::CommitCandidate picks one.
  bool candidates = false;
};

// The most candidates one entry may carry (contrastive search's top_k).
inline constexpr int32_t kMaxCandidates = 64;

struct Batch {
  std::vector<int32_t> tokens;  // (total new tokens) grouped by sequence
  std::vector<SeqEntry> seqs;

  void Add(CacheId cache, int64_t n_past, absl::Span<const int32_t> new_tokens,
           bool all_logits = false) {
    seqs.push_back({cache, n_past, static_cast<int32_t>(tokens.size()),
                    static_cast<int32_t>(new_tokens.size()), all_logits});
    tokens.insert(tokens.end(), new_tokens.begin(), new_tokens.end());
  }
  // Contrastive candidates for position n_past of `cache` (SeqEntry::candidates).
  void AddCandidates(CacheId cache, int64_t n_past, absl::Span<const int32_t> candidates) {
    Add(cache, n_past, candidates, /*all_logits=*/true);
    seqs.back().candidates = true;
  }
  void Clear() {
    tokens.clear();
    seqs.clear();
  }
  // Rows of logits Forward returns: n_tokens for all_logits entries, else 1.
  int32_t LogitRows() const {
    int32_t rows = 0;
    for (const SeqEntry& s : seqs) rows += s.all_logits ? s.n_tokens : 1;
    return rows;
  }
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;
  virtual const ModelConfig& config() const = 0;

  // Bytes a KV cache with this geometry holds, for admission by a budget.
  virtual int64_t CacheBytes(const CacheGeometry& geometry) const = 0;
  // Reserves a KV cache with this geometry (its memory is fixed for life).
  // RESOURCE_EXHAUSTED when the memory cannot be had; never throws.
  virtual absl::StatusOr<CacheId> CreateCache(const CacheGeometry& geometry) = 0;
  // Returns the cache's memory. Unknown ids are ignored.
  virtual void DestroyCache(CacheId id) = 0;
  // Empties a cache so its next token is token 0 again (same geometry).
  virtual absl::Status ResetCache(CacheId id) = 0;

  // A session store keeps caches as this backend stores them. KvLayout()
  // names that layout (dtype, key rotation, slot order); ExportCache returns
  // the bytes of the slots in use (min(consumed, Slots()) of each layer's K
  // and V), and ImportCache loads such bytes into a fresh cache of the same
  // geometry made by a backend with the same layout and weights, which then
  // holds exactly the exported cache with `consumed` tokens. NOT_FOUND for
  // an unknown cache, INVALID_ARGUMENT when the size does not match.
  virtual std::string KvLayout() const = 0;
  virtual absl::StatusOr<std::string> ExportCache(CacheId id) const = 0;
  // Exported bytes are `rows` rows one after another, each holding its
  // slots' bytes in slot order, `slot_bytes` per slot: n slots take
  // rows * n * slot_bytes bytes. ExportCacheSlots gives slots [first,
  // first + count) of every row in that layout, the part of the cache a turn
  // wrote (a delta save); INVALID_ARGUMENT beyond the slots in use.
  struct KvShape {
    int64_t rows = 0;
    int64_t slot_bytes = 0;
  };
  virtual KvShape ExportShape() const = 0;
  virtual absl::StatusOr<std::string> ExportCacheSlots(CacheId id, int32_t first, int32_t count) const = 0;
  virtual absl::Status ImportCache(CacheId id, int64_t consumed, std::string_view bytes) = 0;

  // Contrastive search. A backend that SupportsCandidates() runs
  // SeqEntry::candidates entries and fills Forward's `hidden`; the others
  // refuse both with UNIMPLEMENTED. CommitCandidate appends candidate
  // `index` of the cache's latest candidates entry, exactly as if it had
  // been fed as the next token (the cache then holds one more token);
  // FAILED_PRECONDITION when the cache's latest step was not a candidates
  // entry with more than `index` tokens.
  virtual bool SupportsCandidates() const { return false; }
  virtual absl::Status CommitCandidate(CacheId /*id*/, int32_t /*index*/) {
    return absl::UnimplementedError(absl::StrFormat("the %s backend does not run contrastive search", name()));
  }

  // Runs every sequence's new tokens through the model: appends their K/V at
  // their slots and attends per the cache geometry. Each entry's n_past must
  // equal the tokens its cache has consumed, and n_tokens must not exceed
  // ring - window + 1 (a chunk larger than that would evict keys the chunk
  // still needs). On success `logits` holds (batch.LogitRows(), vocab_size)
  // floats, rows in entry order. INVALID_ARGUMENT on a malformed batch (bad
  // token id, unknown cache, wrong n_past), with nothing appended. With
  // `hidden`, it also receives (batch.tokens.size(), dim) floats: each
  // token's last hidden state (the final norm's output, the classifier's
  // input), in token order.
  absl::Status Forward(const Batch& batch, std::vector<float>* logits) { return Forward(batch, logits, nullptr); }
  virtual absl::Status Forward(const Batch& batch, std::vector<float>* logits, std::vector<float>* hidden) = 0;
};

}  // namespace sinkserve
