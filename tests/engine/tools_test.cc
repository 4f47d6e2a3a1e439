// The offline tools end to end: the contract outputs, and bad input ending in
// one line on stderr and a non-zero exit, never a crash.
#include <gtest/gtest.h>


#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/golden.h"
#include "tests/run_tool.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

namespace fs = std::filesystem;

using Result = testing::ToolResult;

// Each test's files live in its own temporary directory, removed after it.
class ToolsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(tmp_.path().empty()) << "cannot make a temporary directory"; }
  Result RunTool(const std::string& tool, const std::vector<std::string>& args, const std::string& stdin_text = "") {
    return testing::RunTool(tmp_.path(), tool, args, stdin_text);
  }
  fs::path TempFile(const std::string& name) const { return tmp_.path() / name; }

  testing::ScopedTempDir tmp_;
};

const std::string kModel = "models/stories260K/stories260K.bin";
const std::string kTok = "models/stories260K/tok512.bin";

std::vector<std::string> ModelArgs() {
  return {"--model", testing::SharedPath(kModel), "--tokenizer", testing::SharedPath(kTok)};
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A failure must be one line on stderr, a non-zero exit status, no signal.
void ExpectCleanFailure(const Result& r, const std::string& needle) {
  EXPECT_GT(r.exit_code, 0) << "stderr: " << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr was: " << r.err;
}

TEST_F(ToolsTest, TokenizeMatchesLlama2cReference) {
  REQUIRE_SHARED(kTok);
  Result r = RunTool("sinkserve-tokenize", {"--tokenizer", testing::SharedPath(kTok)}, "Once upon a time");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1 403 407 261 378\n");
  r = RunTool("sinkserve-tokenize", {"--tokenizer", testing::SharedPath(kTok), "--no-bos"}, "Once upon a time");
  EXPECT_EQ(r.out, "403 407 261 378\n");
}

TEST_F(ToolsTest, GenerateGreedyMatchesGolden) {
  REQUIRE_SHARED(kModel);
  testing::GoldenRun golden;
  ASSERT_TRUE(testing::LoadGolden("stories260K_once_n64", &golden));
  const std::vector<int32_t> want(golden.tokens.begin() + golden.prompt.size(), golden.tokens.end());
  for (const char* policy : {"dense", "sink_window"}) {
    Result r = RunTool("sinkserve-generate",
                       Concat(ModelArgs(), {"--prompt", "Once upon a time", "--max-new-tokens",
                                            std::to_string(want.size()), "--temperature", "0", "--print-ids",
                                            "--policy", policy, "--backend", "cpu"}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, absl::StrJoin(want, " ") + "\n") << policy;
  }
}

TEST_F(ToolsTest, GenerateStreamsTextWithThePrompt) {
  REQUIRE_SHARED(kModel);
  Result r = RunTool("sinkserve-generate", Concat(ModelArgs(), {"--prompt", "Once upon a time", "--max-new-tokens",
                                                                "20", "--temperature", "0", "--quiet"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl named Lily.", 0), 0u) << r.out;
}

TEST_F(ToolsTest, PerplexityPrintsTheContractLine) {
  REQUIRE_SHARED(kModel);
  const fs::path ids = TempFile("ids.txt");
  testing::GoldenRun golden;
  ASSERT_TRUE(testing::LoadGolden("stories260K_once_n64", &golden));
  std::ofstream(ids) << absl::StrJoin(golden.tokens, " ");
  Result r = RunTool("sinkserve-perplexity", Concat(ModelArgs(), {"--ids-file", ids.string(), "--policy", "dense"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().rfind("ppl=", 0), 0u) << lines.back();
  EXPECT_NE(lines.back().find(" tokens=" + std::to_string(golden.tokens.size())), std::string::npos);
  // Greedy text under its own model is very likely: ppl is small but > 1.
  const double ppl = std::stod(lines.back().substr(4));
  EXPECT_GT(ppl, 1.0);
  EXPECT_LT(ppl, 3.0);
}

TEST_F(ToolsTest, BadInputFailsWithOneLine) {
  REQUIRE_SHARED(kModel);
  const std::vector<std::string> gen = Concat(ModelArgs(), {"--prompt", "Hi", "--max-new-tokens", "4"});
  ExpectCleanFailure(RunTool("sinkserve-generate", {"--model", "/nonexistent/model.bin", "--prompt", "x"}),
                     "/nonexistent/model.bin");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--temperature", "-1"})), "--temperature");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--temperature", "nan"})), "--temperature");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--top-p", "-0.5"})), "--top-p");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--top-k", "-3"})), "--top-k");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--min-p", "nan"})), "--min-p");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--repetition-penalty", "-2"})), "--repetition-penalty");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--sinks", "0", "--window", "0"})), "--window");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--policy", "window", "--window", "0"})), "--window");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--policy", "bogus"})), "--policy");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--window", "99999999999"})), "--window");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--max-new-tokens", "-5"})), "--max-new-tokens");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--bogus-flag", "1"})), "--bogus-flag");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--backend", "tpu"})), "tpu");
  ExpectCleanFailure(RunTool("sinkserve-generate", {"--prompt", "x"}), "--model");

  // Wrong magic and truncated files.
  const fs::path bad = TempFile("bad_model.bin");
  std::ofstream(bad, std::ios::binary) << "NOTAMODELFILE";
  ExpectCleanFailure(RunTool("sinkserve-generate", {"--model", bad.string(), "--prompt", "x"}), "");
  const std::string real = testing::ReadFile(testing::SharedPath(kModel));
  for (size_t cut : {size_t{3}, size_t{28}, size_t{28 + 512 * 64 * 4 - 1}, real.size() - 1}) {
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << real.substr(0, cut);
    ExpectCleanFailure(RunTool("sinkserve-generate", {"--model", bad.string(), "--tokenizer",
                                                      testing::SharedPath(kTok), "--prompt", "x"}), "");
  }
  const fs::path gguf_bad = TempFile("bad_model.gguf");
  const std::string gguf = testing::ReadFile(testing::SharedPath("models/stories260K/stories260K.gguf"));
  for (size_t cut : {size_t{4}, size_t{20}, size_t{200}, gguf.size() / 2, gguf.size() - 1}) {
    std::ofstream(gguf_bad, std::ios::binary | std::ios::trunc) << gguf.substr(0, cut);
    ExpectCleanFailure(RunTool("sinkserve-generate", {"--model", gguf_bad.string(), "--prompt", "x"}), "");
  }
  ExpectCleanFailure(RunTool("sinkserve-tokenize", {"--tokenizer", bad.string()}), "");

  const std::vector<std::string> bench = ModelArgs();
  ExpectCleanFailure(RunTool("sinkserve-decode-bench", Concat(bench, {"--batches", "0"})), "--batches");
  ExpectCleanFailure(RunTool("sinkserve-decode-bench", Concat(bench, {"--batches", "1,x"})), "--batches");
  ExpectCleanFailure(RunTool("sinkserve-decode-bench", Concat(bench, {"--tokens", "-1"})), "--tokens");
  ExpectCleanFailure(RunTool("sinkserve-decode-bench", Concat(bench, {"--prefill", "-1"})), "--prefill");
  ExpectCleanFailure(RunTool("sinkserve-generate", Concat(gen, {"--weights", "int4"})), "--weights");
}

TEST_F(ToolsTest, PerplexityRejectsBadIdsAndDenseOverflow) {
  REQUIRE_SHARED(kModel);
  const fs::path ids = TempFile("bad_ids.txt");
  std::ofstream(ids) << "1 403 9999 261";
  ExpectCleanFailure(RunTool("sinkserve-perplexity", Concat(ModelArgs(), {"--ids-file", ids.string()})), "9999");
  std::ofstream(ids, std::ios::trunc) << "1 403 -4 261";
  ExpectCleanFailure(RunTool("sinkserve-perplexity", Concat(ModelArgs(), {"--ids-file", ids.string()})), "-4");
  std::ofstream(ids, std::ios::trunc) << "1 403 abc";
  ExpectCleanFailure(RunTool("sinkserve-perplexity", Concat(ModelArgs(), {"--ids-file", ids.string()})), "abc");
  ExpectCleanFailure(RunTool("sinkserve-perplexity", ModelArgs()), "--text");

  // Dense runs past the model's 512-token context: a clear error, not a crash.
  std::string many;
  for (int i = 0; i < 600; ++i) many += std::to_string(1 + i % 400) + " ";
  std::ofstream(ids, std::ios::trunc) << many;
  Result r = RunTool("sinkserve-perplexity", Concat(ModelArgs(), {"--ids-file", ids.string(), "--policy", "dense"}));
  ExpectCleanFailure(r, "context of 512");
}

}  // namespace
}  // namespace sinkserve

namespace sinkserve {
namespace {

// Patches the tensor-info record of `name` in a GGUF file: its two dims and
// its ggml type (the record is: u64 name length, name, u32 n_dims, u64 ne[],
// u32 type, u64 offset).
std::string PatchTensorInfo(std::string gguf, const std::string& name, uint64_t ne0, uint64_t ne1, uint32_t type) {
  const size_t at = gguf.find(name);
  if (at == std::string::npos) return "";
  size_t p = at + name.size() + 4;  // past the name and n_dims
  std::memcpy(&gguf[p], &ne0, 8);
  std::memcpy(&gguf[p + 8], &ne1, 8);
  std::memcpy(&gguf[p + 16], &type, 4);
  return gguf;
}

TEST_F(ToolsTest, BadQuantizedAndQwen2FilesFailWithOneLine) {
  const std::string q4k = "models/synthetic/synth-llama-Q4_K_M.gguf";
  const std::string qwen = "models/synthetic/synth-qwen2-F32.gguf";
  REQUIRE_SHARED(q4k);
  REQUIRE_SHARED(qwen);
  const fs::path bad = TempFile("bad.gguf");
  auto generate = [&](const std::string& bytes) {
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;
    return RunTool("sinkserve-generate", {"--model", bad.string(), "--prompt", "x", "--max-new-tokens", "2"});
  };
  const std::string real = testing::ReadFile(testing::SharedPath(q4k));
  // Truncated inside the quantized blocks.
  for (size_t cut : {real.size() / 3, real.size() / 2, real.size() - 100}) {
    ExpectCleanFailure(generate(real.substr(0, cut)), "past the end");
  }
  // A Q4_K row of 128 values: not a whole 256-value block.
  ExpectCleanFailure(generate(PatchTensorInfo(real, "token_embd.weight", 128, 1024, 12)), "not a multiple of its block");
  // The same tensor claimed as Q8_0: its bytes no longer fit the layout.
  ExpectCleanFailure(generate(PatchTensorInfo(real, "token_embd.weight", 256, 512, 8)), "token_embd");
  // A type no kernel runs (Q2_K).
  ExpectCleanFailure(generate(PatchTensorInfo(real, "token_embd.weight", 256, 512, 10)), "Q2_K");
  // qwen2 without one of its attention biases.
  std::string qwen2 = testing::ReadFile(testing::SharedPath(qwen));
  const size_t bias = qwen2.find("blk.1.attn_k.bias");
  ASSERT_NE(bias, std::string::npos);
  qwen2[bias + 16] = 'x';  // blk.1.attn_k.biax
  ExpectCleanFailure(generate(qwen2), "blk.1.attn_k.bias");
}

TEST_F(ToolsTest, BadMptFilesFailWithOneLine) {
  const std::string file = "models/synthetic/synth-mpt-F32.gguf";
  REQUIRE_SHARED(file);
  const fs::path bad = TempFile("bad-mpt.gguf");
  auto generate = [&](const std::string& bytes) {
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;
    return RunTool("sinkserve-generate", {"--model", bad.string(), "--prompt", "x", "--max-new-tokens", "2"});
  };
  const std::string real = testing::ReadFile(testing::SharedPath(file));
  const std::string key = "mpt.attention.max_alibi_bias";
  const size_t at = real.find(key);
  ASSERT_NE(at, std::string::npos);
  // Without its ALiBi bound.
  std::string renamed = real;
  renamed[at + key.size() - 1] = 'x';
  ExpectCleanFailure(generate(renamed), "max_alibi_bias");
  // A bound that makes no slopes: NaN, then 0.
  for (float value : {std::nanf(""), 0.0f}) {
    std::string patched = real;
    std::memcpy(&patched[at + key.size() + 4], &value, 4);  // past the key and its value type
    ExpectCleanFailure(generate(patched), "max_alibi_bias");
  }
  // Without one layer's fused QKV matrix.
  std::string no_qkv = real;
  const size_t qkv = no_qkv.find("blk.2.attn_qkv.weight");
  ASSERT_NE(qkv, std::string::npos);
  no_qkv[qkv + 20] = 'x';
  ExpectCleanFailure(generate(no_qkv), "blk.2.attn_qkv.weight");
}

}  // namespace
}  // namespace sinkserve

namespace sinkserve {
namespace {

// Before: a model file's bytes (a newline, control characters) were copied
// into what must be a one-line error; now they are escaped.
TEST_F(ToolsTest, UntrustedBytesInErrorsAreEscaped) {
  const std::string gguf = "models/stories260K/stories260K.gguf";
  REQUIRE_SHARED(gguf);
  std::string bytes = testing::ReadFile(testing::SharedPath(gguf));
  const size_t key = bytes.find("tokenizer.ggml.model");
  ASSERT_NE(key, std::string::npos);
  const size_t value = bytes.find("llama", key);
  ASSERT_NE(value, std::string::npos);
  bytes.replace(value, 5, std::string("l\x01\n\x7f" "a", 5));
  const fs::path bad = TempFile("control.gguf");
  std::ofstream(bad, std::ios::binary) << bytes;
  const Result r = RunTool("sinkserve-tokenize", {"--tokenizer", bad.string()}, "hi");
  ExpectCleanFailure(r, "\\x01\\x0a\\x7f");
  for (size_t i = 0; i + 1 < r.err.size(); ++i) {
    EXPECT_GE(static_cast<unsigned char>(r.err[i]), 0x20) << "raw control byte at " << i << ": " << r.err;
  }
}

}  // namespace
}  // namespace sinkserve
