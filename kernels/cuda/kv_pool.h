// Host bookkeeping for the one KV pool allocated at startup: hands out byte
// ranges of a fixed capacity, first fit with coalescing of freed neighbours.
// Sessions with the same geometry get same-size slots, so in the common case
// (one policy per server) the pool behaves as an array of fixed-size slots
// and never fragments. Plain C++: no CUDA, testable anywhere.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

namespace sinkserve::cuda {

class KvPool {
 public:
  // `capacity` bytes; every range starts at a multiple of `alignment`.
  KvPool(int64_t capacity, int64_t alignment = 256);

  // Offset of a free range of at least `bytes`, or nullopt when none fits.
  std::optional<int64_t> Allocate(int64_t bytes);
  // Returns the range starting at `offset` (from Allocate). Unknown: ignored.
  void Free(int64_t offset);

  int64_t capacity() const { return capacity_; }
  int64_t used() const { return used_; }
  // Largest range Allocate could return now.
  int64_t LargestFree() const;

 private:
  int64_t capacity_;
  int64_t alignment_;
  int64_t used_ = 0;
  std::map<int64_t, int64_t> free_;  // offset -> bytes, no two adjacent
  std::map<int64_t, int64_t> used_ranges_;  // offset -> bytes
};

}  // namespace sinkserve::cuda
