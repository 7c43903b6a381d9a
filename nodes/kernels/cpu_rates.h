// The arithmetic peak of this CPU, measured: independent chains of the widest fused multiply-add,
// fp32 (vfmadd231ps, on zmm registers with AVX-512, else ymm with AVX2) and bf16 dot products
// (vdpbf16ps), on every thread at once. This is the ceiling the benchmark's GFLOP/s are judged
// against; on some CPUs the bf16 instruction issues at half the rate of the fp32 one, which makes
// bf16 compute slower than fp32, not twice as fast.
#ifndef SD_NODES_KERNELS_CPU_RATES_H_
#define SD_NODES_KERNELS_CPU_RATES_H_

#include <string>

namespace sd::kernels {

struct PeakRates {
  double fp32_gflops = 0;   // 0: not measured (neither AVX-512 nor AVX2 + FMA, or another build)
  double bf16_gflops = 0;   // 0: not measured (no AVX-512 BF16)
  const char* vector = "";  // the instruction set measured
};

// `threads` threads at once, each running 12 x `iterations` instructions of each kind (the best of
// three runs).
PeakRates MeasurePeakRates(int threads, long iterations = 20000000);

// True when the CPU has AMX with bf16 tiles (Sapphire Rapids and later, where the OS enables them):
// oneDNN's bf16 convolutions and matmuls then run on the tile unit, far faster than fp32.
bool CpuHasAmxBf16();

// "AMD EPYC 7B13", from /proc/cpuinfo (benchmarks name the CPU their numbers came from).
std::string CpuModelName();
// The vector extensions our kernels and LibTorch's care about: "avx2 fma avx512f ... avx512bf16".
std::string CpuVectorFeatures();

}  // namespace sd::kernels

#endif  // SD_NODES_KERNELS_CPU_RATES_H_
