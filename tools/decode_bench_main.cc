// sinkserve-decode-bench: batch-1 against batched greedy decode through one
// Backend, side by side in one run. Every session gets the same prompt and
// decodes --tokens tokens; a batch step carries one token per session. With
// --contrastive K, each batch size also runs contrastive search (alpha 0.6,
// K candidates per session per step, picked and committed as the engine
// does) in the same rounds, and reports its time per token against greedy's.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/contrastive.h"
#include "engine/sampler.h"
#include "engine/status_macros.h"
#include "common/runtime.h"

namespace sinkserve {
namespace {

constexpr char kTool[] = "sinkserve-decode-bench";

// CPU seconds this process has used, all threads: unlike wall time it does
// not count time lost to other processes on a busy machine.
double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Throughput {
  double wall_tok_s;
  double cpu_tok_s;  // tokens per CPU-second (all threads together)
};

// Decodes `tokens` tokens for `sessions` sessions in lockstep: greedy, or
// with top_k > 0 contrastive search (each step one candidates entry of top_k
// rows per session, the pick committed).
absl::StatusOr<Throughput> Measure(Backend& backend, const CacheConfig& cache, const std::vector<int32_t>& prompt,
                                   int32_t sessions, int32_t tokens, int32_t top_k = 0) {
  const int32_t vocab = backend.config().vocab_size, dim = backend.config().dim;
  ASSIGN_OR_RETURN(CacheGeometry geometry, GeometryFor(cache, static_cast<int32_t>(prompt.size()), backend.config().max_seq_len));
  std::vector<CacheId> caches;
  std::vector<HiddenRing> rings;
  for (int32_t s = 0; s < sessions; ++s) {
    ASSIGN_OR_RETURN(CacheId id, backend.CreateCache(geometry));
    caches.push_back(id);
    if (top_k > 0) rings.emplace_back(geometry, dim);
  }
  Batch batch;
  std::vector<float> logits, hidden, last;
  for (CacheId id : caches) batch.Add(id, 0, prompt);
  RETURN_IF_ERROR(backend.Forward(batch, &logits, top_k > 0 ? &hidden : nullptr));
  const int64_t n_past = static_cast<int64_t>(prompt.size());
  for (int32_t s = 0; s < static_cast<int32_t>(rings.size()); ++s) {
    for (int64_t j = 0; j < n_past; ++j) rings[s].Put(j, &hidden[(s * n_past + j) * dim]);
  }
  std::vector<int32_t> next(sessions);
  std::vector<ContrastiveCandidates> candidates(sessions);
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = ProcessCpuSeconds();
  for (int32_t step = 0; step < tokens; ++step) {
    batch.Clear();
    if (top_k == 0) {
      for (int32_t s = 0; s < sessions; ++s) {
        next[s] = Argmax(absl::MakeConstSpan(logits).subspan(int64_t{s} * vocab, vocab));
        batch.Add(caches[s], n_past + step, {next[s]});
      }
      RETURN_IF_ERROR(backend.Forward(batch, &logits));
      continue;
    }
    // Contrastive: row s of `last` is session s's distribution for this step.
    if (step == 0) last = logits;
    for (int32_t s = 0; s < sessions; ++s) {
      candidates[s] = TopCandidates(absl::MakeConstSpan(last).subspan(int64_t{s} * vocab, vocab), top_k);
      batch.AddCandidates(caches[s], n_past + step, candidates[s].ids);
    }
    RETURN_IF_ERROR(backend.Forward(batch, &logits, &hidden));
    for (int32_t s = 0; s < sessions; ++s) {
      const int64_t first_row = int64_t{s} * top_k;
      const absl::Span<const float> rows = absl::MakeConstSpan(hidden).subspan(first_row * dim, int64_t{top_k} * dim);
      const int32_t pick = PickCandidate(candidates[s], rows, rings[s], n_past + step, 0.6f);
      rings[s].Put(n_past + step, rows.data() + int64_t{pick} * dim);
      RETURN_IF_ERROR(backend.CommitCandidate(caches[s], pick));
      std::copy_n(logits.begin() + (first_row + pick) * vocab, vocab, last.begin() + int64_t{s} * vocab);
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu_secs = ProcessCpuSeconds() - cpu_start;
  for (CacheId id : caches) backend.DestroyCache(id);
  const double total = static_cast<double>(sessions) * tokens;
  return Throughput{total / secs, total / cpu_secs};
}

// Prefills `n` tokens into one fresh cache in chunks of `chunk` (as
// llama-bench's ppN does with one batch); returns tokens per second.
absl::StatusOr<double> MeasurePrefill(Backend& backend, const CacheConfig& cache, int32_t n, int32_t chunk) {
  ASSIGN_OR_RETURN(CacheGeometry geometry, GeometryFor(cache, chunk, backend.config().max_seq_len));
  ASSIGN_OR_RETURN(CacheId id, backend.CreateCache(geometry));
  std::vector<int32_t> tokens(n);
  for (int32_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>((int64_t{i} * 7919 + 1) % backend.config().vocab_size);
  Batch batch;
  std::vector<float> logits;
  const auto start = std::chrono::steady_clock::now();
  for (int32_t begin = 0; begin < n; begin += chunk) {
    batch.Clear();
    batch.Add(id, begin, absl::MakeConstSpan(tokens).subspan(begin, std::min(chunk, n - begin)));
    if (absl::Status s = backend.Forward(batch, &logits); !s.ok()) {
      backend.DestroyCache(id);
      return s;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  backend.DestroyCache(id);
  return n / secs;
}

absl::Status Run(int argc, char** argv) {
  std::vector<std::string> valued = {"prompt", "tokens", "batches", "repeats", "prefill", "contrastive"};
  for (const auto* group : {&kModelFlags, &kCacheFlags}) valued.insert(valued.end(), group->begin(), group->end());
  Flags flags(valued, {});
  RETURN_IF_ERROR(flags.Parse(argc, argv));
  ASSIGN_OR_RETURN(int64_t tokens, flags.Int("tokens", 1000));
  ASSIGN_OR_RETURN(int64_t repeats, flags.Int("repeats", 3));
  if (tokens < 1 || repeats < 1) return absl::InvalidArgumentError("--tokens and --repeats must be >= 1");
  std::vector<int32_t> batches;
  for (absl::string_view part : absl::StrSplit(flags.String("batches", "1,16"), ',')) {
    int32_t b;
    if (!absl::SimpleAtoi(part, &b) || b < 1 || b > 4096) {
      return absl::InvalidArgumentError(absl::StrFormat("--batches takes sizes in [1, 4096], got '%s'", std::string(part)));
    }
    batches.push_back(b);
  }
  ASSIGN_OR_RETURN(int64_t prefill, flags.IntInRange("prefill", 0, 0, 1 << 20));
  ASSIGN_OR_RETURN(int64_t contrastive, flags.IntInRange("contrastive", 0, 0, kMaxCandidates));
  ASSIGN_OR_RETURN(int32_t chunk, ParseChunk(flags));
  ASSIGN_OR_RETURN(CacheConfig cache, ParseCacheConfig(flags));
  ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(flags));
  const std::vector<int32_t> prompt = rt.tokenizer->Encode(flags.String("prompt", "Once upon a time"), true);

  std::printf("backend=%s policy=%s sinks=%d window=%d tokens_per_session=%d repeats=%d (interleaved; medians)\n",
              std::string(rt.backend->name()).c_str(), CachePolicyName(cache.policy), cache.sinks, cache.window,
              static_cast<int>(tokens), static_cast<int>(repeats));
  // Rounds interleave the batch sizes, so a noisy neighbour slows them
  // alike; each size reports its median, and each size after the first also
  // the median over rounds of its ratio to batch 1 in the same round.
  const size_t n = batches.size();
  std::vector<std::vector<double>> wall(n), cpu(n), ratio(n), contrastive_cost(n);
  for (int64_t r = 0; r < repeats; ++r) {
    double batch1 = 0.0;
    for (size_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(Throughput tp, Measure(*rt.backend, cache, prompt, batches[i], static_cast<int32_t>(tokens)));
      wall[i].push_back(tp.wall_tok_s);
      cpu[i].push_back(tp.cpu_tok_s);
      if (batches[i] == 1) batch1 = tp.wall_tok_s;
      if (batch1 > 0) ratio[i].push_back(tp.wall_tok_s / batch1);
      if (contrastive > 0) {
        // Right after its greedy twin: the ratio of per-token times, this round.
        ASSIGN_OR_RETURN(Throughput ct, Measure(*rt.backend, cache, prompt, batches[i], static_cast<int32_t>(tokens),
                                                static_cast<int32_t>(contrastive)));
        contrastive_cost[i].push_back(tp.wall_tok_s / ct.wall_tok_s);
      }
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  for (size_t i = 0; i < n; ++i) {
    const double tok_s = median(wall[i]);
    std::printf("batch=%d aggregate_tok_s=%.1f per_session_tok_s=%.1f tok_per_cpu_s=%.1f%s\n", batches[i], tok_s,
                tok_s / batches[i], median(cpu[i]),
                batches[i] != 1 && !ratio[i].empty()
                    ? absl::StrFormat(" vs_batch1=%.2fx (min %.2fx max %.2fx)", median(ratio[i]),
                                      *std::min_element(ratio[i].begin(), ratio[i].end()),
                                      *std::max_element(ratio[i].begin(), ratio[i].end())).c_str()
                    : "");
  }
  for (size_t i = 0; i < n && contrastive > 0; ++i) {
    std::printf("batch=%d contrastive_k=%d time_per_token_vs_greedy=%.2fx (min %.2fx max %.2fx)\n", batches[i],
                static_cast<int>(contrastive), median(contrastive_cost[i]),
                *std::min_element(contrastive_cost[i].begin(), contrastive_cost[i].end()),
                *std::max_element(contrastive_cost[i].begin(), contrastive_cost[i].end()));
  }
  if (prefill > 0) {
    std::vector<double> rates;
    for (int64_t r = 0; r < repeats; ++r) {
      ASSIGN_OR_RETURN(double rate, MeasurePrefill(*rt.backend, cache, static_cast<int32_t>(prefill), chunk));
      rates.push_back(rate);
    }
    std::printf("prefill tokens=%d chunk=%d tok_s=%.1f\n", static_cast<int>(prefill), chunk, median(rates));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::ToolMain(sinkserve::kTool, sinkserve::Run, argc, argv); }
