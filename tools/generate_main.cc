// sinkserve-generate: streams a continuation of --prompt to stdout as it is
// made, under a chosen cache policy, like the StreamingLLM demo. With
// --ignore-eos and the sink_window policy it can run for millions of tokens
// at a constant cost per token. --penalty-alpha A --top-k K decodes with
// contrastive search, as the StreamingLLM example does.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "engine/contrastive.h"
#include "engine/sequence.h"
#include "engine/status_macros.h"
#include "engine/turn.h"
#include "common/runtime.h"

namespace sinkserve {
namespace {

constexpr char kTool[] = "sinkserve-generate";

absl::Status Run(int argc, char** argv) {
  std::vector<std::string> valued = {"prompt", "max-new-tokens", "min-new-tokens", "stop", "report-every"};
  for (const auto* group : {&kModelFlags, &kCacheFlags, &kSamplingFlags}) valued.insert(valued.end(), group->begin(), group->end());
  Flags flags(valued, {"ignore-eos", "print-ids", "quiet"});
  RETURN_IF_ERROR(flags.Parse(argc, argv));

  ASSIGN_OR_RETURN(std::string prompt, flags.Required("prompt"));
  ASSIGN_OR_RETURN(int64_t max_new, flags.Int("max-new-tokens", 256));
  ASSIGN_OR_RETURN(int64_t min_new, flags.Int("min-new-tokens", 0));
  ASSIGN_OR_RETURN(int64_t report_every, flags.Int("report-every", 0));
  if (max_new < 0) return absl::InvalidArgumentError(absl::StrFormat("--max-new-tokens must be >= 0, got %d", max_new));
  if (min_new < 0 || min_new > max_new) {
    return absl::InvalidArgumentError(absl::StrFormat("--min-new-tokens must be in [0, --max-new-tokens], got %d", min_new));
  }
  if (report_every < 0) return absl::InvalidArgumentError("--report-every must be >= 0");
  ASSIGN_OR_RETURN(CacheConfig cache, ParseCacheConfig(flags));
  ASSIGN_OR_RETURN(int32_t chunk, ParseChunk(flags));
  ASSIGN_OR_RETURN(SamplingParams sampling, ParseSampling(flags));
  const bool ignore_eos = flags.Switch("ignore-eos");
  const bool print_ids = flags.Switch("print-ids");
  std::vector<std::string> stops;
  if (flags.Has("stop")) stops.push_back(flags.String("stop"));

  ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(flags));
  const Tokenizer& tok = *rt.tokenizer;
  std::vector<int32_t> ids = tok.Encode(prompt, /*add_bos=*/true);
  if (ids.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens and the model has no BOS");
  ASSIGN_OR_RETURN(auto seq, Sequence::Create(rt.backend.get(), cache, chunk));
  // Contrastive search compares candidates with the hidden states of every
  // token the query sees, the prompt's included.
  const bool contrastive = sampling.contrastive();
  HiddenRing ring;
  std::vector<float> hidden;
  if (contrastive) {
    if (!rt.backend->SupportsCandidates()) {
      return absl::UnimplementedError(absl::StrFormat("--penalty-alpha does not run on the %s backend yet", rt.backend->name()));
    }
    ring = HiddenRing(seq->geometry(), rt.backend->config().dim);
    RETURN_IF_ERROR(seq->Feed(ids, nullptr, &hidden));
    for (size_t j = 0; j < ids.size(); ++j) ring.Put(static_cast<int64_t>(j), &hidden[j * rt.backend->config().dim]);
  } else {
    RETURN_IF_ERROR(seq->Feed(ids));
  }

  TurnOptions options;
  options.sampling = sampling;
  options.max_new_tokens = max_new;
  options.min_new_tokens = min_new;
  options.ignore_eos = ignore_eos;
  options.stop = stops;
  Turn turn(options, tok, {}, rt.backend->config().vocab_size);
  if (!print_ids) {
    // Echo the prompt as the model saw it, then stream the continuation.
    std::string echoed;
    for (int32_t id : ids) echoed += turn.Echo(id);
    std::fputs(echoed.c_str(), stdout);
    std::fflush(stdout);
  }
  std::vector<int32_t> recent(ids);
  std::vector<float> logits;
  // One contrastive step: the candidates run, the best is accepted and, if
  // emitted, committed to the cache.
  auto contrastive_step = [&]() -> absl::StatusOr<Turn::Step> {
    const ContrastiveCandidates candidates = turn.Candidates(absl::MakeSpan(logits), recent);
    if (candidates.ids.empty()) {
      Turn::Step step;
      step.finish = FinishReason::kError;
      return step;
    }
    RETURN_IF_ERROR(seq->FeedCandidates(candidates.ids, &hidden));
    const int32_t pick = PickCandidate(candidates, hidden, ring, seq->consumed(), sampling.penalty_alpha);
    Turn::Step step = turn.Accept(candidates.ids[pick], &recent);
    if (step.emitted) {
      ring.Put(seq->consumed(), &hidden[static_cast<size_t>(pick) * rt.backend->config().dim]);
      RETURN_IF_ERROR(seq->CommitCandidate(pick));
    }
    return step;
  };
  const auto start = std::chrono::steady_clock::now();
  auto interval_start = start;
  FinishReason finish = FinishReason::kLength;
  // Progress lines on stderr. One goes out before the first token, so the
  // reporting code's own first-use memory (iostreams, /proc reads) is in
  // every later peak-RSS figure and not mistaken for growth.
  auto report = [&] {
    const auto now = std::chrono::steady_clock::now();
    const double interval_ms = std::chrono::duration<double, std::milli>(now - interval_start).count();
    const double total_s = std::chrono::duration<double>(now - start).count();
    std::cerr << absl::StrFormat("report tokens=%d elapsed_s=%.3f ms_per_token=%.5f peak_rss_kib=%d cache_tokens=%d\n",
                                 turn.generated(), total_s, turn.generated() ? interval_ms / report_every : 0.0,
                                 PeakRssKib(), seq->cache_tokens());
    interval_start = now;
  };
  if (report_every > 0) report();
  while (max_new > 0) {
    logits.assign(seq->last_logits().begin(), seq->last_logits().end());
    Turn::Step step;
    if (contrastive) {
      ASSIGN_OR_RETURN(step, contrastive_step());
    } else {
      step = turn.Next(absl::MakeSpan(logits), &recent);
    }
    if (step.finish == FinishReason::kError) {
      return absl::InternalError(absl::StrFormat("non-finite logit after %d tokens", seq->consumed()));
    }
    if (step.emitted) {
      if (print_ids) {
        std::printf(turn.generated() == 1 ? "%d" : " %d", step.token);
      } else {
        std::fputs(step.text.c_str(), stdout);
      }
      std::fflush(stdout);
      if (report_every > 0 && turn.generated() % report_every == 0) report();
    }
    if (step.finish) {
      finish = *step.finish;
      break;
    }
    if (!contrastive) RETURN_IF_ERROR(seq->Feed({step.token}));
  }
  if (!print_ids) std::fputs(turn.Flush(finish).c_str(), stdout);
  std::printf("\n");
  const int64_t generated = turn.generated();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!flags.Switch("quiet")) {
    std::cerr << absl::StrFormat("%s: %d tokens in %.3f s (%.1f tok/s), finish=%s, backend=%s, policy=%s S=%d W=%d, "
                                 "cache_tokens=%d evicted=%d peak_rss_kib=%d\n",
                                 kTool, generated, secs, generated / std::max(secs, 1e-9), FinishReasonName(finish), rt.backend->name(),
                                 CachePolicyName(cache.policy), seq->geometry().sinks, seq->geometry().window,
                                 seq->cache_tokens(), seq->evicted(), PeakRssKib());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::ToolMain(sinkserve::kTool, sinkserve::Run, argc, argv); }
