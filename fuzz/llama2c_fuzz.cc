// libFuzzer target: arbitrary bytes through the llama2.c checkpoint parser.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/model/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)sinkserve::ParseLlama2cCheckpoint(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
