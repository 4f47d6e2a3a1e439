// One turn's generation, shared by the engine thread and sinkserve-generate
// so that both yield the same ids: what a TurnRequest resolves to against the
// server's defaults and limits, and the pipeline every sampled token goes
// through.
//
// The rules: end tokens (EOS, BOS, which a base model emits between
// documents, and the chat template's end-of-message tokens) finish a turn
// unless ignore_eos, and before min_new_tokens they are kept out of reach. An
// end token that finishes a turn is not emitted, and not fed to the model.
// Every other token is emitted: its text goes through UTF-8 streaming and the
// stop strings, and it enters the repetition window.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/chat_types.h"
#include "engine/contrastive.h"
#include "engine/sampler.h"
#include "engine/text/stop_matcher.h"
#include "engine/text/stream_decoder.h"
#include "engine/text/tokenizer.h"

namespace sinkserve {

// The server's side of a turn: its defaults and its caps.
struct TurnDefaults {
  SamplingParams sampling;
  int64_t max_new_tokens = 1000000;     // cap on a turn's max_new_tokens
  int64_t default_max_new_tokens = 512; // when a turn asks for none
  int64_t max_prompt_bytes = 1 << 20;   // cap on a turn's text
  int64_t max_stop_strings = 16;        // stop strings a turn may give
  int64_t max_stop_bytes = 1024;        // their bytes together
};

// A turn's generation settings, resolved and valid.
struct TurnOptions {
  SamplingParams sampling;
  int64_t max_new_tokens = 0;
  int64_t min_new_tokens = 0;
  bool ignore_eos = false;
  std::vector<std::string> stop;
};

// `request` against `defaults`: INVALID_ARGUMENT, with what to change, for a
// turn the server will not run.
absl::StatusOr<TurnOptions> ResolveTurn(const TurnRequest& request, const TurnDefaults& defaults);

// The repetition penalty's history: keeps between 512 and 1024 recent tokens.
void PushRecent(std::vector<int32_t>* recent, int32_t token);

class Turn {
 public:
  // `options` must be valid (ResolveTurn); `tokenizer` must outlive the turn.
  // `end_tokens` adds the chat template's end-of-message ids to EOS and BOS.
  Turn(TurnOptions options, const Tokenizer& tokenizer, absl::Span<const int32_t> end_tokens, int32_t vocab_size);

  // What became of one sampled token.
  struct Step {
    int32_t token = -1;    // -1: nothing was sampled (non-finite logits)
    bool emitted = false;  // part of the conversation: stream it, feed it
    std::string text;      // complete text to stream now (may be empty)
    std::optional<FinishReason> finish;  // kError: the logits were not finite
  };

  // Samples from `logits` (changed in place by masks and penalties) with the
  // repetition window `recent`, then accepts the token.
  Step Next(absl::Span<float> logits, std::vector<int32_t>* recent);
  // Contrastive search (options().sampling.contrastive()): the top_k
  // candidates for the next token from `logits`, masked and penalized in
  // place as Next does; none when a logit is not finite. The caller runs
  // them, picks one (PickCandidate) and Accepts it.
  ContrastiveCandidates Candidates(absl::Span<float> logits, absl::Span<const int32_t> recent);
  // Accepts `token` as this turn's next one; an emitted token enters `recent`.
  Step Accept(int32_t token, std::vector<int32_t>* recent);
  // The text of a token that precedes the turn (a prompt echoed back): it
  // primes the UTF-8 streaming but is not generated.
  std::string Echo(int32_t token) { return decoder_.Push(token); }
  // The text still held back when the turn finishes for `reason`: none after
  // a stop string (what follows it is dropped) or an error.
  std::string Flush(FinishReason reason);

  int64_t generated() const { return generated_; }
  const TurnOptions& options() const { return options_; }

 private:
  bool IsEnd(int32_t token) const;
  // Masks end tokens before min_new_tokens; false when a logit is not finite.
  bool Prepare(absl::Span<float> logits) const;

  const TurnOptions options_;
  std::vector<int32_t> end_ids_;  // built once per turn
  Sampler sampler_;
  StopMatcher stopper_;
  StreamDecoder decoder_;
  int64_t generated_ = 0;  // emitted tokens
};

}  // namespace sinkserve
