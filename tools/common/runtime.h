// What every offline tool sets up the same way: the model, its tokenizer,
// the backend, and the cache and sampling settings from flags.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/cache_geometry.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "tools/common/flags.h"

namespace sinkserve {

// Flags shared by the tools that load a model.
inline const std::vector<std::string> kModelFlags = {"model", "tokenizer", "backend", "threads"};
inline const std::vector<std::string> kCacheFlags = {"policy", "sinks", "window", "chunk"};
inline const std::vector<std::string> kSamplingFlags = {"temperature", "top-k", "top-p", "min-p",
                                                        "repetition-penalty", "seed"};

struct Runtime {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Backend> backend;
};

// --model (required), --tokenizer (else the model's own vocabulary),
// --backend (cpu|cuda|auto, default auto), --threads.
absl::StatusOr<Runtime> LoadRuntime(const Flags& flags);

// Only the tokenizer: from --tokenizer, else the vocabulary inside --model.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const Flags& flags);

// --policy sink_window|window|dense|recompute (default sink_window),
// --sinks (default 4), --window (default 252).
absl::StatusOr<CacheConfig> ParseCacheConfig(const Flags& flags);
// --chunk: tokens per prefill step (default 64).
absl::StatusOr<int32_t> ParseChunk(const Flags& flags);

// --temperature --top-k --top-p --min-p --repetition-penalty --seed.
absl::StatusOr<SamplingParams> ParseSampling(const Flags& flags);

// Prints "<tool>: error: <message>" on one line to stderr; returns 1.
int Fail(const std::string& tool, const absl::Status& status);

// A tool's main(): runs `run` and turns a failed status into Fail's one line
// and exit status 1.
int ToolMain(const char* tool, absl::Status (*run)(int, char**), int argc, char** argv);

// Peak resident set size of this process, in KiB (VmHWM), or -1.
int64_t PeakRssKib();

}  // namespace sinkserve
