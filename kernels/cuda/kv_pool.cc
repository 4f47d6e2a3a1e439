#include "kernels/cuda/kv_pool.h"

#include <algorithm>
#include <iterator>

namespace sinkserve::cuda {

KvPool::KvPool(int64_t capacity, int64_t alignment)
    : capacity_(std::max<int64_t>(capacity, 0) / std::max<int64_t>(alignment, 1) * std::max<int64_t>(alignment, 1)),
      alignment_(std::max<int64_t>(alignment, 1)) {
  if (capacity_ > 0) free_[0] = capacity_;
}

std::optional<int64_t> KvPool::Allocate(int64_t bytes) {
  if (bytes <= 0 || bytes > capacity_) return std::nullopt;
  const int64_t size = (bytes + alignment_ - 1) / alignment_ * alignment_;
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < size) continue;
    const int64_t offset = it->first;
    const int64_t rest = it->second - size;
    free_.erase(it);
    if (rest > 0) free_[offset + size] = rest;
    used_ranges_[offset] = size;
    used_ += size;
    return offset;
  }
  return std::nullopt;
}

void KvPool::Free(int64_t offset) {
  auto used = used_ranges_.find(offset);
  if (used == used_ranges_.end()) return;
  int64_t begin = offset;
  int64_t size = used->second;
  used_ -= size;
  used_ranges_.erase(used);
  auto next = free_.lower_bound(begin);
  if (next != free_.end() && next->first == begin + size) {  // merge with the range after
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == begin) {  // merge with the range before
      begin = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[begin] = size;
}

int64_t KvPool::LargestFree() const {
  int64_t best = 0;
  for (const auto& [offset, bytes] : free_) best = std::max(best, bytes);
  return best;
}

}  // namespace sinkserve::cuda
