#include "store/fingerprint.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_format.h"

namespace sinkserve::store {

absl::StatusOr<std::string> FingerprintFiles(const std::vector<std::string>& files, const std::string& extra) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("cannot start a SHA-256 digest");
  }
  std::vector<char> buffer(size_t{4} << 20);
  for (const std::string& path : files) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrFormat("cannot read %s: %s", path, std::strerror(errno)));
    while (true) {
      const ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        return absl::InternalError(absl::StrFormat("cannot read %s: %s", path, std::strerror(err)));
      }
      if (n == 0) break;
      EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(n));
    }
    ::close(fd);
  }
  EVP_DigestUpdate(ctx.get(), extra.data(), extra.size());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  std::string hex = "sha256:";
  for (unsigned int i = 0; i < length; ++i) hex += absl::StrFormat("%02x", digest[i]);
  return hex;
}

}  // namespace sinkserve::store
