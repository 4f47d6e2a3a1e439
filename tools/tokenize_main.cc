// sinkserve-tokenize: reads text from stdin, prints its token ids on one line.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "engine/status_macros.h"
#include "common/runtime.h"

namespace sinkserve {
namespace {

constexpr char kTool[] = "sinkserve-tokenize";

absl::Status Run(int argc, char** argv) {
  Flags flags({"model", "tokenizer"}, {"no-bos"});
  RETURN_IF_ERROR(flags.Parse(argc, argv));
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(flags));
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  const std::vector<int32_t> ids = tokenizer->Encode(text, !flags.Switch("no-bos"));
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::ToolMain(sinkserve::kTool, sinkserve::Run, argc, argv); }
