// 8-lane fp32 vectors for AVX2 + FMA, with the operations of VecAvx512 (simd_avx512.h), so the same
// kernel bodies compile for both. Masks are integer vectors (all bits of a lane set = on). Include
// only in a kernel's AVX2 translation unit; call only from functions marked SD_AVX2_TARGET.
#ifndef SD_NODES_KERNELS_SIMD_AVX2_H_
#define SD_NODES_KERNELS_SIMD_AVX2_H_

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define SD_AVX2_TARGET __attribute__((target("avx2,fma")))
#define SD_AVX2_INLINE SD_AVX2_TARGET inline __attribute__((always_inline))

namespace sd::kernels {

struct VecAvx2 {
  using Reg = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8;
  static constexpr const char* kName = "AVX2";

  // Lanes [0, valid) on.
  SD_AVX2_INLINE static Mask LaneMask(int64_t valid) {
    const int n = static_cast<int>(std::clamp<int64_t>(valid, 0, 8));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  SD_AVX2_INLINE static Reg Zero() { return _mm256_setzero_ps(); }
  SD_AVX2_INLINE static Reg Set1(float x) { return _mm256_set1_ps(x); }
  SD_AVX2_INLINE static Reg LoadAligned(const float* p) { return _mm256_load_ps(p); }
  SD_AVX2_INLINE static Reg LoadU(const float* p) { return _mm256_loadu_ps(p); }
  SD_AVX2_INLINE static void StoreU(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  // Masked-off lanes read as 0 and are never touched in memory.
  SD_AVX2_INLINE static Reg MaskLoad(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }
  SD_AVX2_INLINE static void MaskStore(float* p, Mask m, Reg v) { _mm256_maskstore_ps(p, m, v); }
  SD_AVX2_INLINE static Reg Fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  // c - a * b
  SD_AVX2_INLINE static Reg Fnmadd(Reg a, Reg b, Reg c) { return _mm256_fnmadd_ps(a, b, c); }
  SD_AVX2_INLINE static Reg Mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  SD_AVX2_INLINE static Reg Add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  SD_AVX2_INLINE static Reg Sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  SD_AVX2_INLINE static Reg Max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  // a where m is on, else `otherwise`.
  SD_AVX2_INLINE static Reg Select(Mask m, Reg a, Reg otherwise) {
    return _mm256_blendv_ps(otherwise, a, _mm256_castsi256_ps(m));
  }
  SD_AVX2_INLINE static float ReduceMax(Reg v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
  }
  SD_AVX2_INLINE static float ReduceAdd(Reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
  }
  SD_AVX2_INLINE static Mask LessThan(Reg a, Reg b) {
    return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LT_OQ));
  }
  SD_AVX2_INLINE static Reg RoundNearest(Reg x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // p * 2^n for integral n in [-126, 127]: 2^n built in the exponent field (a normal number there).
  SD_AVX2_INLINE static Reg Pow2Scale(Reg p, Reg n) {
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
};

}  // namespace sd::kernels

#endif  // SD_NODES_KERNELS_SIMD_AVX2_H_
