#include "nodes/base/runtime_info.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"

namespace sd {
namespace {

int Collect(struct dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<BlasInfo*>(data);
  if (!info->dlpi_name || !*info->dlpi_name) return 0;
  const std::string name = info->dlpi_name;
  const std::string base = name.substr(name.rfind('/') + 1);
  if (base.rfind("libblas.so", 0) == 0 || base.rfind("libopenblas", 0) == 0 ||
      base.rfind("libmkl_rt", 0) == 0 || base.rfind("libblis", 0) == 0) {
    char resolved[PATH_MAX];
    const std::string path = realpath(name.c_str(), resolved) ? resolved : name;
    // Prefer an optimised library when several are loaded.
    if (out->path.empty() || out->reference) out->path = path;
    out->reference = out->path.find("openblas") == std::string::npos &&
                     out->path.find("mkl") == std::string::npos &&
                     out->path.find("blis") == std::string::npos &&
                     out->path.find("atlas") == std::string::npos;
  }
  return 0;
}

uint64_t StatusField(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(f, line)) {
    if (line.compare(0, n, field) == 0)
      return std::strtoull(line.c_str() + n + 1, nullptr, 10) * 1024;
  }
  return 0;
}

}  // namespace

std::string BlasInfo::Describe() const {
  if (path.empty()) return "none loaded";
  const std::string core = OpenBlasCore();
  return path + (reference ? " (reference BLAS: slow)" : "") +
         (core.empty() ? "" : " (OpenBLAS core " + core + ")");
}

BlasInfo LoadedBlas() {
  BlasInfo info;
  dl_iterate_phdr(&Collect, &info);
  return info;
}

int ConfigureThreads(int requested) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(requested > 0 ? requested : cores);
  return at::get_num_threads();
}

std::string OpenBlasCore() {
  using CoreName = char* (*)();
  auto core = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!core) return "";
  const char* name = core();
  return name ? name : "";
}

void EnsureFastBlasKernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || !argv || !argv[0]) return;
  // Printing help computes nothing: not worth starting again for.
  for (char** a = argv + 1; *a; ++a) {
    if (std::strcmp(*a, "--help") == 0 || std::strcmp(*a, "-h") == 0) return;
  }
  const std::string core = absl::AsciiStrToLower(OpenBlasCore());
  // Generic choices OpenBLAS falls back to when it does not recognise the CPU.
  if (core != "prescott" && core != "core2" && core != "nehalem" && core != "katmai" &&
      core != "unknown")
    return;
  __builtin_cpu_init();
  const char* want = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    want = "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    want = "Haswell";
  }
  if (!want) return;
  ::setenv("OPENBLAS_CORETYPE", want, 1);
  ::execv("/proc/self/exe", argv);
  // The re-exec failed: carry on with the slow kernels (the BLAS line of the logs says which).
}

bool WarnIfSlowBlas(const char* program) {
  BlasInfo blas = LoadedBlas();
  if (!blas.reference) return true;
  std::fprintf(
      stderr,
      "%s: WARNING: LibTorch is calling the reference BLAS (%s), which is 10-40x slower than an\n"
      "optimised one. Install OpenBLAS (Debian: apt-get install libopenblas0-openmp) or select it "
      "with\n"
      "update-alternatives --config libblas.so.3-x86_64-linux-gnu.\n",
      program, blas.path.c_str());
  return false;
}

uint64_t CurrentRss() { return StatusField("VmRSS:"); }
uint64_t PeakRss() { return StatusField("VmHWM:"); }

void ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

}  // namespace sd
