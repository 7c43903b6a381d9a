// sd-bench's report: what one run measured, printed as tables (and the CPU's choices, named) and
// written as JSON for comparisons across runs and machines.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nodes/kernels/cpu_rates.h"
#include "tests/bench/lora_case.h"
#include "tests/bench/reference_case.h"

namespace sd {

struct BenchResult {
  std::string dtype, case_name;
  double seconds = 0;
  uint64_t peak_rss = 0;
};

struct BenchAccuracy {
  std::string dtype, what;
  double max_abs = 0, rel = 0;
};

struct Txt2ImgMemory {
  std::string dtype;
  double seconds = 0;
  uint64_t peak_rss = 0;
  double weight_bytes = 0;
};

struct BenchReport {
  std::string model;  // what was timed, in words
  int size = 0, threads = 0;
  std::string device;  // "cpu", "cuda", ...
  bool cpu = true;
  std::vector<std::string> dtypes, cases;
  std::map<std::string, bool> bf16_math;  // per dtype: bf16 arithmetic (else fp32's)
  std::map<std::string, double> load_seconds;
  std::vector<BenchResult> results;
  std::vector<BenchAccuracy> accuracy;
  std::vector<Txt2ImgMemory> txt2img;
  std::vector<std::pair<std::string, LoraApplyTiming>> lora;
  double unet2_flops = 0;  // of one batch-2 UNet evaluation; 0: not counted
  kernels::PeakRates peak;
  std::optional<ReferenceRun> reference;  // --reference
};

// The tables, to stdout.
void PrintBenchReport(const BenchReport& r);
// The same numbers as JSON, to `path`.
void WriteBenchJson(const BenchReport& r, const std::string& path);

}  // namespace sd
