#include "engine/turn.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve {

absl::StatusOr<TurnOptions> ResolveTurn(const TurnRequest& request, const TurnDefaults& defaults) {
  if (static_cast<int64_t>(request.text.size()) > defaults.max_prompt_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the turn's text has %d bytes, over this server's limit of %d; send it in smaller turns",
        request.text.size(), defaults.max_prompt_bytes));
  }
  TurnOptions turn;
  turn.max_new_tokens = request.max_new_tokens > 0 ? request.max_new_tokens : defaults.default_max_new_tokens;
  if (turn.max_new_tokens > defaults.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_new_tokens=%d exceeds this server's cap of %d", turn.max_new_tokens, defaults.max_new_tokens));
  }
  if (request.min_new_tokens > turn.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "min_new_tokens=%d exceeds max_new_tokens=%d", request.min_new_tokens, turn.max_new_tokens));
  }
  if (static_cast<int64_t>(request.stop.size()) > defaults.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the turn gives %d stop strings, over this server's limit of %d", request.stop.size(),
        defaults.max_stop_strings));
  }
  int64_t stop_bytes = 0;
  for (const std::string& stop : request.stop) stop_bytes += static_cast<int64_t>(stop.size());
  if (stop_bytes > defaults.max_stop_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the turn's stop strings have %d bytes together, over this server's limit of %d", stop_bytes,
        defaults.max_stop_bytes));
  }
  turn.min_new_tokens = request.min_new_tokens;
  turn.ignore_eos = request.ignore_eos;
  turn.stop = request.stop;

  SamplingParams& params = turn.sampling;
  params = defaults.sampling;
  const SamplingOverrides& o = request.sampling;
  if (o.temperature) params.temperature = *o.temperature;
  if (o.top_k) {
    if (*o.top_k > (int64_t{1} << 30)) return absl::InvalidArgumentError("top_k is too large");
    params.top_k = static_cast<int32_t>(*o.top_k);
  }
  if (o.top_p) params.top_p = *o.top_p;
  if (o.min_p) params.min_p = *o.min_p;
  if (o.repetition_penalty) params.repetition_penalty = *o.repetition_penalty;
  if (o.seed) {
    params.seed = *o.seed;
    params.has_seed = true;
  }
  if (o.penalty_alpha) {
    params.penalty_alpha = *o.penalty_alpha;
    // Contrastive search is greedy: the server's default temperature does
    // not apply (a temperature the turn gives is refused by Validate).
    if (params.contrastive() && !o.temperature) params.temperature = 0.0f;
  }
  RETURN_IF_ERROR(params.Validate());
  return turn;
}

void PushRecent(std::vector<int32_t>* recent, int32_t token) {
  if (recent->size() >= 1024) recent->erase(recent->begin(), recent->begin() + 512);
  recent->push_back(token);
}

Turn::Turn(TurnOptions options, const Tokenizer& tokenizer, absl::Span<const int32_t> end_tokens, int32_t vocab_size)
    : options_(std::move(options)),
      sampler_(options_.sampling, vocab_size),
      stopper_(options_.stop),
      decoder_(tokenizer) {
  for (int32_t id : {tokenizer.eos_id(), tokenizer.bos_id()}) {
    if (id >= 0) end_ids_.push_back(id);
  }
  for (int32_t id : end_tokens) {
    if (id >= 0 && id < tokenizer.size()) end_ids_.push_back(id);
  }
}

bool Turn::IsEnd(int32_t token) const {
  return std::find(end_ids_.begin(), end_ids_.end(), token) != end_ids_.end();
}

bool Turn::Prepare(absl::Span<float> logits) const {
  if (!std::all_of(logits.begin(), logits.end(), [](float l) { return std::isfinite(l); })) return false;
  if (!options_.ignore_eos && generated_ < options_.min_new_tokens) {
    for (int32_t id : end_ids_) {
      if (static_cast<size_t>(id) < logits.size()) logits[id] = -INFINITY;
    }
  }
  return true;
}

Turn::Step Turn::Next(absl::Span<float> logits, std::vector<int32_t>* recent) {
  if (!Prepare(logits)) {
    Step step;
    step.finish = FinishReason::kError;
    return step;
  }
  return Accept(sampler_.Sample(logits, *recent), recent);
}

ContrastiveCandidates Turn::Candidates(absl::Span<float> logits, absl::Span<const int32_t> recent) {
  if (!Prepare(logits)) return {};
  sampler_.Penalize(logits, recent);
  return TopCandidates(logits, options_.sampling.top_k);
}

Turn::Step Turn::Accept(int32_t token, std::vector<int32_t>* recent) {
  Step step;
  step.token = token;
  if (!options_.ignore_eos && generated_ >= options_.min_new_tokens && IsEnd(token)) {
    step.finish = FinishReason::kEos;
    return step;
  }
  step.emitted = true;
  ++generated_;
  PushRecent(recent, token);
  bool stopped = false;
  step.text = stopper_.Push(decoder_.Push(token), &stopped);
  if (stopped) {
    step.finish = FinishReason::kStop;
  } else if (generated_ >= options_.max_new_tokens) {
    step.finish = FinishReason::kLength;
  }
  return step;
}

std::string Turn::Flush(FinishReason reason) {
  if (reason == FinishReason::kStop || reason == FinishReason::kError) return "";
  std::string rest = stopper_.Flush();
  rest += decoder_.Flush();
  return rest;
}

}  // namespace sinkserve
