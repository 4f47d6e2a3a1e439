#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include "tests/engine/tiny_vocab.h"

namespace sinkserve::testing {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  // A session with `prompt` tokens to prefill (or decoding when prompt == 0).
  Session* Add(int prompt, int64_t consumed = 0) {
    auto s = std::make_unique<Session>();
    s->cache_id = static_cast<CacheId>(sessions_.size());
    s->consumed = consumed;
    s->outbox = std::make_shared<Outbox>(2, nullptr);
    s->turn = std::make_unique<TurnState>(TurnOptions{}, *tok_, absl::Span<const int32_t>{}, tok_->size());
    if (prompt > 0) {
      s->phase = Phase::kPrefill;
      s->turn->feed.assign(prompt, 7);
    } else {
      s->phase = Phase::kDecode;
      s->next_token = 42;
    }
    sessions_.push_back(std::move(s));
    active_.push_back(sessions_.back().get());
    return active_.back();
  }

  // Schedules a step and builds its batch, as the engine does.
  size_t Schedule(Scheduler& scheduler) {
    const size_t n = scheduler.Schedule(active_, &plan_);
    BuildBatch(plan_, &batch_);
    return n;
  }

  std::unique_ptr<Tokenizer> tok_ = TinyTokenizer();
  std::vector<std::unique_ptr<Session>> sessions_;
  std::vector<Session*> active_;
  Batch batch_;
  std::vector<ScheduledSeq> plan_;
};

TEST_F(SchedulerTest, DecodeTokensFirstThenChunkedPrefillUnderTheBudget) {
  Scheduler scheduler({.prefill_chunk = 8, .step_token_budget = 12});
  Session* long_prompt = Add(30);
  Session* d1 = Add(0, 5);
  Session* d2 = Add(0, 9);
  ASSERT_EQ(Schedule(scheduler), 3u);
  EXPECT_EQ(plan_[0].session, d1);
  EXPECT_TRUE(plan_[0].decode);
  EXPECT_EQ(plan_[1].session, d2);
  EXPECT_EQ(plan_[2].session, long_prompt);
  EXPECT_EQ(plan_[2].n_tokens, 8);  // min(chunk 8, budget 12 - 2 decodes)
  ASSERT_EQ(batch_.seqs.size(), 3u);
  EXPECT_EQ(batch_.seqs[0].n_past, 5);
  EXPECT_EQ(batch_.seqs[1].n_past, 9);
  EXPECT_EQ(batch_.tokens, (std::vector<int32_t>{42, 42, 7, 7, 7, 7, 7, 7, 7, 7}));
  EXPECT_EQ(batch_.LogitRows(), 3);
}

TEST_F(SchedulerTest, PrefillContinuesWhereItStoppedAndRotates) {
  Scheduler scheduler({.prefill_chunk = 8, .step_token_budget = 10});
  Session* a = Add(20);
  Session* b = Add(20);
  a->turn->fed = 15;  // 5 left
  ASSERT_EQ(Schedule(scheduler), 2u);
  EXPECT_EQ(plan_[0].session, a);
  EXPECT_EQ(plan_[0].n_tokens, 5);
  EXPECT_EQ(plan_[1].session, b);
  EXPECT_EQ(plan_[1].n_tokens, 5);  // what the budget leaves
  // Next step starts with the other session, so neither starves.
  a->turn->fed = 20;
  a->phase = Phase::kIdle;
  b->turn->fed = 5;
  Session* c = Add(3);
  ASSERT_EQ(Schedule(scheduler), 2u);
  EXPECT_EQ(plan_[0].session, c);
  EXPECT_EQ(plan_[1].session, b);
  EXPECT_EQ(plan_[1].n_tokens, 7);
}

TEST_F(SchedulerTest, SkipsIdleDetachedAndBackpressuredSessions) {
  Scheduler scheduler({.prefill_chunk = 8, .step_token_budget = 64});
  Session* idle = Add(0);
  idle->phase = Phase::kIdle;
  Session* detached = Add(0);
  detached->outbox = nullptr;
  Session* full = Add(0);
  full->outbox->Push(DeltaEvent{});
  full->outbox->Push(DeltaEvent{});  // capacity 2: its client is not reading
  Session* ok = Add(0);
  ASSERT_EQ(Schedule(scheduler), 1u);
  EXPECT_EQ(plan_[0].session, ok);
  // Draining the outbox makes the session runnable again.
  ASSERT_TRUE(full->outbox->Pop().has_value());
  EXPECT_EQ(Schedule(scheduler), 2u);
}

TEST_F(SchedulerTest, DecodesAlwaysRunAndPrefillStillProgresses) {
  Scheduler scheduler({.prefill_chunk = 8, .step_token_budget = 2});
  Add(0);
  Add(0);
  Add(0);
  Session* p = Add(10);
  ASSERT_EQ(Schedule(scheduler), 4u);
  EXPECT_EQ(plan_[3].session, p);
  EXPECT_EQ(plan_[3].n_tokens, 1);
}

TEST_F(SchedulerTest, PrefillWorkIsCappedByTheDecodesWork) {
  // Each token costs 100 keys of weights plus the keys it attends to.
  Scheduler scheduler({.prefill_chunk = 64, .step_token_budget = 512, .prefill_share = 0.5,
                       .weight_keys_per_token = 100});
  for (int i = 0; i < 8; ++i) Add(0, 1000)->geometry = {4, 96, 96};  // decodes seeing 100 keys: 200 each
  Session* shallow = Add(64, 0);
  shallow->geometry = {4, 96, 96};
  Session* deep = Add(64, 10000);
  deep->geometry = {4, 8000, 8063};  // 8,004 keys: 8,104 a token
  // Decode work 8 x 200 = 1,600; prefill may add max(0.5 x 1,600, 64 x 100) = 6,400.
  ASSERT_EQ(Schedule(scheduler), 9u);
  EXPECT_EQ(plan_[8].session, shallow);
  EXPECT_EQ(plan_[8].n_tokens, 39);  // priced at its 64th token (64 keys + 100): 6,400 / 164
  // Not even one of the deep prompt's tokens fits what is left (4 keys).
  // Next step it is first in line, and the first prompt in line always
  // moves: one token, which spends the step's prefill work.
  ASSERT_EQ(Schedule(scheduler), 9u);
  EXPECT_EQ(plan_[8].session, deep);
  EXPECT_EQ(plan_[8].n_tokens, 1);
  // With more decodes, prefill may add more: 256 decodes allow
  // 0.5 x 51,200 = 25,600 keys.
  for (int i = 0; i < 248; ++i) Add(0, 1000)->geometry = {4, 96, 96};
  ASSERT_EQ(Schedule(scheduler), 258u);
  EXPECT_EQ(plan_[256].session, shallow);
  EXPECT_EQ(plan_[256].n_tokens, 64);  // 10,496 of 25,600
  EXPECT_EQ(plan_[257].session, deep);
  EXPECT_EQ(plan_[257].n_tokens, 1);   // 15,104 left: one token of 8,104
}

TEST_F(SchedulerTest, WithNoDecodesPrefillIsCappedByTokensOnly) {
  Scheduler scheduler({.prefill_chunk = 64, .step_token_budget = 512, .prefill_share = 0.5,
                       .weight_keys_per_token = 100});
  Session* deep = Add(100, 5000);
  deep->geometry = {4, 4000, 4063};
  ASSERT_EQ(Schedule(scheduler), 1u);
  EXPECT_EQ(plan_[0].n_tokens, 64);  // nobody is streaming: a full chunk
}

ModelConfig Shape(int32_t dim, int32_t hidden, int32_t layers, int32_t heads, int32_t kv_heads, int32_t head_dim,
                  int32_t vocab) {
  ModelConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.vocab_size = vocab;
  return c;
}

TEST(SchedulerCostTest, WeightKeysPerTokenOfKnownShapes) {
  // stories260K: dim 64, hidden 172, 5 layers, 8 heads of 8, 4 kv heads, vocab 512.
  const ModelConfig tiny = Shape(64, 172, 5, 8, 4, 8, 512);
  // Per layer 64 x (64 + 64) + 64 x 64 + 3 x 64 x 172 = 45,312; x5 + 64 x 512 = 259,328 over 640 a key.
  EXPECT_NEAR(WeightKeysPerToken(tiny), 405.2, 0.1);
  const ModelConfig llama8b = Shape(4096, 14336, 32, 32, 8, 128, 128256);
  EXPECT_NEAR(WeightKeysPerToken(llama8b), 28700, 300);
}

TEST(OutboxTest, PopMergedJoinsDeltasOfOneTurnAndWakesTheEngine) {
  int wakes = 0;
  Outbox box(3, [&] { ++wakes; });
  box.Push(DeltaEvent{"a", {1}, 1});
  box.Push(DeltaEvent{"b", {2}, 1});
  box.Push(DeltaEvent{"c", {3}, 1});
  EXPECT_TRUE(box.Full());
  box.Push(DoneEvent{});
  auto merged = box.PopMerged(2);
  ASSERT_TRUE(merged.has_value());
  const auto& d = std::get<DeltaEvent>(*merged);
  EXPECT_EQ(d.text, "ab");
  EXPECT_EQ(d.token_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(wakes, 1);  // it was full
  auto next = box.PopMerged(64);
  EXPECT_EQ(std::get<DeltaEvent>(*next).text, "c");  // not merged across the done
  EXPECT_TRUE(std::holds_alternative<DoneEvent>(*box.Pop()));
  EXPECT_FALSE(box.Pop().has_value());
}

}  // namespace
}  // namespace sinkserve::testing
