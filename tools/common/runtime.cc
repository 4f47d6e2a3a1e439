#include "tools/common/runtime.h"

#include <fstream>
#include <iostream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/model_loader.h"
#include "engine/status_macros.h"
#include "kernels/backend_factory.h"

namespace sinkserve {
namespace {

absl::StatusOr<int32_t> IntInRange(const Flags& flags, const std::string& name, int64_t fallback, int64_t lo,
                                   int64_t hi) {
  ASSIGN_OR_RETURN(int64_t v, flags.Int(name, fallback));
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s must be in [%d, %d], got %d", name, lo, hi, v));
  }
  return static_cast<int32_t>(v);
}

}  // namespace

static absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFor(const Flags& flags, Model* model) {
  Vocab vocab;
  if (flags.Has("tokenizer")) {
    ASSIGN_OR_RETURN(vocab, LoadVocab(flags.String("tokenizer")));
  } else if (model && model->vocab) {
    vocab = *model->vocab;
  } else {
    ASSIGN_OR_RETURN(std::string path, flags.Required("model"));
    auto loaded = LoadVocab(path);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s carries no vocabulary; pass --tokenizer (e.g. tok512.bin for the stories models)", path));
    }
    vocab = std::move(*loaded);
  }
  if (model && vocab.size() > model->config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the tokenizer has %d tokens but the model only %d; is it the model's own tokenizer?", vocab.size(),
        model->config.vocab_size));
  }
  return Tokenizer::Create(std::move(vocab));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Flags& flags) {
  if (!flags.Has("tokenizer") && !flags.Has("model")) {
    return absl::InvalidArgumentError("--model (or --tokenizer) is required");
  }
  return TokenizerFor(flags, nullptr);
}

absl::StatusOr<Runtime> LoadRuntime(const Flags& flags) {
  ASSIGN_OR_RETURN(std::string path, flags.Required("model"));
  ASSIGN_OR_RETURN(Model model, LoadModel(path));
  Runtime runtime;
  ASSIGN_OR_RETURN(runtime.tokenizer, TokenizerFor(flags, &model));
  BackendOptions options;
  options.kind = flags.String("backend", "auto");
  ASSIGN_OR_RETURN(options.threads, IntInRange(flags, "threads", 0, 0, 1024));
  ASSIGN_OR_RETURN(runtime.backend, CreateBackend(std::move(model), options));
  return runtime;
}

absl::StatusOr<CacheConfig> ParseCacheConfig(const Flags& flags) {
  CacheConfig config;
  const std::string policy = flags.String("policy", "sink_window");
  if (policy == "sink_window") {
    config.policy = CachePolicy::kSinkWindow;
  } else if (policy == "window") {
    config.policy = CachePolicy::kWindow;
  } else if (policy == "dense") {
    config.policy = CachePolicy::kDense;
  } else if (policy == "recompute") {
    config.policy = CachePolicy::kRecompute;
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--policy must be sink_window, window, dense or recompute, got '%s'", policy));
  }
  ASSIGN_OR_RETURN(config.sinks, IntInRange(flags, "sinks", config.policy == CachePolicy::kSinkWindow ? 4 : 0, 0, 1 << 24));
  ASSIGN_OR_RETURN(config.window, IntInRange(flags, "window", 252, 0, 1 << 24));
  if (config.policy != CachePolicy::kSinkWindow && config.sinks != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("--sinks %d only applies to --policy sink_window", config.sinks));
  }
  if (config.policy != CachePolicy::kDense && config.window == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--window must be at least 1 for --policy %s (each token must see itself)", policy));
  }
  return config;
}

absl::StatusOr<int32_t> ParseChunk(const Flags& flags) { return IntInRange(flags, "chunk", 64, 1, 1 << 16); }

absl::StatusOr<SamplingParams> ParseSampling(const Flags& flags) {
  SamplingParams p;
  ASSIGN_OR_RETURN(double temperature, flags.Double("temperature", p.temperature));
  ASSIGN_OR_RETURN(int64_t top_k, flags.Int("top-k", p.top_k));
  ASSIGN_OR_RETURN(double top_p, flags.Double("top-p", p.top_p));
  ASSIGN_OR_RETURN(double min_p, flags.Double("min-p", p.min_p));
  ASSIGN_OR_RETURN(double penalty, flags.Double("repetition-penalty", p.repetition_penalty));
  if (top_k < 0 || top_k > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat("--top-k must be >= 0, got %d", top_k));
  }
  p.temperature = static_cast<float>(temperature);
  p.top_k = static_cast<int32_t>(top_k);
  p.top_p = static_cast<float>(top_p);
  p.min_p = static_cast<float>(min_p);
  p.repetition_penalty = static_cast<float>(penalty);
  if (flags.Has("seed")) {
    ASSIGN_OR_RETURN(int64_t seed, flags.Int("seed", 0));
    p.seed = static_cast<uint64_t>(seed);
    p.has_seed = true;
  }
  if (absl::Status s = p.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrReplaceAll(s.message(), {{"top_k", "--top-k"}, {"top_p", "--top-p"},
        {"min_p", "--min-p"}, {"repetition_penalty", "--repetition-penalty"}, {"temperature", "--temperature"}}));
  }
  return p;
}

int Fail(const std::string& tool, const absl::Status& status) {
  std::string message(status.message());
  for (char& c : message) {
    if (c == '\n') c = ' ';
  }
  std::cerr << tool << ": error: " << message << std::endl;
  return 1;
}

int ToolMain(const char* tool, absl::Status (*run)(int, char**), int argc, char** argv) {
  const absl::Status status = run(argc, argv);
  return status.ok() ? 0 : Fail(tool, status);
}

int64_t PeakRssKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

}  // namespace sinkserve
