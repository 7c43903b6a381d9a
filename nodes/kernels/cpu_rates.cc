#include "nodes/kernels/cpu_rates.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace sd::kernels {
namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// 12 independent accumulators: enough to cover the latency of either instruction.
#define SD_TWELVE(OP)                                                  \
  OP " %%zmm14, %%zmm15, %%zmm0\n" OP " %%zmm14, %%zmm15, %%zmm1\n" OP \
     " %%zmm14, %%zmm15, %%zmm2\n" OP " %%zmm14, %%zmm15, %%zmm3\n" OP \
     " %%zmm14, %%zmm15, %%zmm4\n" OP " %%zmm14, %%zmm15, %%zmm5\n" OP \
     " %%zmm14, %%zmm15, %%zmm6\n" OP " %%zmm14, %%zmm15, %%zmm7\n" OP \
     " %%zmm14, %%zmm15, %%zmm8\n" OP " %%zmm14, %%zmm15, %%zmm9\n" OP \
     " %%zmm14, %%zmm15, %%zmm10\n" OP " %%zmm14, %%zmm15, %%zmm11\n"
#define SD_CLOBBERS                                                                        \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
      "xmm11", "xmm14", "xmm15"

// Seconds for `iterations` rounds of 12 independent instructions OP, in a function compiled for
// TARGET.
#define SD_PEAK_LOOP(NAME, TARGET, OP)                                                   \
  __attribute__((target(TARGET))) double NAME(long iterations) {                         \
    const auto t0 = std::chrono::steady_clock::now();                                    \
    asm volatile(                                                                        \
        "vpxord %%zmm14, %%zmm14, %%zmm14\n vpxord %%zmm15, %%zmm15, %%zmm15\n"          \
        "1:\n" SD_TWELVE(OP) "dec %0\n jnz 1b\n"                                         \
        : "+r"(iterations)                                                               \
        :                                                                                \
        : SD_CLOBBERS);                                                                  \
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); \
  }
SD_PEAK_LOOP(FmaSeconds, "avx512f", "vfmadd231ps")
SD_PEAK_LOOP(DotBf16Seconds, "avx512f,avx512bf16", "vdpbf16ps")

// Runs `f` on `threads` threads at once and returns the sum of their rates.
template <typename F>
double AllThreads(int threads, double flops_per_thread, F f) {
  std::vector<double> rate(threads);
  std::vector<std::thread> pool;
  // The best of three runs: the first can include the switch of the cores to their AVX-512 clock.
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      for (int run = 0; run < 3; ++run) rate[i] = std::max(rate[i], flops_per_thread / f() / 1e9);
    });
  }
  for (auto& t : pool) t.join();
  double sum = 0;
  for (double r : rate) sum += r;
  return sum;
}
#endif

}  // namespace

PeakRates MeasurePeakRates(int threads, long iterations) {
  PeakRates p;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) return p;
  const long kIterations = iterations;
  p.vector = "AVX-512";
  // One instruction: 16 lanes x (multiply + add) for fp32, 16 lanes x 2 pairs x (multiply + add)
  // for bf16.
  p.fp32_gflops =
      AllThreads(threads, kIterations * 12.0 * 32, [&] { return FmaSeconds(kIterations); });
  if (__builtin_cpu_supports("avx512bf16")) {
    p.bf16_gflops =
        AllThreads(threads, kIterations * 12.0 * 64, [&] { return DotBf16Seconds(kIterations); });
  }
#endif
  return p;
}

bool CpuHasAmxBf16() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  return (edx >> 22) & 1;  // CPUID.(EAX=7,ECX=0):EDX[22] = AMX-BF16
#else
  return false;
#endif
}

}  // namespace sd::kernels
