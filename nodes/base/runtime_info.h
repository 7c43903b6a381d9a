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

// Prints a loud warning to stderr when the reference BLAS is loaded. Returns false in that case.
bool WarnIfSlowBlas(const char* program);

// Resident memory now and the peak since the last ResetPeakRss(), in bytes (Linux /proc).
uint64_t CurrentRss();
uint64_t PeakRss();
void ResetPeakRss();

}  // namespace sd
