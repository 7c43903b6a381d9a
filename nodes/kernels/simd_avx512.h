// 16-lane fp32 vectors for AVX-512 (F, DQ, BW, VL): the operations our kernels are written in, so
// one kernel body (a template over the vector type) serves AVX-512 and AVX2 alike (see
// simd_avx2.h). Every function carries the target attribute: include this only in a kernel's
// AVX-512 translation unit, and call it only from functions marked SD_AVX512_TARGET, after checking
// the CPU.
#ifndef SD_NODES_KERNELS_SIMD_AVX512_H_
#define SD_NODES_KERNELS_SIMD_AVX512_H_

#include <immintrin.h>

#include <cstdint>

// GCC 12's AVX-512 reduce/mask intrinsics start from _mm512_undefined_ps(), which it then reports
// as uninitialised (a known false positive of the header).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define SD_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define SD_AVX512_INLINE SD_AVX512_TARGET inline __attribute__((always_inline))

namespace sd::kernels {

struct VecAvx512 {
  using Reg = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static constexpr const char* kName = "AVX-512";

  // Lanes [0, valid) on.
  SD_AVX512_INLINE static Mask LaneMask(int64_t valid) {
    if (valid >= 16) return 0xFFFF;
    if (valid <= 0) return 0;
    return static_cast<Mask>((1u << valid) - 1);
  }
  SD_AVX512_INLINE static Reg Zero() { return _mm512_setzero_ps(); }
  SD_AVX512_INLINE static Reg Set1(float x) { return _mm512_set1_ps(x); }
  SD_AVX512_INLINE static Reg LoadAligned(const float* p) { return _mm512_load_ps(p); }
  SD_AVX512_INLINE static Reg LoadU(const float* p) { return _mm512_loadu_ps(p); }
  SD_AVX512_INLINE static void StoreU(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  // Masked-off lanes read as 0 and are never touched in memory.
  SD_AVX512_INLINE static Reg MaskLoad(Mask m, const float* p) {
    return _mm512_maskz_loadu_ps(m, p);
  }
  SD_AVX512_INLINE static void MaskStore(float* p, Mask m, Reg v) {
    _mm512_mask_storeu_ps(p, m, v);
  }
  SD_AVX512_INLINE static Reg Fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  // c - a * b
  SD_AVX512_INLINE static Reg Fnmadd(Reg a, Reg b, Reg c) { return _mm512_fnmadd_ps(a, b, c); }
  SD_AVX512_INLINE static Reg Mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  SD_AVX512_INLINE static Reg Add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  SD_AVX512_INLINE static Reg Sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  SD_AVX512_INLINE static Reg Max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  // a where m is on, else `otherwise`.
  SD_AVX512_INLINE static Reg Select(Mask m, Reg a, Reg otherwise) {
    return _mm512_mask_mov_ps(otherwise, m, a);
  }
  SD_AVX512_INLINE static float ReduceMax(Reg v) { return _mm512_reduce_max_ps(v); }
  SD_AVX512_INLINE static float ReduceAdd(Reg v) { return _mm512_reduce_add_ps(v); }

  SD_AVX512_INLINE static Mask LessThan(Reg a, Reg b) {
    return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ);
  }
  SD_AVX512_INLINE static Reg RoundNearest(Reg x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // p * 2^n for integral n in [-126, 127].
  SD_AVX512_INLINE static Reg Pow2Scale(Reg p, Reg n) { return _mm512_scalef_ps(p, n); }
};

}  // namespace sd::kernels

#endif  // SD_NODES_KERNELS_SIMD_AVX512_H_
