// sinkserve-perplexity: teacher-forced perplexity over a long token stream,
// one token at a time under a cache policy (the paper's Figure 3 setup).
//   ppl = exp(mean over i = 0..N-2 of -log p(token[i+1] | tokens <= i))
// --logits-out FILE also writes the logits after every token, the last one
// included: N rows of vocab fp32 values, little-endian, no header (row i =
// the logits after token i), the layout of ../shared/models/synthetic/*.logits.f32.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "engine/model/model_loader.h"
#include "engine/sequence.h"
#include "engine/status_macros.h"
#include "common/runtime.h"

namespace sinkserve {
namespace {

constexpr char kTool[] = "sinkserve-perplexity";

absl::StatusOr<std::vector<int32_t>> ReadIds(const std::string& path, int32_t vocab) {
  ASSIGN_OR_RETURN(std::string text, ReadFileBytes(path));
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    int64_t id;
    if (!absl::SimpleAtoi(word, &id) || id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: token #%d is '%s', not an id in [0, %d)", path, ids.size(), word, vocab));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// -log softmax(logits)[target], in double.
double NegLogProb(absl::Span<const float> logits, int32_t target) {
  float max = logits[0];
  for (float l : logits) max = std::max(max, l);
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  return std::log(sum) - (static_cast<double>(logits[target]) - max);
}

absl::Status Run(int argc, char** argv) {
  std::vector<std::string> valued = {"text", "ids-file", "max-tokens", "csv", "csv-every", "logits-out"};
  for (const auto* group : {&kModelFlags, &kCacheFlags}) valued.insert(valued.end(), group->begin(), group->end());
  Flags flags(valued, {});
  RETURN_IF_ERROR(flags.Parse(argc, argv));
  if (flags.Has("text") == flags.Has("ids-file")) {
    return absl::InvalidArgumentError("give exactly one of --text FILE or --ids-file FILE");
  }
  ASSIGN_OR_RETURN(int64_t max_tokens, flags.Int("max-tokens", 0));
  ASSIGN_OR_RETURN(int64_t csv_every, flags.Int("csv-every", 10));
  if (max_tokens < 0) return absl::InvalidArgumentError("--max-tokens must be >= 0 (0 = the whole stream)");
  if (csv_every < 1) return absl::InvalidArgumentError("--csv-every must be >= 1");
  ASSIGN_OR_RETURN(CacheConfig cache, ParseCacheConfig(flags));
  ASSIGN_OR_RETURN(int32_t chunk, ParseChunk(flags));
  ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(flags));

  std::vector<int32_t> ids;
  if (flags.Has("text")) {
    ASSIGN_OR_RETURN(std::string text, ReadFileBytes(flags.String("text")));
    ids = rt.tokenizer->Encode(text, /*add_bos=*/true);
  } else {
    ASSIGN_OR_RETURN(ids, ReadIds(flags.String("ids-file"), rt.backend->config().vocab_size));
  }
  if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens);
  if (ids.size() < 2) return absl::InvalidArgumentError("need at least 2 tokens to measure perplexity");

  std::ofstream csv;
  if (flags.Has("csv")) {
    csv.open(flags.String("csv"));
    if (!csv) return absl::InvalidArgumentError(absl::StrFormat("cannot write --csv %s", flags.String("csv")));
    csv << "tokens,nll,ppl\n";
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> logits_out(nullptr, &std::fclose);
  if (flags.Has("logits-out")) {
    logits_out.reset(std::fopen(flags.String("logits-out").c_str(), "wb"));
    if (!logits_out) {
      return absl::InvalidArgumentError(absl::StrFormat("cannot write --logits-out %s", flags.String("logits-out")));
    }
  }
  ASSIGN_OR_RETURN(auto seq, Sequence::Create(rt.backend.get(), cache, chunk));
  double nll_sum = 0.0;
  int64_t scored = 0;
  const auto start = std::chrono::steady_clock::now();
  // The last token is fed only for its logits row.
  const size_t n_fed = logits_out ? ids.size() : ids.size() - 1;
  for (size_t i = 0; i < n_fed; ++i) {
    if (absl::Status s = seq->Feed({ids[i]}); !s.ok()) {
      return absl::Status(s.code(), absl::StrFormat("%s (at token %d; ppl over the %d tokens scored so far: %.4f)",
                                                    s.message(), i, scored, std::exp(nll_sum / std::max<int64_t>(scored, 1))));
    }
    if (logits_out) {
      absl::Span<const float> row = seq->last_logits();
      if (std::fwrite(row.data(), sizeof(float), row.size(), logits_out.get()) != row.size()) {
        return absl::UnavailableError(absl::StrFormat("writing --logits-out %s failed at row %d",
                                                      flags.String("logits-out"), i));
      }
    }
    if (i + 1 == ids.size()) break;
    const double nll = NegLogProb(seq->last_logits(), ids[i + 1]);
    if (!std::isfinite(nll)) return absl::InternalError(absl::StrFormat("non-finite loss at token %d", i));
    nll_sum += nll;
    ++scored;
    if (csv.is_open() && (scored % csv_every == 0 || i + 2 == ids.size())) {
      csv << absl::StrFormat("%d,%.6f,%.6f\n", i + 2, nll, std::exp(nll_sum / scored));
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (logits_out && std::fclose(logits_out.release()) != 0) {
    return absl::UnavailableError(absl::StrFormat("writing --logits-out %s failed", flags.String("logits-out")));
  }
  std::printf("policy=%s sinks=%d window=%d backend=%s ms_per_token=%.5f\n", CachePolicyName(cache.policy),
              seq->geometry().sinks, seq->geometry().window, std::string(rt.backend->name()).c_str(),
              1e3 * secs / scored);
  std::printf("ppl=%.6f tokens=%zu\n", std::exp(nll_sum / scored), ids.size());
  return absl::OkStatus();
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::ToolMain(sinkserve::kTool, sinkserve::Run, argc, argv); }
