// Runs one of the project's built command-line tools as a child process, as
// a user would: arguments shell-quoted, stdin from a string, stdout and
// stderr captured through files in a test's temporary directory.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/test_data.h"

namespace sinkserve::testing {

struct ToolResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;
  std::string err;
};

inline std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// `tool` is a binary in the build folder; `dir` holds its in/out/err files.
inline ToolResult RunTool(const std::filesystem::path& dir, const std::string& tool,
                          const std::vector<std::string>& args, const std::string& stdin_text = "") {
  std::ofstream(dir / "in") << stdin_text;
  std::string cmd = ShellQuote(BinaryPath(tool));
  for (const std::string& a : args) absl::StrAppend(&cmd, " ", ShellQuote(a));
  absl::StrAppend(&cmd, " <", ShellQuote((dir / "in").string()), " >", ShellQuote((dir / "out").string()), " 2>",
                  ShellQuote((dir / "err").string()));
  const int status = std::system(cmd.c_str());
  ToolResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(dir / "out");
  r.err = ReadFile(dir / "err");
  return r;
}

}  // namespace sinkserve::testing
