#include "nodes/kernels/geglu_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "nodes/kernels/isa_clones.h"

namespace sd::kernels {

namespace {

// e^z for z in [-30, 0]: z = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor polynomial to r^6
// (relative error < 2e-7), 2^n built in the exponent field. Branch-free, so the loops vectorize.
inline float ExpNonPositive(float z) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = z * kLog2e + kRoundMagic;
  const float n = shifted - kRoundMagic;
  const float r = (z - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  const int32_t scale_bits = (bits - 0x4B400000 + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

inline float Gelu(float x) {
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  constexpr float kP = 0.3275911f;
  constexpr float kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f, kA4 = -1.453152027f,
                  kA5 = 1.061405429f;
  // erfc(a) for a = |x|/√2, a capped at 5 (erfc(5) = 1.5e-12: gelu is x or 0 to f32 there).
  const float a = std::min(std::abs(x) * kInvSqrt2, 5.0f);
  const float t = 1.0f / (1.0f + kP * a);
  const float poly = t * (kA1 + t * (kA2 + t * (kA3 + t * (kA4 + t * kA5))));
  const float half_erfc = 0.5f * poly * ExpNonPositive(-a * a);
  // gelu(x) = x (1 - erfc(x/√2) / 2) = x (1 - half_erfc) for x >= 0, x half_erfc below: the
  // sign of x picks (copysign, not a branch, so the loops vectorize).
  return x * (0.5f + std::copysign(0.5f - half_erfc, x));
}

SD_ISA_CLONES void GegluRow(const float* __restrict value, const float* __restrict gate,
                            float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = value[i] * Gelu(gate[i]);
}

SD_ISA_CLONES void GeluRow(const float* __restrict x, float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Gelu(x[i]);
}

}  // namespace

void Geglu(const float* in, int64_t rows, int64_t width, float* out, int threads) {
#pragma omp parallel for schedule(static) num_threads(std::max(1, threads))
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = in + r * 2 * width;
    GegluRow(row, row + width, out + r * width, width);
  }
}

void GeluRun(const float* x, int64_t n, float* out) { GeluRow(x, out, n); }

}  // namespace sd::kernels
