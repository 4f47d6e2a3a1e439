// Prometheus metrics for both front doors, from prometheus-cpp's core and
// its text serializer, served by the HTTP front door at GET /metrics.
//
// Per turn (observed by the front door that streams it): time to first
// token and inter-token latency histograms, turns by finish reason and
// door, prompt and generated token counters. Per step (the engine's
// on_step hook): the batch's tokens. At each scrape, from Engine::stats():
// sessions (live, attached, idle), queued and running turns, KV cache bytes
// in use and their budget, evicted tokens; and the three gauges the
// Kubernetes Gateway API inference extension reads
// (inference_pool_queued_requests ... see Metrics::Serialize).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "engine/chat_types.h"

namespace sinkserve {

class Engine;

class Metrics {
 public:
  Metrics();
  // The engine whose stats the gauges read at each scrape (set once, before
  // serving); nullptr leaves them at zero.
  void SetEngine(const Engine* engine) { engine_ = engine; }

  // The engine's on_step hook.
  void ObserveStep(int64_t tokens, int64_t sequences);
  // The engine's on_store hook: a save or load's seconds from request to answer.
  void ObserveStore(std::string_view op, double seconds, bool ok);

  // A turn's life as one front door streams it: call TurnStarted when the
  // turn is handed to the engine, Delta for each delta written (its token
  // count), TurnDone with its DoneEvent.
  class Turn {
   public:
    Turn(Metrics* metrics, const char* door);
    void Delta(int64_t tokens);
    void Done(const DoneEvent& done);

   private:
    Metrics* metrics_;
    const char* door_;
    std::chrono::steady_clock::time_point start_, last_;
    bool first_ = true;
    bool done_ = false;
  };

  // The text exposition format (version 0.0.4).
  std::string Serialize();

 private:
  using Clock = std::chrono::steady_clock;
  const Engine* engine_ = nullptr;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* step_tokens_;
  prometheus::Family<prometheus::Counter>* turns_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Gauge* sessions_;
  prometheus::Gauge* attached_;
  prometheus::Gauge* idle_;
  prometheus::Gauge* queued_;
  prometheus::Gauge* running_;
  prometheus::Gauge* kv_bytes_;
  prometheus::Gauge* kv_capacity_;
  prometheus::Gauge* kv_utilization_;
  prometheus::Gauge* evicted_;
  prometheus::Gauge* steps_;
  prometheus::Family<prometheus::Histogram>* store_seconds_;
  prometheus::Family<prometheus::Counter>* store_ops_;
  prometheus::Gauge* restored_exact_;
  prometheus::Gauge* restored_replayed_;
  prometheus::Gauge* unloaded_;
  // The Gateway API inference extension's names.
  prometheus::Gauge* gw_queued_;
  prometheus::Gauge* gw_running_;
  prometheus::Gauge* gw_kv_;
};

}  // namespace sinkserve
