// sinkserve-read-bandwidth: how fast one and two threads stream-read memory,
// five repetitions each: the floor a weight-streaming decode is measured
// against (bench/results/cpu-real-*). Given a size in MiB it reads an
// anonymous buffer of that size; given a file it reads the file through a
// read-only mmap, as the CPU backend reads a model's weights. Two
// independent accumulators of 256-bit loads per thread, so no chain of adds
// limits the loop.
//   sinkserve-read-bandwidth 87
//   sinkserve-read-bandwidth /tmp/bench-models/llama85m-Q8_0.gguf
#include <fcntl.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

int sink;  // keeps the reads from being optimized away

[[gnu::target("avx2")]] void Read(const unsigned char* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
  for (size_t i = 0; i + 64 <= n; i += 64) {
    a = _mm256_add_epi8(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    b = _mm256_add_epi8(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
  }
  sink += _mm256_extract_epi8(_mm256_add_epi8(a, b), 1);
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "sinkserve-read-bandwidth: error: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return Fail("give a buffer size in MiB (1 to 65536) or a file to map");
  const std::string arg = argv[1];
  const unsigned char* buf = nullptr;
  size_t n = 0;
  std::string what;
  char* end = nullptr;
  const long mib = std::strtol(arg.c_str(), &end, 10);
  if (end != arg.c_str() && *end == '\0') {
    if (mib < 1 || mib > 65536) return Fail("the buffer size must be 1 to 65536 MiB");
    n = static_cast<size_t>(mib) << 20;
    auto* owned = static_cast<unsigned char*>(std::aligned_alloc(64, n));
    if (owned == nullptr) return Fail("cannot allocate " + arg + " MiB");
    std::memset(owned, 1, n);
    buf = owned;
    what = "anonymous buffer_mib=" + arg;
  } else {
    const int fd = ::open(arg.c_str(), O_RDONLY);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0 || st.st_size <= 0) return Fail("cannot open " + arg);
    n = static_cast<size_t>(st.st_size);
    void* p = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) return Fail("cannot map " + arg);
    buf = static_cast<const unsigned char*>(p);
    Read(buf, n);  // fault the pages in before timing
    what = "file=" + arg + " bytes=" + std::to_string(n);
  }
  for (int threads : {1, 2}) {
    for (int rep = 0; rep < 5; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) pool.emplace_back(Read, buf + t * (n / threads), n / threads);
      for (std::thread& t : pool) t.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("%s threads=%d rep=%d gb_s=%.2f\n", what.c_str(), threads, rep, n / s / 1e9);
    }
  }
  return sink == 12345 ? 2 : 0;
}
