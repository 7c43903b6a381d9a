// The CPU code paths chosen by measurement (how bf16 weights compute, the VAE's convolution layout,
// Winograd convolutions) are each set in code, else by an environment variable, else measured by
// timing both ways. These are the pieces they share.
//
// A measurement is made once per machine, not once per process: it is kept in the machine's
// measurement file, so that every process of a machine (a host and the workers beside it, each
// frame of a farm) takes the same choices and makes the same image bytes, and only the first pays
// for the timing. Processes that measure at once take turns (a lock on the file). A line of the
// file holds the machine it was measured on (CPU model, vector features, thread count, BLAS core),
// the measurement's name and its value:
//
//   Intel(R) Xeon(R) ... | avx2 fma avx512f ... | 2 threads | SKYLAKEX<TAB>winograd
//   128x256<TAB>1.83
//
// Another CPU, thread count or BLAS measures again. Delete the file to measure again on this one.
#pragma once

#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace sd::nn {

// `set` when it is >= 0 (set in code), else the value `words` gives the environment variable
// `env`'s word; -1 (measure) when it is unset or another word.
int ChoiceInForce(int set, const char* env,
                  std::initializer_list<std::pair<const char*, int>> words);

// How many times faster `b` runs than `a`: each run once to warm up (oneDNN makes its kernels on
// the first call, buffers are faulted in), then `rounds` times each, alternately (so that a drift
// in the machine's speed falls on both), the fastest run of each compared.
double TimedSpeedup(const std::function<void()>& a, const std::function<void()>& b, int rounds = 3);

// The value of the measurement `name` on this machine: read from the measurement file, else
// `measure()`d and written there. Kept per process too. `measure` may itself call this (for
// another name). A file that cannot be read or written costs only the sharing: the value is then
// measured in this process (a warning says why, once).
double MeasuredOnThisMachine(const std::string& name, const std::function<double()>& measure);

// What this machine's measurement `name` is, from this process or the file; nothing measured
// (std::nullopt when it has not been measured yet).
std::optional<double> RecordedOnThisMachine(const std::string& name);

// Removes this machine's lines from the measurement file and what this process knows, so that
// the next use measures again. Returns how many lines went; an error names the file.
absl::StatusOr<int> ForgetThisMachine();

// The measurement file: $SDGRAPH_CPU_MEASUREMENTS (a path; "off": none, every process measures),
// else $XDG_CACHE_HOME/sdgraph/cpu-measurements, else $HOME/.cache/sdgraph/cpu-measurements.
std::string CpuMeasurementsFile();

// What keys this machine's lines: "CPU model | vector features | N threads | BLAS core".
std::string MeasuredMachine();

}  // namespace sd::nn
