// Linear layers on a CPU by oneDNN. LibTorch's linear is a BLAS sgemm (OpenBLAS in Debian's build,
// running the kernels its CPU detection or OPENBLAS_CORETYPE picks); the same product is a 1x1
// convolution of a channels-last [1, in, 1, rows] view of the input, which oneDNN runs with its own
// JIT kernels for the CPU at hand. Which is faster depends on the machine (on a 2-core AVX-512 EPYC
// whose OpenBLAS runs its Haswell kernels: the convolution, 1.7-2.2x on the UNet's shapes), so it
// is measured, not read from CPU flags: once per machine (cpu_choice.h), on two UNet-like products.
// SD_CPU_LINEAR=blas|onednn|auto (default auto) or SetCpuLinear overrides.
#pragma once

#include <torch/types.h>

namespace sd::nn {

enum class CpuLinear { kAuto, kBlas, kOneDnn };
inline constexpr char kOneDnnLinearMeasurement[] = "linear by onednn speedup";
inline constexpr double kOneDnnLinearMinSpeedup = 1.1;

// Over SD_CPU_LINEAR; kAuto clears it (SD_CPU_LINEAR again, else measured).
void SetCpuLinear(CpuLinear mode);
// The mode in force (set, else SD_CPU_LINEAR, else kAuto), resolved to kBlas or kOneDnn: kOneDnn
// where it ran at least kOneDnnLinearMinSpeedup times faster.
CpuLinear ResolvedCpuLinear();
// How many times faster the oneDNN form ran than torch::linear (measured once per machine).
double MeasuredOneDnnLinearSpeedup();
const char* CpuLinearName(CpuLinear mode);  // "blas", "onednn", "auto"

// torch::linear(x, w, b) for f32 x [..., in] on a CPU and w [out, in], by oneDNN's 1x1
// convolution; b [out] or undefined. The same numbers up to f32 rounding (another summation order).
torch::Tensor OneDnnLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

}  // namespace sd::nn
