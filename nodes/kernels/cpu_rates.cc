#include "nodes/kernels/cpu_rates.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace sd::kernels {
namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// 12 independent accumulators: enough to cover the latency of either instruction.
// One instruction OP of %R14 and %R15 into accumulator %R<N>.
#define SD_INTO(OP, R, N) OP " %%" R "14, %%" R "15, %%" R #N "\n"
// clang-format off
#define SD_TWELVE(OP, R)                                                        \
  SD_INTO(OP, R, 0) SD_INTO(OP, R, 1) SD_INTO(OP, R, 2) SD_INTO(OP, R, 3)       \
  SD_INTO(OP, R, 4) SD_INTO(OP, R, 5) SD_INTO(OP, R, 6) SD_INTO(OP, R, 7)       \
  SD_INTO(OP, R, 8) SD_INTO(OP, R, 9) SD_INTO(OP, R, 10) SD_INTO(OP, R, 11)
// clang-format on
#define SD_CLOBBERS                                                                        \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
      "xmm11", "xmm14", "xmm15"

// Seconds for `iterations` rounds of 12 independent instructions OP on registers R (zmm, ymm), in
// a function compiled for TARGET.
#define SD_PEAK_LOOP(NAME, TARGET, OP, R)                                                     \
  __attribute__((target(TARGET))) double NAME(long iterations) {                              \
    const auto t0 = std::chrono::steady_clock::now();                                         \
    asm volatile("vxorps %%" R "14, %%" R "14, %%" R "14\n vxorps %%" R "15, %%" R "15, %%" R \
                 "15\n"                                                                       \
                 "1:\n" SD_TWELVE(OP, R) "dec %0\n jnz 1b\n"                                  \
                 : "+r"(iterations)                                                           \
                 :                                                                            \
                 : SD_CLOBBERS);                                                              \
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();      \
  }
SD_PEAK_LOOP(FmaSeconds, "avx512f", "vfmadd231ps", "zmm")
SD_PEAK_LOOP(Fma256Seconds, "avx2,fma", "vfmadd231ps", "ymm")
SD_PEAK_LOOP(DotBf16Seconds, "avx512f,avx512bf16", "vdpbf16ps", "zmm")

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
  const long kIterations = iterations;
  if (!__builtin_cpu_supports("avx512f")) {
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      p.vector = "AVX2";  // 8 lanes x (multiply + add)
      p.fp32_gflops =
          AllThreads(threads, kIterations * 12.0 * 16, [&] { return Fma256Seconds(kIterations); });
    }
    return p;
  }
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

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown CPU";
}

std::string CpuVectorFeatures() {
  std::string out;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const std::pair<const char*, bool> features[] = {
      {"avx2", __builtin_cpu_supports("avx2")},
      {"fma", __builtin_cpu_supports("fma")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512vnni", __builtin_cpu_supports("avx512vnni")},
      {"avx512bf16", __builtin_cpu_supports("avx512bf16")}};
  for (const auto& [name, has] : features) {
    if (has) out += out.empty() ? name : std::string(" ") + name;
  }
  if (CpuHasAmxBf16()) out += " amx-bf16";
#endif
  return out.empty() ? "none of avx2/avx512" : out;
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
