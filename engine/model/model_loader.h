// Loading models and vocabularies from files. Every parser treats its input
// as hostile: each offset, size and count is bounds-checked, and a truncated,
// corrupt or lying file gets a clear error, never a crash.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/model/model.h"
#include "engine/model/vocab.h"

namespace sinkserve {

// A model file, format detected by magic: GGUF v2/v3 (arch llama, qwen2 or mpt;
// its weights stay in their types, in the file's memory mapping) or a
// llama2.c checkpoint (.bin, legacy v0 header; fp32, copied).
absl::StatusOr<Model> LoadModel(const std::string& path);

// A vocabulary file, format detected by content: GGUF (a vocab-only GGUF is
// fine), llama2.c tokenizer.bin, or a SentencePiece .model protobuf.
absl::StatusOr<Vocab> LoadVocab(const std::string& path);

// The individual vocabulary formats (engine/model/vocab_files.cc).
absl::StatusOr<Vocab> ParseLlama2cTokenizer(std::string_view bytes, int32_t expected_size = -1);
absl::StatusOr<Vocab> ParseSentencePieceModel(std::string_view bytes);

// Whole-file read with a clear NOT_FOUND / error message.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path);

}  // namespace sinkserve
