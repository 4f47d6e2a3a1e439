#include "engine/text/chat_template.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sinkserve {

const char* ChatTemplateName(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kRaw: return "raw";
    case ChatTemplateKind::kLlama2: return "llama2";
    case ChatTemplateKind::kChatml: return "chatml";
    case ChatTemplateKind::kLlama3: return "llama3";
    case ChatTemplateKind::kZephyr: return "zephyr";
  }
  return "unknown";
}

absl::StatusOr<ChatTemplateKind> ParseChatTemplate(std::string_view name) {
  if (name == "raw") return ChatTemplateKind::kRaw;
  if (name == "llama2" || name == "mistral") return ChatTemplateKind::kLlama2;
  if (name == "chatml") return ChatTemplateKind::kChatml;
  if (name == "llama3") return ChatTemplateKind::kLlama3;
  if (name == "zephyr") return ChatTemplateKind::kZephyr;
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown chat template '%s'; use one of raw, llama2, mistral, chatml, llama3, zephyr",
      absl::string_view(name.data(), name.size())));
}

ChatTemplateKind DetectChatTemplate(std::string_view jinja) {
  const absl::string_view j(jinja.data(), jinja.size());
  // Most specific markers first: llama3 and chatml templates may also
  // mention [INST] in comments, the reverse is rare.
  if (absl::StrContains(j, "<|start_header_id|>")) return ChatTemplateKind::kLlama3;
  if (absl::StrContains(j, "<|im_start|>")) return ChatTemplateKind::kChatml;
  if (absl::StrContains(j, "<|user|>")) return ChatTemplateKind::kZephyr;
  if (absl::StrContains(j, "[INST]")) return ChatTemplateKind::kLlama2;
  return ChatTemplateKind::kRaw;
}

ChatTemplate::ChatTemplate(ChatTemplateKind kind, const Tokenizer& tokenizer) : kind_(kind), tokenizer_(tokenizer) {
  std::vector<std::string> markers;
  switch (kind) {
    case ChatTemplateKind::kRaw:
    case ChatTemplateKind::kLlama2:
      break;  // only BOS/EOS
    case ChatTemplateKind::kChatml:
      markers = {"<|im_start|>", "<|im_end|>"};
      break;
    case ChatTemplateKind::kLlama3:
      markers = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
      break;
    case ChatTemplateKind::kZephyr:
      markers = {"<|system|>", "<|user|>", "<|assistant|>"};
      break;
  }
  const auto& tokens = tokenizer_.vocab().tokens;
  for (size_t i = 0; i < tokens.size(); ++i) {
    for (const std::string& m : markers) {
      if (tokens[i] == m && !specials_.contains(m)) specials_[m] = static_cast<int32_t>(i);
    }
  }
  for (const char* end : {"<|im_end|>", "<|eot_id|>"}) {
    const int32_t id = FindSpecial(end);
    if (id >= 0) end_tokens_.push_back(id);
  }
}

int32_t ChatTemplate::FindSpecial(const std::string& piece) const {
  auto it = specials_.find(piece);
  return it == specials_.end() ? -1 : it->second;
}

std::vector<int32_t> ChatTemplate::Render(const std::vector<Piece>& pieces) const {
  std::vector<int32_t> ids;
  for (const Piece& p : pieces) {
    if (p.text.empty()) continue;
    int32_t special = -1;
    if (p.special) {
      if (p.text == "<s>" || p.text == "<|begin_of_text|>") special = tokenizer_.bos_id();
      else if (p.text == "</s>") special = tokenizer_.eos_id();
      else special = FindSpecial(p.text);
    }
    if (special >= 0) {
      ids.push_back(special);
    } else {
      std::vector<int32_t> more = tokenizer_.Encode(p.text, /*add_bos=*/false);
      ids.insert(ids.end(), more.begin(), more.end());
    }
  }
  return ids;
}

std::vector<int32_t> ChatTemplate::Preamble(std::string_view system_prompt) const {
  std::vector<int32_t> ids;
  if (tokenizer_.bos_id() >= 0) ids.push_back(tokenizer_.bos_id());
  if (system_prompt.empty()) return ids;
  const std::string sys(system_prompt);
  std::vector<Piece> pieces;
  switch (kind_) {
    case ChatTemplateKind::kRaw:
      pieces = {{false, sys}};
      break;
    case ChatTemplateKind::kLlama2:
      break;  // inside the first [INST]
    case ChatTemplateKind::kChatml:
      pieces = {{true, "<|im_start|>"}, {false, "system\n" + sys}, {true, "<|im_end|>"}, {false, "\n"}};
      break;
    case ChatTemplateKind::kLlama3:
      pieces = {{true, "<|start_header_id|>"}, {false, "system"}, {true, "<|end_header_id|>"},
                {false, "\n\n" + sys}, {true, "<|eot_id|>"}};
      break;
    case ChatTemplateKind::kZephyr:
      pieces = {{true, "<|system|>"}, {false, "\n" + sys}, {true, "</s>"}, {false, "\n"}};
      break;
  }
  std::vector<int32_t> rest = Render(pieces);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

std::vector<int32_t> ChatTemplate::UserTurn(std::string_view text, bool first, std::string_view system_prompt) const {
  const std::string user(text);
  std::vector<Piece> pieces;
  switch (kind_) {
    case ChatTemplateKind::kRaw:
      return RawText(text);
    case ChatTemplateKind::kLlama2: {
      if (!first) pieces = {{true, "</s>"}, {true, "<s>"}};
      std::string body = "[INST] ";
      if (first && !system_prompt.empty()) {
        body += absl::StrCat("<<SYS>>\n", std::string(system_prompt), "\n<</SYS>>\n\n");
      }
      pieces.push_back({false, body + user + " [/INST]"});
      break;
    }
    case ChatTemplateKind::kChatml:
      if (!first) pieces = {{true, "<|im_end|>"}, {false, "\n"}};
      pieces.insert(pieces.end(), {{true, "<|im_start|>"}, {false, "user\n" + user}, {true, "<|im_end|>"},
                                   {false, "\n"}, {true, "<|im_start|>"}, {false, "assistant\n"}});
      break;
    case ChatTemplateKind::kLlama3:
      if (!first) pieces = {{true, "<|eot_id|>"}};
      pieces.insert(pieces.end(), {{true, "<|start_header_id|>"}, {false, "user"}, {true, "<|end_header_id|>"},
                                   {false, "\n\n" + user}, {true, "<|eot_id|>"}, {true, "<|start_header_id|>"},
                                   {false, "assistant"}, {true, "<|end_header_id|>"}, {false, "\n\n"}});
      break;
    case ChatTemplateKind::kZephyr:
      if (!first) pieces = {{true, "</s>"}, {false, "\n"}};
      pieces.insert(pieces.end(), {{true, "<|user|>"}, {false, "\n" + user}, {true, "</s>"}, {false, "\n"},
                                   {true, "<|assistant|>"}, {false, "\n"}});
      break;
  }
  return Render(pieces);
}

std::vector<int32_t> ChatTemplate::RawText(std::string_view text) const {
  if (text.empty()) return {};
  return tokenizer_.Encode(text, /*add_bos=*/false);
}

}  // namespace sinkserve
