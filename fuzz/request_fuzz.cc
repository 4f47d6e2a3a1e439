// libFuzzer target: the request path without gRPC. The input is a sequence
// of requests as a Chat stream would carry them (each a 2-byte little-endian
// length, then that many bytes); each is parsed and handed to a real engine
// (a random tiny model on the CPU backend) through server/dispatch.h, exactly
// as the gRPC reactor does, then the stream half-closes. Every event the
// engine answers is converted to its wire form. The stream must end with one
// EndEvent within the deadline: no crash, no hang, no sanitizer report.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <variant>

#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/convert.h"
#include "server/dispatch.h"
#include "tests/engine/tiny_vocab.h"
#include "tests/random_model.h"

namespace sinkserve {
namespace {

struct Fixture {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Engine> engine;
};

Fixture* MakeFixture() {
  auto* f = new Fixture();
  f->tokenizer = testing::TinyTokenizer();
  // The model's vocabulary covers the tiny tokenizer's 273 pieces.
  Model model = testing::RandomModel(testing::TinyConfig(32, 4, 2, 2, /*vocab=*/288, 48, /*context=*/512), 1);
  absl::StatusOr<std::unique_ptr<CpuBackend>> backend = CpuBackend::Create(std::move(model), /*threads=*/1);
  if (!backend.ok()) std::abort();
  f->backend = *std::move(backend);
  EngineConfig config;
  config.model_name = "fuzz";
  config.default_cache = {CachePolicy::kSinkWindow, 4, 60};
  config.max_window = 256;
  config.max_sessions = 32;
  config.max_sessions_per_client = 8;
  config.max_new_tokens = 16;
  config.default_max_new_tokens = 8;
  config.max_prompt_bytes = 4096;
  config.session_ttl_seconds = 0;  // every input's session is gone by the next sweep
  config.kv_budget_bytes = 64 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(f->backend.get(), f->tokenizer.get(), config);
  if (!engine.ok()) {
    std::fprintf(stderr, "fuzz: %s\n", std::string(engine.status().message()).c_str());
    std::abort();
  }
  f->engine = *std::move(engine);
  return f;
}

// Pops the stream's events as the reactor would, converting each to its wire
// form, until the EndEvent. Aborts (a hang) after 30 s.
void DrainToEnd(Outbox& outbox) {
  std::mutex mu;
  std::condition_variable cv;
  bool kicked = false;
  outbox.SetNotify([&] {
    std::lock_guard<std::mutex> lock(mu);
    kicked = true;
    cv.notify_one();
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  v1::ChatResponse response;
  while (true) {
    while (std::optional<ChatEvent> event = outbox.PopMerged(64)) {
      if (const auto* end = std::get_if<EndEvent>(&*event)) {
        (void)ToGrpcStatus(end->status);
        outbox.ClearNotify();
        return;
      }
      if (!ToProto(*event, &response) || response.ByteSizeLong() == 0) std::abort();
    }
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_until(lock, deadline, [&] { return kicked; })) {
      std::fprintf(stderr, "fuzz: the stream did not end within 30 s\n");
      std::abort();
    }
    kicked = false;
  }
}

}  // namespace
}  // namespace sinkserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sinkserve;
  static Fixture* fixture = MakeFixture();
  Engine& engine = *fixture->engine;
  std::shared_ptr<Outbox> outbox = engine.NewOutbox();
  bool ended = false;
  size_t at = 0;
  int requests = 0;
  while (!ended && at + 2 <= size && requests < 64) {
    const size_t n = std::min<size_t>(data[at] | data[at + 1] << 8, size - at - 2);
    const std::string_view bytes(reinterpret_cast<const char*>(data + at + 2), n);
    at += 2 + n;
    ++requests;
    v1::ChatRequest request;
    absl::Status status = ParseChatRequest(bytes, &request);
    if (status.ok()) status = Dispatch(engine, outbox, request, "fuzz");
    if (!status.ok()) {
      engine.EndStream(outbox, status);
      ended = true;
    }
  }
  if (!ended) engine.HalfClose(outbox);
  DrainToEnd(*outbox);
  engine.Detach(outbox);
  return 0;
}
