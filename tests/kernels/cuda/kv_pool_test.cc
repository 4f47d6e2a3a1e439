// KvPool is host bookkeeping: these run everywhere, with or without a GPU.
#include "kernels/cuda/kv_pool.h"

#include <gtest/gtest.h>

namespace sinkserve::cuda {
namespace {

TEST(KvPoolTest, FixedSizeSlotsFillThePoolThenAdmissionFails) {
  KvPool pool(10 * 1024, 256);
  std::vector<int64_t> offsets;
  for (int i = 0; i < 10; ++i) {
    auto off = pool.Allocate(1000);  // rounds up to 1024
    ASSERT_TRUE(off.has_value()) << i;
    offsets.push_back(*off);
  }
  EXPECT_FALSE(pool.Allocate(1).has_value());
  EXPECT_EQ(pool.used(), 10 * 1024);
  for (size_t i = 1; i < offsets.size(); ++i) EXPECT_EQ(offsets[i] - offsets[i - 1], 1024);
  pool.Free(offsets[3]);
  auto again = pool.Allocate(1024);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, offsets[3]);
}

TEST(KvPoolTest, FreedNeighboursCoalesce) {
  KvPool pool(4096, 256);
  const int64_t a = *pool.Allocate(1024), b = *pool.Allocate(1024), c = *pool.Allocate(1024), d = *pool.Allocate(1024);
  EXPECT_FALSE(pool.Allocate(2048).has_value());
  pool.Free(b);
  pool.Free(c);  // merges with b's range
  EXPECT_EQ(pool.LargestFree(), 2048);
  auto big = pool.Allocate(2048);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(*big, b);
  pool.Free(a);
  pool.Free(*big);
  pool.Free(d);
  EXPECT_EQ(pool.LargestFree(), 4096);
  EXPECT_EQ(pool.used(), 0);
  pool.Free(12345);  // unknown offsets are ignored
  EXPECT_EQ(pool.used(), 0);
}

TEST(KvPoolTest, RejectsEmptyAndOversizedRequests) {
  KvPool pool(1000, 256);  // capacity rounds down to 768
  EXPECT_EQ(pool.capacity(), 768);
  EXPECT_FALSE(pool.Allocate(0).has_value());
  EXPECT_FALSE(pool.Allocate(769).has_value());
  EXPECT_TRUE(pool.Allocate(768).has_value());
}

}  // namespace
}  // namespace sinkserve::cuda
