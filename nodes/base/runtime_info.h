// Facts about the process that decide speed: which BLAS LibTorch's CPU kernels call, how many threads
// they use, and memory use. Debian's LibTorch calls the system libblas.so.3, which is the slow reference
// BLAS unless OpenBLAS is installed, and runs ATen ops on one thread unless told otherwise.
#pragma once

#include <cstdint>
#include <string>

namespace sd {

struct BlasInfo {
  std::string path;     // resolved path of the loaded BLAS library ("" when none is loaded)
  bool reference = false;  // the netlib reference BLAS: correct, but 10-40x slower
  std::string Describe() const;
};

BlasInfo LoadedBlas();

// Sets ATen's intra-op threads to `requested` (<= 0: all cores) and returns the number in use.
int ConfigureThreads(int requested);

// OpenBLAS picks its kernels from the CPU model; in virtual machines that hide the model it falls back to
// "Prescott" (SSE3) kernels, 4-5x slower than the AVX-512 ones these CPUs run (measured here: sgemm 64 vs
// 300 GFLOP/s on 2 cores). OpenBLAS reads OPENBLAS_CORETYPE only when it loads, so when the loaded OpenBLAS
// chose a generic core but the CPU has AVX-512 (or AVX2 + FMA), this sets OPENBLAS_CORETYPE to SkylakeX
// (or Haswell) and re-executes the program with the same arguments. Returns only when nothing needs doing
// (or the re-exec failed). Call it first thing in main(); OPENBLAS_CORETYPE set by the user is respected.
void EnsureFastBlasKernels(char** argv);
// The OpenBLAS core type in use ("" when the BLAS is not OpenBLAS).
std::string OpenBlasCore();

// Prints a loud warning to stderr when the reference BLAS is loaded. Returns false in that case.
bool WarnIfSlowBlas(const char* program);

// Resident memory now and the peak since the last ResetPeakRss(), in bytes (Linux /proc).
uint64_t CurrentRss();
uint64_t PeakRss();
void ResetPeakRss();

}  // namespace sd
