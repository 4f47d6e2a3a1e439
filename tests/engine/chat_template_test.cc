#include "engine/text/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_replace.h"
#include "tests/engine/tiny_vocab.h"
#include "tests/test_data.h"
#include "engine/model/model_loader.h"

namespace sinkserve::testing {
namespace {

std::vector<int32_t> Cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The token layout as text: a whole control token shows as «piece», byte
// tokens as their bytes (U+2581 as a space). So "«<|im_start|>»user" says
// the marker is one token and "user" is text.
std::string Layout(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) {
    if (id >= kFirstByteToken && id < kFirstByteToken + 256) {
      out.push_back(static_cast<char>(id - kFirstByteToken));
    } else {
      out += "\xC2\xAB" + tok.vocab().tokens[id] + "\xC2\xBB";
    }
  }
  return absl::StrReplaceAll(out, {{"\xE2\x96\x81", " "}});
}

// A session with a system prompt and two user turns, as the engine feeds it.
std::string Conversation(const ChatTemplate& t, const Tokenizer& tok) {
  const std::string sys = "Be kind.";
  return Layout(tok, Cat({t.Preamble(sys), t.UserTurn("Hi", /*first=*/true, sys), t.UserTurn("Bye", false, sys)}));
}

TEST(ChatTemplateTest, NamesParseAndUnknownNamesSayWhatExists) {
  EXPECT_EQ(*ParseChatTemplate("raw"), ChatTemplateKind::kRaw);
  EXPECT_EQ(*ParseChatTemplate("mistral"), ChatTemplateKind::kMistral);
  EXPECT_EQ(*ParseChatTemplate("llama2"), ChatTemplateKind::kLlama2);
  EXPECT_EQ(*ParseChatTemplate("chatml"), ChatTemplateKind::kChatml);
  EXPECT_EQ(*ParseChatTemplate("qwen"), ChatTemplateKind::kChatml);
  EXPECT_EQ(*ParseChatTemplate("llama3"), ChatTemplateKind::kLlama3);
  EXPECT_EQ(*ParseChatTemplate("zephyr"), ChatTemplateKind::kZephyr);
  EXPECT_EQ(*ParseChatTemplate("phi3"), ChatTemplateKind::kPhi3);
  EXPECT_EQ(*ParseChatTemplate("gemma"), ChatTemplateKind::kGemma);
  absl::StatusOr<ChatTemplateKind> bad = ParseChatTemplate("vicuna");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("chatml"), absl::string_view::npos);
  EXPECT_NE(bad.status().message().find("gemma"), absl::string_view::npos);
  for (size_t i = 0; i < kAllChatTemplateKinds.size(); ++i) {
    const ChatTemplateKind k = kAllChatTemplateKinds[i];
    EXPECT_EQ(static_cast<size_t>(k), i) << "kAllChatTemplateKinds must follow the enum (the engine indexes by kind)";
    EXPECT_EQ(*ParseChatTemplate(ChatTemplateName(k)), k);
  }
}

// Templates as model files ship them (abridged where long, markers intact).
constexpr const char* kLlama2Jinja =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
    "{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
    "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
    "content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";
constexpr const char* kMistralJinja =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";
constexpr const char* kLlama3Jinja =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
constexpr const char* kQwen2Jinja =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    "You are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>"
    "assistant\\n' }}{% endif %}";
constexpr const char* kPhi3Jinja =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\\n' + "
    "message['content'] + '<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}{% elif (message['role'] == 'assistant') %}"
    "{{message['content'] + '<|end|>' + '\\n'}}{% endif %}{% endfor %}";
constexpr const char* kZephyrJinja =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
constexpr const char* kGemmaJinja =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] "
    "| trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";
constexpr const char* kVicunaJinja =
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {{ message['content'] }}\\n{% else %}"
    "ASSISTANT: {{ message['content'] }}</s>\\n{% endif %}{% endfor %}";

TEST(ChatTemplateTest, DetectsEachFamilyFromItsGgufTemplate) {
  const std::pair<const char*, ChatTemplateKind> cases[] = {
      {kLlama2Jinja, ChatTemplateKind::kLlama2}, {kMistralJinja, ChatTemplateKind::kMistral},
      {kLlama3Jinja, ChatTemplateKind::kLlama3}, {kQwen2Jinja, ChatTemplateKind::kChatml},
      {kPhi3Jinja, ChatTemplateKind::kPhi3},     {kZephyrJinja, ChatTemplateKind::kZephyr},
      {kGemmaJinja, ChatTemplateKind::kGemma},
  };
  for (const auto& [jinja, kind] : cases) {
    const DetectedTemplate d = DetectChatTemplateOrDefault(jinja);
    EXPECT_EQ(d.kind, kind) << ChatTemplateName(kind);
    EXPECT_FALSE(d.fallback) << ChatTemplateName(kind);
    EXPECT_EQ(DetectChatTemplate(jinja), kind);  // the old entry point agrees
  }
}

TEST(ChatTemplateTest, UnknownTemplatesFallBackToTheNamedDefault) {
  DetectedTemplate d = DetectChatTemplateOrDefault(kVicunaJinja);
  EXPECT_EQ(d.kind, ChatTemplateKind::kRaw);
  EXPECT_TRUE(d.fallback);
  d = DetectChatTemplateOrDefault(kVicunaJinja, ChatTemplateKind::kChatml);
  EXPECT_EQ(d.kind, ChatTemplateKind::kChatml);
  EXPECT_TRUE(d.fallback);
  EXPECT_EQ(DetectChatTemplate(kVicunaJinja), ChatTemplateKind::kRaw);
  // No template at all is a base model: raw, and nothing to warn about.
  for (const char* empty : {"", " \n"}) {
    d = DetectChatTemplateOrDefault(empty);
    EXPECT_EQ(d.kind, ChatTemplateKind::kRaw);
    EXPECT_FALSE(d.fallback);
  }
}

TEST(ChatTemplateTest, ChatmlRendersIncrementsWithControlTokens) {
  auto tok = TinyTokenizer();
  ChatTemplate t(ChatTemplateKind::kChatml, *tok);
  const int32_t start = TinySpecial("<|im_start|>"), end = TinySpecial("<|im_end|>");
  EXPECT_EQ(t.Preamble("Be kind."),
            Cat({{1, start}, TinyBytes("system\nBe kind."), {end}, TinyBytes("\n")}));
  EXPECT_EQ(t.Preamble(""), std::vector<int32_t>{1});
  const auto user_assistant = Cat({{start}, TinyBytes("user\nHi"), {end}, TinyBytes("\n"), {start},
                                   TinyBytes("assistant\n")});
  EXPECT_EQ(t.UserTurn("Hi", /*first=*/true, ""), user_assistant);
  // Later turns first close the previous answer (its end token was never fed).
  EXPECT_EQ(t.UserTurn("Hi", /*first=*/false, ""), Cat({{end}, TinyBytes("\n"), user_assistant}));
  EXPECT_EQ(t.end_tokens(), std::vector<int32_t>{end});
  EXPECT_EQ(Conversation(t, *tok),
            "«<s>»«<|im_start|>»system\nBe kind.«<|im_end|>»\n"
            "«<|im_start|>»user\nHi«<|im_end|>»\n«<|im_start|>»assistant\n"
            "«<|im_end|>»\n«<|im_start|>»user\nBye«<|im_end|>»\n«<|im_start|>»assistant\n");
}

TEST(ChatTemplateTest, Llama2PutsTheSystemPromptInTheFirstInst) {
  auto tok = TinyTokenizer();
  ChatTemplate t(ChatTemplateKind::kLlama2, *tok);
  EXPECT_EQ(t.Preamble("Be kind."), std::vector<int32_t>{1});
  EXPECT_EQ(t.UserTurn("Hi", true, "Be kind."), TinyBytes("[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST]"));
  EXPECT_EQ(t.UserTurn("Hi", false, "Be kind."), Cat({{2, 1}, TinyBytes("[INST] Hi [/INST]")}));
  EXPECT_TRUE(t.end_tokens().empty());  // EOS ends llama2 answers
  // [INST] stays text even where the vocabulary has an [INST] token.
  EXPECT_EQ(Conversation(t, *tok),
            "«<s>»[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST]«</s>»«<s>»[INST] Bye [/INST]");
}

TEST(ChatTemplateTest, MistralHasNoSysBlockAndNoBosPerTurn) {
  // Mistral v0.1/v0.2: [INST] is text in the vocabulary.
  auto text_tok = TinyTokenizer(12);
  ChatTemplate text(ChatTemplateKind::kMistral, *text_tok);
  EXPECT_EQ(Conversation(text, *text_tok), "«<s>»[INST] Be kind.\n\nHi [/INST]«</s>»[INST] Bye [/INST]");
  EXPECT_EQ(text.UserTurn("Hi", true, ""), TinyBytes("[INST] Hi [/INST]"));
  EXPECT_TRUE(text.end_tokens().empty());
  // Mistral v3 on: [INST] and [/INST] are control tokens, matched whole.
  auto tok = TinyTokenizer();
  ChatTemplate t(ChatTemplateKind::kMistral, *tok);
  EXPECT_EQ(Conversation(t, *tok), "«<s>»«[INST]» Be kind.\n\nHi«[/INST]»«</s>»«[INST]» Bye«[/INST]»");
  EXPECT_EQ(t.UserTurn("Hi", true, ""),
            Cat({{TinySpecial("[INST]")}, TinyBytes(" Hi"), {TinySpecial("[/INST]")}}));
}

TEST(ChatTemplateTest, Llama3AndZephyr) {
  auto tok = TinyTokenizer();
  ChatTemplate l3(ChatTemplateKind::kLlama3, *tok);
  const int32_t sh = TinySpecial("<|start_header_id|>"), eh = TinySpecial("<|end_header_id|>"),
                eot = TinySpecial("<|eot_id|>");
  EXPECT_EQ(l3.UserTurn("Hi", false, ""),
            Cat({{eot, sh}, TinyBytes("user"), {eh}, TinyBytes("\n\nHi"), {eot, sh}, TinyBytes("assistant"), {eh},
                 TinyBytes("\n\n")}));
  EXPECT_EQ(l3.end_tokens(), (std::vector<int32_t>{eot, TinySpecial("<|eom_id|>")}));
  EXPECT_EQ(Conversation(l3, *tok),
            "«<s>»«<|start_header_id|>»system«<|end_header_id|>»\n\nBe kind.«<|eot_id|>»"
            "«<|start_header_id|>»user«<|end_header_id|>»\n\nHi«<|eot_id|>»«<|start_header_id|>»assistant"
            "«<|end_header_id|>»\n\n«<|eot_id|>»«<|start_header_id|>»user«<|end_header_id|>»\n\nBye«<|eot_id|>»"
            "«<|start_header_id|>»assistant«<|end_header_id|>»\n\n");
  ChatTemplate z(ChatTemplateKind::kZephyr, *tok);
  EXPECT_EQ(z.UserTurn("Hi", true, ""), Cat({{TinySpecial("<|user|>")}, TinyBytes("\nHi"), {2}, TinyBytes("\n"),
                                             {TinySpecial("<|assistant|>")}, TinyBytes("\n")}));
  EXPECT_EQ(Conversation(z, *tok),
            "«<s>»«<|system|>»\nBe kind.«</s>»\n«<|user|>»\nHi«</s>»\n«<|assistant|>»\n"
            "«</s>»\n«<|user|>»\nBye«</s>»\n«<|assistant|>»\n");
  EXPECT_TRUE(z.end_tokens().empty());  // EOS ends zephyr answers
}

TEST(ChatTemplateTest, Phi3ClosesEveryMessageWithEnd) {
  auto tok = TinyTokenizer();
  ChatTemplate t(ChatTemplateKind::kPhi3, *tok);
  EXPECT_EQ(Conversation(t, *tok),
            "«<s>»«<|system|>»\nBe kind.«<|end|>»\n«<|user|>»\nHi«<|end|>»\n«<|assistant|>»\n"
            "«<|end|>»\n«<|user|>»\nBye«<|end|>»\n«<|assistant|>»\n");
  EXPECT_EQ(t.end_tokens(), std::vector<int32_t>{TinySpecial("<|end|>")});
}

TEST(ChatTemplateTest, GemmaPutsTheSystemPromptInTheFirstUserTurn) {
  auto tok = TinyTokenizer();
  ChatTemplate t(ChatTemplateKind::kGemma, *tok);
  EXPECT_EQ(t.Preamble("Be kind."), std::vector<int32_t>{1});
  EXPECT_EQ(Conversation(t, *tok),
            "«<s>»«<start_of_turn>»user\nBe kind.\n\nHi«<end_of_turn>»\n«<start_of_turn>»model\n"
            "«<end_of_turn>»\n«<start_of_turn>»user\nBye«<end_of_turn>»\n«<start_of_turn>»model\n");
  EXPECT_EQ(t.end_tokens(), std::vector<int32_t>{TinySpecial("<end_of_turn>")});
}

// A marker the vocabulary lacks is encoded as text, in one piece with the
// text around it.
TEST(ChatTemplateTest, MissingMarkersBecomeText) {
  auto tok = TinyTokenizer(/*n_specials=*/0);
  ChatTemplate t(ChatTemplateKind::kChatml, *tok);
  EXPECT_EQ(t.UserTurn("Hi", true, ""), TinyBytes("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
  EXPECT_TRUE(t.end_tokens().empty());
}

// User text naming a control token stays text: no injection.
TEST(ChatTemplateTest, UserTextNeverBecomesAControlToken) {
  auto tok = TinyTokenizer();
  ChatTemplate t(ChatTemplateKind::kChatml, *tok);
  const std::vector<int32_t> ids = t.UserTurn("<|im_end|>", true, "");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), TinySpecial("<|im_end|>")), 1);  // the template's own only
}

// The EOT/EOM ids a file declares end answers under every template.
TEST(ChatTemplateTest, DeclaredEotAndEomAreEndTokens) {
  Vocab v = TinyTokenizer()->vocab();
  v.eot_id = TinySpecial("<|im_end|>");
  v.eom_id = TinySpecial("<|eom_id|>");
  auto tok = *Tokenizer::Create(std::move(v));
  for (ChatTemplateKind kind : kAllChatTemplateKinds) {
    ChatTemplate t(kind, *tok);
    const auto& ends = t.end_tokens();
    EXPECT_EQ(std::count(ends.begin(), ends.end(), TinySpecial("<|im_end|>")), 1) << ChatTemplateName(kind);
    EXPECT_EQ(std::count(ends.begin(), ends.end(), TinySpecial("<|eom_id|>")), 1) << ChatTemplateName(kind);
  }
}

TEST(ChatTemplateTest, RawMatchesTheReferenceTokenization) {
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  auto vocab = LoadVocab(SharedPath("models/stories260K/tok512.bin"));
  ASSERT_TRUE(vocab.ok());
  auto tok = *Tokenizer::Create(*std::move(vocab));
  ChatTemplate t(ChatTemplateKind::kRaw, *tok);
  // A new session starts with BOS, so "Once upon a time" is llama2.c's 1 403 407 261 378.
  EXPECT_EQ(Cat({t.Preamble(""), t.UserTurn("Once upon a time", true, "")}),
            (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(t.RawText(""), std::vector<int32_t>{});
}

}  // namespace
}  // namespace sinkserve::testing
