// Backend::ExportCache / ImportCache on any backend: a cache that has wrapped
// its ring, exported and imported into a fresh cache of the same geometry,
// gives bit-identical logits for the same next tokens as the original.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "tests/random_model.h"

namespace sinkserve::testing {

inline void ExpectExportImportContinuesBitwise(Backend* backend, const CacheGeometry& g) {
  const int32_t vocab = backend->config().vocab_size;
  auto original = backend->CreateCache(g);
  ASSERT_TRUE(original.ok()) << original.status();
  // Past the first lap of the ring, in chunks the geometry allows.
  const std::vector<int32_t> ids = RandomTokens(3 * g.Slots() + 5, vocab, 21);
  const int32_t chunk = g.ring - g.window + 1;
  std::vector<float> logits;
  int64_t consumed = 0;
  while (consumed < static_cast<int64_t>(ids.size())) {
    const int32_t n = static_cast<int32_t>(std::min<int64_t>(chunk, ids.size() - consumed));
    Batch batch;
    batch.Add(*original, consumed, absl::MakeConstSpan(ids).subspan(consumed, n));
    ASSERT_TRUE(backend->Forward(batch, &logits).ok());
    consumed += n;
  }
  absl::StatusOr<std::string> bytes = backend->ExportCache(*original);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_FALSE(backend->KvLayout().empty());
  // A slot range is that range of every row of the full export.
  const Backend::KvShape shape = backend->ExportShape();
  const int64_t used = std::min<int64_t>(consumed, g.Slots());
  ASSERT_EQ(static_cast<int64_t>(bytes->size()), shape.rows * used * shape.slot_bytes);
  for (const auto& [first, count] : std::vector<std::pair<int32_t, int32_t>>{{0, 1}, {g.sinks, 3}, {5, 0}}) {
    absl::StatusOr<std::string> part = backend->ExportCacheSlots(*original, first, count);
    ASSERT_TRUE(part.ok()) << part.status();
    ASSERT_EQ(static_cast<int64_t>(part->size()), shape.rows * count * shape.slot_bytes);
    const int64_t width = count * shape.slot_bytes;
    for (int64_t r = 0; r < shape.rows; ++r) {
      ASSERT_EQ(part->substr(r * width, width), bytes->substr((r * used + first) * shape.slot_bytes, width))
          << "row " << r << " of slots " << first << "+" << count;
    }
  }
  EXPECT_EQ(backend->ExportCacheSlots(*original, static_cast<int32_t>(used) - 1, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->ExportCacheSlots(*original, -1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  auto copy = backend->CreateCache(g);
  ASSERT_TRUE(copy.ok()) << copy.status();
  // Wrong sizes are refused, and leave the cache as it was.
  EXPECT_EQ(backend->ImportCache(*copy, consumed, bytes->substr(1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->ImportCache(*copy, 1, *bytes).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(backend->ImportCache(*copy, consumed, *bytes).ok());
  // Both go on with the same ten tokens, one per step.
  const std::vector<int32_t> next = RandomTokens(10, vocab, 22);
  for (int32_t id : next) {
    std::vector<float> a, b;
    Batch one, two;
    one.Add(*original, consumed, {id});
    two.Add(*copy, consumed, {id});
    ASSERT_TRUE(backend->Forward(one, &a).ok());
    ASSERT_TRUE(backend->Forward(two, &b).ok());
    ++consumed;
    ASSERT_EQ(a.size(), b.size());
    ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "logits differ at token " << consumed;
  }
  EXPECT_EQ(backend->ExportCache(12345).status().code(), absl::StatusCode::kNotFound);
  backend->DestroyCache(*original);
  backend->DestroyCache(*copy);
}

}  // namespace sinkserve::testing
