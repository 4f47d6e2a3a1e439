// What the offline tools and sinkserve-server set up the same way: the model,
// its tokenizer, chat template and name, the backend, and the cache and
// sampling settings from flags; and the one-line failure exit.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/cache_policy.h"
#include "engine/sampler.h"
#include "engine/text/tokenizer.h"
#include "kernels/backend_factory.h"
#include "common/flags.h"

namespace sinkserve {

// Flags shared by the tools that load a model.
inline const std::vector<std::string> kModelFlags = {"model", "tokenizer", "backend", "threads", "weights"};
inline const std::vector<std::string> kCacheFlags = {"policy", "sinks", "window", "chunk"};
inline const std::vector<std::string> kSamplingFlags = {"temperature", "top-k", "top-p", "min-p",
                                                        "repetition-penalty", "seed", "penalty-alpha"};

struct Runtime {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Backend> backend;
  std::string model_name;     // the model's own name, else the file's stem
  std::string chat_template;  // the file's tokenizer.chat_template, if any
};

struct RuntimeOptions {
  std::string model;      // a model file (engine/model/model_loader.h)
  std::string tokenizer;  // a vocabulary file; empty: the model's own
  BackendOptions backend;
};

// Loads the model (its file is read once), its tokenizer and a backend.
absl::StatusOr<Runtime> LoadRuntime(const RuntimeOptions& options);
// The same from --model (required), --tokenizer, --backend (cpu|cuda|auto,
// default auto), --threads and --weights (native: quantized weights run on
// the integer kernels, the default; f32: dequantized at load, the reference).
absl::StatusOr<Runtime> LoadRuntime(const Flags& flags);

// Only the tokenizer: from --tokenizer, else the vocabulary inside --model.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Flags& flags);

// --policy sink_window|window|dense|recompute (default sink_window),
// --sinks, --window (defaults: engine/cache_policy.h).
absl::StatusOr<CacheConfig> ParseCacheConfig(const Flags& flags);
// --chunk: tokens per prefill step (default 64).
absl::StatusOr<int32_t> ParseChunk(const Flags& flags);

// --temperature --top-k --top-p --min-p --repetition-penalty --seed
// --penalty-alpha (contrastive search, with --top-k candidates; without
// --temperature it is greedy, and a temperature given with it is an error).
absl::StatusOr<SamplingParams> ParseSampling(const Flags& flags);

// Prints "<tool>: error: <message>" on one line to stderr; returns 1.
int Fail(const std::string& tool, const absl::Status& status);

// A tool's main(): runs `run` and turns a failed status into Fail's one line
// and exit status 1.
int ToolMain(const char* tool, absl::Status (*run)(int, char**), int argc, char** argv);

// Peak resident set size of this process, in KiB (VmHWM), or -1.
int64_t PeakRssKib();

}  // namespace sinkserve
