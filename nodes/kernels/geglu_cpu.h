// The feed-forward gate of SD's transformer blocks (GEGLU): out = value * gelu(gate), with the
// exact (erf) GELU, gelu(x) = x/2 (1 + erf(x/√2)), for rows that hold the value and then the gate,
// as the `ff.net.0.proj` linear layer writes them. One pass over memory instead of LibTorch's three
// (the chunk's gelu, then the product), and an erf cheaper than Sleef's: 1 - erf(a) = t P(t)
// e^(-a²), t = 1/(1 + p a) (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), with e^z by range
// reduction and a degree-6 polynomial. So |gelu error| < 2e-7 (1 + |x|) against the exact function,
// f32 rounding included (LibTorch's own f32 gelu: 9e-8).
//
// Torch-free: raw f32 pointers. The loop is built for AVX-512, AVX2 and plain x86-64 and chosen at
// load time (GCC target clones); rows run on OpenMP threads.
#ifndef SD_NODES_KERNELS_GEGLU_CPU_H_
#define SD_NODES_KERNELS_GEGLU_CPU_H_

#include <cstdint>

namespace sd::kernels {

// in [rows][2 * width] (values, then gates), out [rows][width]: out = value * gelu(gate).
void Geglu(const float* in, int64_t rows, int64_t width, float* out, int threads);

// gelu(x) as Geglu computes it, for n values (the tests check the function through it).
void GeluRun(const float* x, int64_t n, float* out);

}  // namespace sd::kernels

#endif  // SD_NODES_KERNELS_GEGLU_CPU_H_
