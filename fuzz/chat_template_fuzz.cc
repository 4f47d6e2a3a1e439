// libFuzzer target: the chat templates. The input is split into a template
// kind, a system prompt and a user message; every template renders them on
// every vocabulary with ids in range, and arbitrary bytes as a model's Jinja
// template are detected (or not) without harm.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "engine/text/chat_template.h"
#include "fuzz/fuzz_data.h"

namespace {

void CheckIds(const std::vector<int32_t>& ids, const sinkserve::Tokenizer& tok) {
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.size()) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sinkserve;
  if (size < 2) return 0;
  const auto& tokenizers = fuzzing::Tokenizers();
  const Tokenizer& tok = *tokenizers[data[0] % tokenizers.size()];
  const ChatTemplateKind kind = kAllChatTemplateKinds[data[1] % std::size(kAllChatTemplateKinds)];
  const std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);
  const size_t split = rest.find('\0');
  const std::string_view system = split == std::string_view::npos ? "" : rest.substr(0, split);
  const std::string_view user = split == std::string_view::npos ? rest : rest.substr(split + 1);

  const ChatTemplate tmpl(kind, tok);
  CheckIds(tmpl.Preamble(system), tok);
  CheckIds(tmpl.UserTurn(user, /*first=*/true, system), tok);
  CheckIds(tmpl.UserTurn(user, /*first=*/false, system), tok);
  CheckIds(tmpl.RawText(user), tok);
  CheckIds(tmpl.end_tokens(), tok);
  (void)DetectChatTemplateOrDefault(rest);
  (void)ParseChatTemplate(user);
  return 0;
}
