#include "common/runtime.h"

#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/model/model_loader.h"
#include "engine/one_line.h"
#include "engine/status_macros.h"
#include "kernels/backend_factory.h"

namespace sinkserve {

namespace {

// The vocabulary from `tokenizer_path`, else the model's own (`model` may be
// null: then the vocabulary inside the file at `model_path`).
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFor(const std::string& tokenizer_path,
                                                        const std::string& model_path, const Model* model) {
  Vocab vocab;
  if (!tokenizer_path.empty()) {
    ASSIGN_OR_RETURN(vocab, LoadVocab(tokenizer_path));
  } else if (model && model->vocab) {
    vocab = *model->vocab;
  } else {
    auto loaded = LoadVocab(model_path);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s carries no vocabulary; pass --tokenizer (e.g. tok512.bin for the stories models)", model_path));
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

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Flags& flags) {
  if (!flags.Has("tokenizer") && !flags.Has("model")) {
    return absl::InvalidArgumentError("--model (or --tokenizer) is required");
  }
  return TokenizerFor(flags.String("tokenizer"), flags.String("model"), nullptr);
}

absl::StatusOr<Runtime> LoadRuntime(const RuntimeOptions& options) {
  ASSIGN_OR_RETURN(Model model, LoadModel(options.model));
  Runtime runtime;
  ASSIGN_OR_RETURN(runtime.tokenizer, TokenizerFor(options.tokenizer, options.model, &model));
  // llama2.c checkpoints carry no name: the file's stem says more.
  runtime.model_name = model.config.name.empty() || model.config.name == "llama2.c"
                           ? std::filesystem::path(options.model).stem().string()
                           : model.config.name;
  runtime.chat_template = model.chat_template;
  ASSIGN_OR_RETURN(runtime.backend, CreateBackend(std::move(model), options.backend));
  return runtime;
}

absl::StatusOr<Runtime> LoadRuntime(const Flags& flags) {
  RuntimeOptions options;
  ASSIGN_OR_RETURN(options.model, flags.Required("model"));
  options.tokenizer = flags.String("tokenizer");
  options.backend.kind = flags.String("backend", "auto");
  ASSIGN_OR_RETURN(int64_t threads, flags.IntInRange("threads", 0, 0, 1024));
  options.backend.threads = static_cast<int32_t>(threads);
  const std::string weights = flags.String("weights", "native");
  if (weights != "native" && weights != "f32") {
    return absl::InvalidArgumentError(absl::StrFormat("--weights must be native or f32, got '%s'", weights));
  }
  options.backend.dequantize_weights = weights == "f32";
  return LoadRuntime(options);
}

absl::StatusOr<CacheConfig> ParseCacheConfig(const Flags& flags) {
  CacheConfig config;
  const std::string policy = flags.String("policy", CachePolicyName(config.policy));
  absl::StatusOr<CachePolicy> parsed = ParseCachePolicy(policy);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--policy must be sink_window, window, dense or recompute, got '%s'", policy));
  }
  config.policy = *parsed;
  const int32_t default_sinks = config.policy == CachePolicy::kSinkWindow ? kDefaultSinks : 0;
  ASSIGN_OR_RETURN(int64_t sinks, flags.IntInRange("sinks", default_sinks, 0, kMaxCacheTokens));
  ASSIGN_OR_RETURN(int64_t window, flags.IntInRange("window", kDefaultWindow, 0, kMaxCacheTokens));
  config.sinks = static_cast<int32_t>(sinks);
  config.window = static_cast<int32_t>(window);
  if (config.policy != CachePolicy::kSinkWindow && config.sinks != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("--sinks %d only applies to --policy sink_window", config.sinks));
  }
  if (config.policy != CachePolicy::kDense && config.window == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--window must be at least 1 for --policy %s (each token must see itself)", policy));
  }
  return config;
}

absl::StatusOr<int32_t> ParseChunk(const Flags& flags) {
  ASSIGN_OR_RETURN(int64_t chunk, flags.IntInRange("chunk", 64, 1, 1 << 16));
  return static_cast<int32_t>(chunk);
}

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
  ASSIGN_OR_RETURN(double alpha, flags.Double("penalty-alpha", 0.0));
  p.penalty_alpha = static_cast<float>(alpha);
  // Contrastive search is greedy: the default temperature gives way, one given is refused.
  if (p.contrastive() && !flags.Has("temperature")) p.temperature = 0.0f;
  if (absl::Status s = p.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrReplaceAll(s.message(), {{"top_k", "--top-k"}, {"top_p", "--top-p"},
        {"min_p", "--min-p"}, {"repetition_penalty", "--repetition-penalty"}, {"temperature", "--temperature"},
        {"penalty_alpha", "--penalty-alpha"}}));
  }
  return p;
}

int Fail(const std::string& tool, const absl::Status& status) {
  std::cerr << tool << ": error: " << OneLine(status.message()) << std::endl;
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
