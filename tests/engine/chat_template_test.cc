#include "engine/text/chat_template.h"

#include <gtest/gtest.h>

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

TEST(ChatTemplateTest, NamesParseAndUnknownNamesSayWhatExists) {
  EXPECT_EQ(*ParseChatTemplate("raw"), ChatTemplateKind::kRaw);
  EXPECT_EQ(*ParseChatTemplate("mistral"), ChatTemplateKind::kLlama2);
  EXPECT_EQ(*ParseChatTemplate("llama2"), ChatTemplateKind::kLlama2);
  EXPECT_EQ(*ParseChatTemplate("chatml"), ChatTemplateKind::kChatml);
  EXPECT_EQ(*ParseChatTemplate("llama3"), ChatTemplateKind::kLlama3);
  EXPECT_EQ(*ParseChatTemplate("zephyr"), ChatTemplateKind::kZephyr);
  absl::StatusOr<ChatTemplateKind> bad = ParseChatTemplate("vicuna");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("chatml"), absl::string_view::npos);
  for (ChatTemplateKind k : {ChatTemplateKind::kRaw, ChatTemplateKind::kLlama2, ChatTemplateKind::kChatml,
                             ChatTemplateKind::kLlama3, ChatTemplateKind::kZephyr}) {
    EXPECT_EQ(*ParseChatTemplate(ChatTemplateName(k)), k);
  }
}

TEST(ChatTemplateTest, DetectsGgufJinjaTemplates) {
  EXPECT_EQ(DetectChatTemplate(""), ChatTemplateKind::kRaw);
  EXPECT_EQ(DetectChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}"), ChatTemplateKind::kRaw);
  EXPECT_EQ(DetectChatTemplate("{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}"),
            ChatTemplateKind::kLlama2);
  EXPECT_EQ(DetectChatTemplate("{{'<|im_start|>' + message['role'] + '\n'}}"), ChatTemplateKind::kChatml);
  EXPECT_EQ(DetectChatTemplate("<|start_header_id|>' + message['role'] + '<|end_header_id|>"),
            ChatTemplateKind::kLlama3);
  EXPECT_EQ(DetectChatTemplate("{{ '<|user|>\n' + message['content'] + eos_token }}"), ChatTemplateKind::kZephyr);
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
}

TEST(ChatTemplateTest, Llama2PutsTheSystemPromptInTheFirstInst) {
  auto tok = TinyTokenizer();
  ChatTemplate t(ChatTemplateKind::kLlama2, *tok);
  EXPECT_EQ(t.Preamble("Be kind."), std::vector<int32_t>{1});
  EXPECT_EQ(t.UserTurn("Hi", true, "Be kind."), TinyBytes("[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST]"));
  EXPECT_EQ(t.UserTurn("Hi", false, "Be kind."), Cat({{2, 1}, TinyBytes("[INST] Hi [/INST]")}));
  EXPECT_TRUE(t.end_tokens().empty());  // EOS ends llama2 answers
}

TEST(ChatTemplateTest, Llama3AndZephyr) {
  auto tok = TinyTokenizer();
  ChatTemplate l3(ChatTemplateKind::kLlama3, *tok);
  const int32_t sh = TinySpecial("<|start_header_id|>"), eh = TinySpecial("<|end_header_id|>"),
                eot = TinySpecial("<|eot_id|>");
  EXPECT_EQ(l3.UserTurn("Hi", false, ""),
            Cat({{eot, sh}, TinyBytes("user"), {eh}, TinyBytes("\n\nHi"), {eot, sh}, TinyBytes("assistant"), {eh},
                 TinyBytes("\n\n")}));
  EXPECT_EQ(l3.end_tokens(), std::vector<int32_t>{eot});
  ChatTemplate z(ChatTemplateKind::kZephyr, *tok);
  EXPECT_EQ(z.UserTurn("Hi", true, ""), Cat({{TinySpecial("<|user|>")}, TinyBytes("\nHi"), {2}, TinyBytes("\n"),
                                             {TinySpecial("<|assistant|>")}, TinyBytes("\n")}));
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
