// libFuzzer target: arbitrary bytes through the GGUF container parser, the
// llama mapping (config, shapes, dtype conversion) and the vocabulary reader.
// Any input must give a Status, never a crash, OOB read or runaway allocation.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<sinkserve::gguf::File> file = sinkserve::gguf::Parse(bytes);
  if (!file.ok()) return 0;
  // Exercise the typed getters and array decoding on every key.
  for (const auto& [key, value] : file->metadata) {
    if (value.type == sinkserve::gguf::ValueType::kArray) {
      (void)file->ArrayItems(value);
      (void)file->GetStringArray(key);
      (void)file->GetIntArray(key);
      (void)file->GetFloatArray(key);
    } else {
      (void)file->GetInt(key);
      (void)file->GetFloat(key);
    }
  }
  for (const auto& tensor : file->tensors) (void)file->ReadTensorF32(tensor);
  (void)sinkserve::gguf::VocabFromGguf(*file);
  (void)sinkserve::gguf::ModelFromGguf(*file);
  return 0;
}
