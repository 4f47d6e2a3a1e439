// sinkserve-read-bandwidth: how fast one and two threads stream-read a
// buffer of N MiB (256-bit loads), five repetitions each: the floor a
// weight-streaming decode is measured against (bench/results/cpu-real-*).
//   sinkserve-read-bandwidth 87
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

int sink;  // keeps the reads from being optimized away

[[gnu::target("avx2")]] void Read(const unsigned char* p, size_t n) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i + 32 <= n; i += 32) acc = _mm256_add_epi8(acc, _mm256_loadu_si256((const __m256i*)(p + i)));
  sink += _mm256_extract_epi8(acc, 1);
}

}  // namespace

int main(int argc, char** argv) {
  const long mib = argc > 1 ? std::atol(argv[1]) : 0;
  if (mib < 1 || mib > 65536) {
    std::fprintf(stderr, "sinkserve-read-bandwidth: error: give the buffer size in MiB, 1 to 65536\n");
    return 1;
  }
  const size_t n = static_cast<size_t>(mib) << 20;
  auto* buf = static_cast<unsigned char*>(std::aligned_alloc(64, n));
  if (buf == nullptr) {
    std::fprintf(stderr, "sinkserve-read-bandwidth: error: cannot allocate %ld MiB\n", mib);
    return 1;
  }
  std::memset(buf, 1, n);
  for (int threads : {1, 2}) {
    for (int rep = 0; rep < 5; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) pool.emplace_back(Read, buf + t * (n / threads), n / threads);
      for (std::thread& t : pool) t.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("buffer_mib=%ld threads=%d rep=%d gb_s=%.2f\n", mib, threads, rep, n / s / 1e9);
    }
  }
  std::free(buf);
  return sink == 12345 ? 2 : 0;
}
