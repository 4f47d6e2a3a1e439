#include "store/session_codec.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "sinkserve/store/v1/session_state.pb.h"

namespace sinkserve::store {
namespace {

constexpr char kMagic[4] = {'S', 'S', 'K', 'V'};

uint32_t Crc32(std::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes at most uInt bytes a call.
  constexpr size_t kPiece = size_t{1} << 30;
  for (size_t at = 0; at < bytes.size(); at += kPiece) {
    const size_t n = std::min(kPiece, bytes.size() - at);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + at), static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

void Put32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
void Put64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint32_t Get32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}
uint64_t Get64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

template <typename Field>
void CopyIds(const Field& from, std::vector<int32_t>* to) {
  to->assign(from.begin(), from.end());
}

absl::Status Bad(std::string_view what) {
  return absl::DataLossError(absl::StrFormat("the stored session is unreadable: %s", what));
}

}  // namespace

std::string EncodeSession(const SessionState& s) {
  v1::SessionMeta m;
  m.set_id(s.id);
  m.set_client(s.client);
  m.set_policy(CachePolicyName(s.cache.policy));
  m.set_sinks(s.cache.sinks);
  m.set_window(s.cache.window);
  m.set_ring(s.geometry.ring);
  m.set_chat_template(s.chat_template);
  m.set_system_prompt(s.system_prompt);
  m.mutable_preamble()->Add(s.preamble.begin(), s.preamble.end());
  m.set_started(s.started);
  m.set_turns(s.turns);
  m.set_consumed(s.consumed);
  m.set_dropped(s.dropped);
  m.mutable_carry()->Add(s.carry.begin(), s.carry.end());
  m.mutable_recent()->Add(s.recent.begin(), s.recent.end());
  v1::LastTurn* last = m.mutable_last_turn();
  last->set_turn(s.last_turn.turn);
  last->set_text(s.last_turn.text);
  last->set_truncated(s.last_turn.truncated);
  last->set_generated_tokens(s.last_turn.generated_tokens);
  last->set_finished(s.last_turn.finished);
  last->set_reason(static_cast<uint32_t>(s.last_turn.reason));
  m.set_conversation_hash(s.conversation_hash);
  m.set_conversation_messages(s.conversation_messages);
  m.set_conversation_known(s.conversation_known);
  m.mutable_slot_tokens()->Add(s.slot_tokens.begin(), s.slot_tokens.end());
  m.set_fingerprint(s.fingerprint);
  m.set_revision(s.revision);
  m.set_saved_unix_ms(s.saved_unix_ms);
  m.set_kv_rows(s.kv_rows);
  m.set_kv_slot_bytes(s.kv_slot_bytes);
  m.set_base_revision(s.base_revision);
  for (const SlotRange& r : s.delta_slots) {
    m.add_delta_slots(r.first);
    m.add_delta_slots(r.count);
  }
  const std::string meta = m.SerializeAsString();

  char header[kSessionHeaderBytes] = {};
  std::memcpy(header, kMagic, 4);
  Put32(header + 4, kSessionFormatVersion);
  Put64(header + 8, meta.size());
  Put64(header + 16, s.kv.size());
  Put32(header + 24, Crc32(meta));
  Put32(header + 28, Crc32(s.kv));
  // Reserved and appended: the K/V (megabytes) is written once, not zeroed first.
  std::string blob;
  blob.reserve(kSessionHeaderBytes + meta.size() + s.kv.size());
  blob.append(header, kSessionHeaderBytes).append(meta).append(s.kv);
  return blob;
}

absl::StatusOr<SessionState> DecodeSession(std::string_view blob) {
  if (blob.size() < kSessionHeaderBytes) {
    return Bad(absl::StrFormat("%d bytes, shorter than the %d-byte header (truncated)", blob.size(),
                               kSessionHeaderBytes));
  }
  const char* p = blob.data();
  if (std::memcmp(p, kMagic, 4) != 0) return Bad("it does not start with the session blob's magic bytes");
  const uint32_t version = Get32(p + 4);
  if (version != kSessionFormatVersion && version != 1) {
    return Bad(absl::StrFormat("it is in format version %d and this server reads version %d", version,
                               kSessionFormatVersion));
  }
  const uint64_t meta_bytes = Get64(p + 8);
  const uint64_t kv_bytes = Get64(p + 16);
  if (meta_bytes > kMaxMetaBytes || kv_bytes > kMaxKvBytes) {
    return Bad(absl::StrFormat("it claims %d metadata and %d K/V bytes, over the bounds of %d and %d", meta_bytes,
                               kv_bytes, kMaxMetaBytes, kMaxKvBytes));
  }
  if (kSessionHeaderBytes + meta_bytes + kv_bytes != blob.size()) {
    return Bad(absl::StrFormat("its header says %d bytes and it has %d (truncated or padded)",
                               kSessionHeaderBytes + meta_bytes + kv_bytes, blob.size()));
  }
  const std::string_view meta = blob.substr(kSessionHeaderBytes, meta_bytes);
  const std::string_view kv = blob.substr(kSessionHeaderBytes + meta_bytes);
  if (Crc32(meta) != Get32(p + 24)) return Bad("the metadata's checksum does not match (corrupt)");
  if (Crc32(kv) != Get32(p + 28)) return Bad("the K/V bytes' checksum does not match (corrupt)");

  v1::SessionMeta m;
  if (!m.ParseFromArray(meta.data(), static_cast<int>(meta.size()))) return Bad("its metadata does not parse");
  SessionState s;
  s.id = m.id();
  s.client = m.client();
  absl::StatusOr<CachePolicy> policy = ParseCachePolicy(m.policy());
  if (!policy.ok()) return Bad(absl::StrFormat("its cache policy '%s' is unknown", m.policy().substr(0, 40)));
  s.cache.policy = *policy;
  s.cache.sinks = m.sinks();
  s.cache.window = m.window();
  s.geometry = {m.sinks(), m.window(), m.ring()};
  if (m.sinks() < 0 || m.window() < 1 || m.ring() < m.window() || m.sinks() > kMaxCacheTokens ||
      m.ring() > 2 * kMaxCacheTokens) {
    return Bad(absl::StrFormat("its cache geometry (sinks %d, window %d, ring %d) is impossible", m.sinks(),
                               m.window(), m.ring()));
  }
  s.chat_template = m.chat_template();
  s.system_prompt = m.system_prompt();
  CopyIds(m.preamble(), &s.preamble);
  s.started = m.started();
  s.turns = m.turns();
  s.consumed = m.consumed();
  s.dropped = m.dropped();
  CopyIds(m.carry(), &s.carry);
  CopyIds(m.recent(), &s.recent);
  const v1::LastTurn& last = m.last_turn();
  s.last_turn.turn = last.turn();
  s.last_turn.text = last.text();
  s.last_turn.truncated = last.truncated();
  s.last_turn.generated_tokens = last.generated_tokens();
  s.last_turn.finished = last.finished();
  if (last.reason() > static_cast<uint32_t>(FinishReason::kError)) return Bad("its last turn's finish reason is unknown");
  s.last_turn.reason = static_cast<FinishReason>(last.reason());
  s.conversation_hash = m.conversation_hash();
  s.conversation_messages = m.conversation_messages();
  s.conversation_known = m.conversation_known();
  CopyIds(m.slot_tokens(), &s.slot_tokens);
  s.fingerprint = m.fingerprint();
  s.revision = m.revision();
  s.saved_unix_ms = m.saved_unix_ms();
  s.kv_rows = m.kv_rows();
  s.kv_slot_bytes = m.kv_slot_bytes();
  s.base_revision = m.base_revision();
  if (m.delta_slots_size() % 2 != 0) return Bad("its delta's slot ranges are not pairs");
  for (int i = 0; i < m.delta_slots_size(); i += 2) s.delta_slots.push_back({m.delta_slots(i), m.delta_slots(i + 1)});
  s.kv = std::string(kv);
  constexpr int64_t kMaxTokens = int64_t{1} << 60;  // lengths add up without overflow
  if (s.consumed < 0 || s.dropped < 0 || s.consumed > kMaxTokens || s.dropped > kMaxTokens) {
    return Bad("its token counts are out of range");
  }
  return s;
}

absl::Status ApplyDelta(SessionState* base, SessionState delta) {
  if (delta.base_revision == 0 || delta.base_revision != base->revision) {
    return Bad(absl::StrFormat("a delta saved on revision %d follows revision %d (the chain is broken)",
                               delta.base_revision, base->revision));
  }
  const CacheGeometry& g = base->geometry;
  if (delta.id != base->id || delta.geometry.sinks != g.sinks || delta.geometry.window != g.window ||
      delta.geometry.ring != g.ring || delta.fingerprint != base->fingerprint || delta.kv_rows != base->kv_rows ||
      delta.kv_slot_bytes != base->kv_slot_bytes || delta.consumed < base->consumed) {
    return Bad("a delta does not fit its base (another session, cache geometry, model or K/V layout)");
  }
  const int64_t rows = base->kv_rows;
  const int64_t slot_bytes = base->kv_slot_bytes;
  const int64_t old_used = std::min<int64_t>(base->consumed, g.Slots());
  const int64_t used = std::min<int64_t>(delta.consumed, g.Slots());
  const bool has_kv = !base->kv.empty() || !delta.kv.empty();
  if (has_kv && (rows <= 0 || slot_bytes <= 0 || static_cast<int64_t>(base->kv.size()) != rows * old_used * slot_bytes)) {
    return Bad("a delta's base has K/V bytes of another shape");
  }
  if (static_cast<int64_t>(base->slot_tokens.size()) != old_used) return Bad("a delta's base has the wrong slot count");
  int64_t slots = 0;
  for (const SlotRange& r : delta.delta_slots) {
    if (r.first < 0 || r.count < 0 || r.first + int64_t{r.count} > used) {
      return Bad(absl::StrFormat("a delta writes slots %d..%d of %d", r.first, r.first + int64_t{r.count}, used));
    }
    slots += r.count;
  }
  if (static_cast<int64_t>(delta.slot_tokens.size()) != slots ||
      (has_kv && static_cast<int64_t>(delta.kv.size()) != rows * slots * slot_bytes)) {
    return Bad("a delta's slots and bytes disagree");
  }
  // Every slot a delta leaves alone must have been written before it.
  std::vector<bool> written(static_cast<size_t>(used), false);
  std::fill(written.begin(), written.begin() + old_used, true);
  for (const SlotRange& r : delta.delta_slots) std::fill_n(written.begin() + r.first, r.count, true);
  if (std::find(written.begin(), written.end(), false) != written.end()) return Bad("a delta leaves a new slot unwritten");

  std::vector<int32_t> tokens = std::move(base->slot_tokens);
  tokens.resize(static_cast<size_t>(used));
  std::string kv;
  if (has_kv) {
    kv.assign(static_cast<size_t>(rows * used * slot_bytes), '\0');
    const int64_t old_row = old_used * slot_bytes, row = used * slot_bytes;
    for (int64_t r = 0; r < rows && old_row > 0; ++r) {
      std::memcpy(kv.data() + r * row, base->kv.data() + r * old_row, static_cast<size_t>(old_row));
    }
  }
  const char* src = delta.kv.data();
  size_t at = 0;
  for (const SlotRange& range : delta.delta_slots) {
    std::copy_n(delta.slot_tokens.begin() + static_cast<int64_t>(at), range.count, tokens.begin() + range.first);
    at += static_cast<size_t>(range.count);
    if (!has_kv) continue;
    const int64_t width = range.count * slot_bytes;
    for (int64_t r = 0; r < rows && width > 0; ++r) {
      std::memcpy(kv.data() + r * used * slot_bytes + range.first * slot_bytes, src, static_cast<size_t>(width));
      src += width;
    }
  }
  *base = std::move(delta);
  base->slot_tokens = std::move(tokens);
  base->kv = std::move(kv);
  base->base_revision = 0;
  base->delta_slots.clear();
  return absl::OkStatus();
}

absl::StatusOr<SessionState> DecodeWithDeltas(std::string_view blob, const std::vector<std::string>& deltas) {
  absl::StatusOr<SessionState> state = DecodeSession(blob);
  for (size_t i = 0; state.ok() && i < deltas.size(); ++i) {
    absl::StatusOr<SessionState> delta = DecodeSession(deltas[i]);
    absl::Status applied = delta.ok() ? ApplyDelta(&*state, *std::move(delta)) : delta.status();
    if (!applied.ok()) return absl::DataLossError(absl::StrFormat("delta %d: %s", i + 1, applied.message()));
  }
  return state;
}

}  // namespace sinkserve::store
