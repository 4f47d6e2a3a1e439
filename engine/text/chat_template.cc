#include "engine/text/chat_template.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace sinkserve {
namespace {

// Control-token pieces each kind renders (BOS/EOS go through the vocabulary's
// ids instead), resolved against the vocabulary once per ChatTemplate.
std::vector<std::string> MarkersOf(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kRaw:
    case ChatTemplateKind::kLlama2:
      return {};  // only BOS/EOS; llama2's [INST] is plain text in its vocabulary
    case ChatTemplateKind::kChatml:
      return {"<|im_start|>", "<|im_end|>"};
    case ChatTemplateKind::kLlama3:
      return {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"};
    case ChatTemplateKind::kZephyr:
      return {"<|system|>", "<|user|>", "<|assistant|>"};
    case ChatTemplateKind::kMistral:
      return {"[INST]", "[/INST]"};  // control tokens from Mistral v3 on; text before
    case ChatTemplateKind::kPhi3:
      return {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>"};
    case ChatTemplateKind::kGemma:
      return {"<start_of_turn>", "<end_of_turn>"};
  }
  return {};
}

// The markers that end an assistant message in each kind.
std::vector<std::string> EndMarkersOf(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kChatml:
      return {"<|im_end|>"};
    case ChatTemplateKind::kLlama3:
      return {"<|eot_id|>", "<|eom_id|>"};
    case ChatTemplateKind::kPhi3:
      return {"<|end|>"};
    case ChatTemplateKind::kGemma:
      return {"<end_of_turn>"};
    default:
      return {};  // EOS ends llama2, mistral, zephyr and raw answers
  }
}

}  // namespace

const char* ChatTemplateName(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kRaw: return "raw";
    case ChatTemplateKind::kLlama2: return "llama2";
    case ChatTemplateKind::kChatml: return "chatml";
    case ChatTemplateKind::kLlama3: return "llama3";
    case ChatTemplateKind::kZephyr: return "zephyr";
    case ChatTemplateKind::kMistral: return "mistral";
    case ChatTemplateKind::kPhi3: return "phi3";
    case ChatTemplateKind::kGemma: return "gemma";
  }
  return "unknown";
}

std::string ChatTemplateNameList() {
  std::vector<std::string> names;
  for (ChatTemplateKind kind : kAllChatTemplateKinds) names.push_back(ChatTemplateName(kind));
  names.push_back("qwen");
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<ChatTemplateKind> ParseChatTemplate(std::string_view name) {
  for (ChatTemplateKind kind : kAllChatTemplateKinds) {
    if (name == ChatTemplateName(kind)) return kind;
  }
  if (name == "qwen") return ChatTemplateKind::kChatml;
  return absl::InvalidArgumentError(absl::StrFormat("unknown chat template '%s'; use one of %s",
                                                    absl::string_view(name.data(), name.size()),
                                                    ChatTemplateNameList()));
}

DetectedTemplate DetectChatTemplateOrDefault(std::string_view jinja, ChatTemplateKind default_kind) {
  const absl::string_view j(jinja.data(), jinja.size());
  auto has = [&j](absl::string_view marker) { return absl::StrContains(j, marker); };
  // Most specific markers first: llama3 and chatml templates may also
  // mention [INST] or <|user|> in comments or tool sections, the reverse is
  // rare.
  if (has("<|start_header_id|>")) return {ChatTemplateKind::kLlama3, false};
  if (has("<|im_start|>")) return {ChatTemplateKind::kChatml, false};
  if (has("<start_of_turn>")) return {ChatTemplateKind::kGemma, false};
  // Phi-3 closes every message with <|end|>; Zephyr with the EOS token.
  if (has("<|user|>")) return {has("<|end|>") ? ChatTemplateKind::kPhi3 : ChatTemplateKind::kZephyr, false};
  // Llama 2 chat wraps its system prompt in <<SYS>>; Mistral's templates
  // never do (they prepend it to the first user message, or have none).
  if (has("[INST]")) return {has("<<SYS>>") ? ChatTemplateKind::kLlama2 : ChatTemplateKind::kMistral, false};
  const bool empty = std::all_of(j.begin(), j.end(), [](char c) { return c == ' ' || c == '\n' || c == '\t'; });
  return {default_kind, !empty};
}

ChatTemplateKind DetectChatTemplate(std::string_view jinja) { return DetectChatTemplateOrDefault(jinja).kind; }

ChatTemplate::ChatTemplate(ChatTemplateKind kind, const Tokenizer& tokenizer) : kind_(kind), tokenizer_(tokenizer) {
  const std::vector<std::string> markers = MarkersOf(kind);
  const auto& tokens = tokenizer_.vocab().tokens;
  for (size_t i = 0; i < tokens.size(); ++i) {
    for (const std::string& m : markers) {
      if (tokens[i] == m && !specials_.contains(m)) specials_[m] = static_cast<int32_t>(i);
    }
  }
  auto add_end = [this](int32_t id) {
    if (id >= 0 && std::find(end_tokens_.begin(), end_tokens_.end(), id) == end_tokens_.end()) {
      end_tokens_.push_back(id);
    }
  };
  for (const std::string& end : EndMarkersOf(kind)) add_end(FindSpecial(end));
  // What the file declares ends a turn whatever the template: a model may
  // emit its EOT even when served with another (or the raw) template.
  add_end(tokenizer_.vocab().eot_id);
  add_end(tokenizer_.vocab().eom_id);
}

int32_t ChatTemplate::FindSpecial(const std::string& piece) const {
  auto it = specials_.find(piece);
  return it == specials_.end() ? -1 : it->second;
}

std::vector<int32_t> ChatTemplate::Render(const std::vector<Piece>& pieces) const {
  std::vector<int32_t> ids;
  // Text runs, including special pieces the vocabulary lacks, are encoded in
  // one call: SentencePiece's dummy prefix then appears once per run, where
  // llama.cpp puts it (at the start and after each control token).
  std::string text;
  auto flush = [&] {
    if (text.empty()) return;
    std::vector<int32_t> more = tokenizer_.Encode(text, /*add_bos=*/false);
    ids.insert(ids.end(), more.begin(), more.end());
    text.clear();
  };
  for (const Piece& p : pieces) {
    if (p.text.empty()) continue;
    int32_t special = -1;
    if (p.special) {
      if (p.text == "<s>" || p.text == "<|begin_of_text|>") special = tokenizer_.bos_id();
      else if (p.text == "</s>") special = tokenizer_.eos_id();
      else special = FindSpecial(p.text);
    }
    if (special >= 0) {
      flush();
      ids.push_back(special);
    } else {
      text += p.text;
    }
  }
  flush();
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
    case ChatTemplateKind::kMistral:
    case ChatTemplateKind::kGemma:
      break;  // inside the first user turn
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
    case ChatTemplateKind::kPhi3:
      pieces = {{true, "<|system|>"}, {false, "\n" + sys}, {true, "<|end|>"}, {false, "\n"}};
      break;
  }
  std::vector<int32_t> rest = Render(pieces);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

// Mistral: "[INST] user [/INST]" as text where [INST] is not a token (v0.1,
// v0.2); from v3 on both are control tokens and the message sits between
// them. Unlike llama2 a later turn repeats no BOS.
std::vector<int32_t> ChatTemplate::MistralTurn(std::string_view body, bool first) const {
  std::vector<Piece> pieces;
  if (!first) pieces.push_back({true, "</s>"});
  if (FindSpecial("[INST]") >= 0 && FindSpecial("[/INST]") >= 0) {
    // SentencePiece adds the dummy-prefix space itself after a control token.
    const bool prefixed = tokenizer_.vocab().type == VocabType::kSentencePiece && tokenizer_.vocab().add_space_prefix;
    std::string text(prefixed ? 0 : 1, ' ');
    text.append(body);
    pieces.insert(pieces.end(), {{true, "[INST]"}, {false, std::move(text)}, {true, "[/INST]"}});
  } else {
    std::string text = "[INST] ";
    text.append(body);
    text.append(" [/INST]");
    pieces.push_back({false, std::move(text)});
  }
  return Render(pieces);
}

std::vector<int32_t> ChatTemplate::UserTurn(std::string_view text, bool first, std::string_view system_prompt) const {
  const std::string user(text);
  // Templates without a system role put the system prompt in the first turn.
  const std::string sys_first = first && !system_prompt.empty() ? std::string(system_prompt) + "\n\n" : "";
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
    case ChatTemplateKind::kMistral:
      return MistralTurn(sys_first + user, first);
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
    case ChatTemplateKind::kPhi3:
      if (!first) pieces = {{true, "<|end|>"}, {false, "\n"}};
      pieces.insert(pieces.end(), {{true, "<|user|>"}, {false, "\n" + user}, {true, "<|end|>"}, {false, "\n"},
                                   {true, "<|assistant|>"}, {false, "\n"}});
      break;
    case ChatTemplateKind::kGemma:
      if (!first) pieces = {{true, "<end_of_turn>"}, {false, "\n"}};
      pieces.insert(pieces.end(), {{true, "<start_of_turn>"}, {false, "user\n" + sys_first + user},
                                   {true, "<end_of_turn>"}, {false, "\n"}, {true, "<start_of_turn>"},
                                   {false, "model\n"}});
      break;
  }
  return Render(pieces);
}

std::vector<int32_t> ChatTemplate::RawText(std::string_view text) const {
  if (text.empty()) return {};
  return tokenizer_.Encode(text, /*add_bos=*/false);
}

}  // namespace sinkserve
