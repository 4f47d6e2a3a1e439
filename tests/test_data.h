// Locates ../shared test data. Tests that need a file call RequireShared(),
// which skips the test with a message naming the missing path.
#pragma once

#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

namespace sinkserve::testing {

// $SINKSERVE_SHARED_DIR, else ../shared beside the source tree.
inline std::filesystem::path SharedDir() {
  if (const char* env = std::getenv("SINKSERVE_SHARED_DIR"); env && *env) return env;
  return std::filesystem::path(SINKSERVE_SOURCE_DIR) / ".." / "shared";
}

inline std::string SharedPath(const std::string& relative) {
  return (SharedDir() / relative).lexically_normal().string();
}

// The whole file as bytes ("" when it cannot be read).
inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Where the project's binaries are built (for tests that run the CLI tools).
inline std::string BinaryPath(const std::string& name) {
  return (std::filesystem::path(SINKSERVE_BINARY_DIR) / name).string();
}

// A fresh directory under $TMPDIR (or /tmp) for one test's files, removed
// with everything in it when the object goes.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/sinkserve_test_XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~ScopedTempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  // Empty when the directory could not be made.
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace sinkserve::testing

// Skips the current test when `relative` (under the shared dir) is missing.
#define REQUIRE_SHARED(relative)                                                   \
  do {                                                                             \
    if (!std::filesystem::exists(::sinkserve::testing::SharedPath(relative)))      \
      GTEST_SKIP() << "shared test data missing: " << ::sinkserve::testing::SharedPath(relative) \
                   << " (set SINKSERVE_SHARED_DIR or place ../shared beside the repo)"; \
  } while (0)
