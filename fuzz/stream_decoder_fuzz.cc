// libFuzzer target: arbitrary token ids through StreamDecoder, the piece that
// turns a turn's tokens into the UTF-8 text streamed to clients. Every piece
// must be valid UTF-8, and when the bytes are valid UTF-8 the pieces must
// add up to exactly the decoded bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/text/stream_decoder.h"
#include "fuzz/fuzz_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sinkserve;
  if (size == 0) return 0;
  const auto& tokenizers = fuzzing::Tokenizers();
  const Tokenizer& tok = *tokenizers[data[0] % tokenizers.size()];
  StreamDecoder decoder(tok);
  std::string streamed, raw;
  int32_t prev = -1;
  for (size_t i = 1; i + 3 <= size; i += 3) {
    // 3 bytes an id; some land out of range on purpose.
    const int32_t id = static_cast<int32_t>(data[i] | data[i + 1] << 8 | data[i + 2] << 16) % (tok.size() + 8);
    const std::string piece = decoder.Push(id);
    if (!fuzzing::ValidUtf8(piece)) std::abort();
    streamed += piece;
    raw += tok.DecodeToken(prev, id);
    prev = id;
  }
  const std::string rest = decoder.Flush();
  if (!fuzzing::ValidUtf8(rest)) std::abort();
  streamed += rest;
  if (fuzzing::ValidUtf8(raw) && streamed != raw) std::abort();
  return 0;
}
