// What kind of build the tests run in. Timing bounds and memory figures hold
// only in an optimized build without sanitizers: ASan's shadow memory and
// quarantine, TSan's history and UBSan's checks make code several times
// slower and processes several times larger. Tests check their functional
// part everywhere and their timing or memory part only where it holds.
#pragma once

namespace sinkserve::testing {

#if defined(SINKSERVE_SANITIZED)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

#if defined(NDEBUG) && !defined(SINKSERVE_SANITIZED)
inline constexpr bool kTimingHolds = true;
#else
inline constexpr bool kTimingHolds = false;
#endif

}  // namespace sinkserve::testing
