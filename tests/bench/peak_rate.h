// The arithmetic peak of this CPU, measured: independent chains of the widest fused multiply-add, fp32
// (vfmadd231ps) and bf16 dot products (vdpbf16ps), on every thread at once. This is the ceiling the
// benchmark's GFLOP/s are judged against; on some CPUs the bf16 instruction issues at half the rate of
// the fp32 one, which makes bf16 compute slower than fp32, not twice as fast.
#pragma once

struct PeakRates {
  double fp32_gflops = 0;  // 0: not measured (no AVX-512 on this CPU or this build)
  double bf16_gflops = 0;  // 0: not measured (no AVX-512 BF16)
  const char* vector = "";  // the instruction set measured
};

PeakRates MeasurePeakRates(int threads);
