// File-level entry points: read or map a file, detect its format by content,
// and hand the bytes to the span parsers (gguf.cc, llama2c.cc, vocab_files.cc).
#include "engine/model/model_loader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/gguf.h"
#include "engine/model/llama2c.h"
#include "engine/status_macros.h"

namespace sinkserve {
namespace {

// Prefixes an error with the file it came from.
absl::Status WithPath(const absl::Status& s, const std::string& path) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

absl::Status ErrnoStatus(int err, const std::string& path, const char* op) {
  const std::string msg = absl::StrCat(path, ": ", op, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

// Opens `path` read-only and checks that it is a regular file.
absl::StatusOr<std::pair<int, uint64_t>> OpenRegular(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, path, "open");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, path, "stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  return std::make_pair(fd, static_cast<uint64_t>(st.st_size));
}

// A read-only view of a whole file: mmap'd (model files are large and the
// parsers copy out only what they convert), or read into memory when mmap
// is unavailable. The file must not be truncated while mapped.
class FileBytes {
 public:
  static absl::StatusOr<std::unique_ptr<FileBytes>> Open(const std::string& path) {
    ASSIGN_OR_RETURN(auto fd_size, OpenRegular(path));
    const auto [fd, size] = fd_size;
    auto f = std::unique_ptr<FileBytes>(new FileBytes);
    if (size > 0) {
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        f->map_ = p;
        f->map_size_ = size;
        f->view_ = std::string_view(static_cast<const char*>(p), size);
      }
    }
    ::close(fd);
    if (size > 0 && f->map_ == nullptr) {
      ASSIGN_OR_RETURN(f->owned_, ReadFileBytes(path));
      f->view_ = f->owned_;
    }
    return f;
  }

  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes() {
    if (map_ != nullptr) ::munmap(map_, map_size_);
  }

  std::string_view view() const { return view_; }

 private:
  FileBytes() = default;

  void* map_ = nullptr;
  uint64_t map_size_ = 0;
  std::string owned_;      // used only when mmap failed
  std::string_view view_;  // the whole file
};

bool IsGguf(std::string_view b) { return b.size() >= 4 && b.substr(0, 4) == "GGUF"; }

}  // namespace

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  ASSIGN_OR_RETURN(auto fd_size, OpenRegular(path));
  const auto [fd, size] = fd_size;
  std::string out;
  out.resize(size);
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, out.data() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : 0;
      ::close(fd);
      if (n == 0) {
        return absl::DataLossError(
            absl::StrCat(path, ": file shrank while reading (got ", done, " of ", size, " bytes)"));
      }
      return ErrnoStatus(err, path, "read");
    }
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return out;
}

absl::StatusOr<Model> LoadModel(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileBytes> opened, FileBytes::Open(path));
  // GGUF weights stay in the mapping: every Weight holds `file`.
  std::shared_ptr<const FileBytes> file = std::move(opened);
  const std::string_view bytes = file->view();
  absl::StatusOr<Model> model;
  if (IsGguf(bytes)) {
    absl::StatusOr<gguf::File> parsed = gguf::Parse(bytes);
    if (!parsed.ok()) return WithPath(parsed.status(), path);
    model = gguf::ModelFromGguf(*parsed, file);
  } else {
    model = ParseLlama2cCheckpoint(bytes);  // copies its fp32 weights out
  }
  if (!model.ok()) return WithPath(model.status(), path);
  return model;
}

absl::StatusOr<Vocab> LoadVocab(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileBytes> file, FileBytes::Open(path));
  const std::string_view bytes = file->view();
  if (IsGguf(bytes)) {
    absl::StatusOr<gguf::File> parsed = gguf::Parse(bytes);
    if (!parsed.ok()) return WithPath(parsed.status(), path);
    absl::StatusOr<Vocab> vocab = gguf::VocabFromGguf(*parsed);
    if (!vocab.ok()) return WithPath(vocab.status(), path);
    return vocab;
  }
  // A SentencePiece ModelProto starts with field 1 (pieces), tag byte 0x0A.
  // A tokenizer.bin whose max_token_length is 10 starts with 0x0A too, so
  // fall back to it before giving up.
  if (!bytes.empty() && bytes[0] == 0x0A) {
    absl::StatusOr<Vocab> spm = ParseSentencePieceModel(bytes);
    if (spm.ok()) return spm;
    absl::StatusOr<Vocab> bin = ParseLlama2cTokenizer(bytes);
    if (bin.ok()) return bin;
    return WithPath(absl::Status(spm.status().code(),
                                 absl::StrCat(spm.status().message(),
                                              " (as llama2.c tokenizer.bin: ",
                                              bin.status().message(), ")")),
                    path);
  }
  absl::StatusOr<Vocab> bin = ParseLlama2cTokenizer(bytes);
  if (!bin.ok()) return WithPath(bin.status(), path);
  return bin;
}

}  // namespace sinkserve
