// A session's state as one versioned, checksummed blob:
//
//   offset  0  "SSKV"                 magic
//           4  u32 format version     (kSessionFormatVersion)
//           8  u64 metadata bytes     M
//          16  u64 K/V bytes          K
//          24  u32 CRC-32 of the metadata
//          28  u32 CRC-32 of the K/V bytes
//          32  metadata               sinkserve.store.v1.SessionMeta (protobuf)
//        32+M  K/V bytes              Backend::ExportCache, as stored
//
// Version 2 added deltas (engine/session_state.h): a store keeps a full
// blob and the deltas saved after it, and a version-1 server would read
// the full blob alone and miss the turns after it.
// Little-endian. A blob is read like any input from outside: every length
// is bounded and checked against the blob's size before anything is read,
// and a blob that fails a check is a DATA_LOSS status naming what is wrong,
// never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/session_state.h"

namespace sinkserve::store {

inline constexpr uint32_t kSessionFormatVersion = 2;
inline constexpr size_t kSessionHeaderBytes = 32;
// Bounds on what a blob may claim: 64 MiB of metadata (token ids, texts),
// 16 GiB of K/V (a 70B model's 32k-token cache in f32 is about 10 GiB).
inline constexpr uint64_t kMaxMetaBytes = uint64_t{64} << 20;
inline constexpr uint64_t kMaxKvBytes = uint64_t{16} << 30;

std::string EncodeSession(const SessionState& state);
absl::StatusOr<SessionState> DecodeSession(std::string_view blob);
// Brings `base` (a full state) forward by `delta`, saved on top of it: the
// delta's metadata replaces the base's, and its slots overwrite the base's.
// DATA_LOSS when it does not fit (another base revision, geometry, model
// or layout, or slots out of range); `base` is unchanged then.
absl::Status ApplyDelta(SessionState* base, SessionState delta);
// A stored session: its full blob with the deltas saved after it applied,
// oldest first (what a load makes of a store's read).
absl::StatusOr<SessionState> DecodeWithDeltas(std::string_view blob, const std::vector<std::string>& deltas);

}  // namespace sinkserve::store
