// The fused attention's bf16 body, for CPUs with AVX-512 BF16 (vdpbf16ps: 32 bf16 products summed
// pairwise into 16 f32 lanes, on some CPUs at twice the f32 FMA's rate). Queries, keys and values
// are bf16 as the network computes them; scores, the softmax and the output are accumulated in f32
// as in the f32 body. The softmax weights are rounded to bf16 for the values' products, and the
// row sums that normalise them are taken of the rounded weights, so every row's weights still sum
// to one.
//
// The same online-softmax walk as attention_kernel.inc (whose Block/Rows run it, with tiles of
// its own): a 512-bit register holds 16 keys (or 16 output columns) x a pair of bf16 factors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "nodes/kernels/attention_internal.h"

#ifdef SD_ATTENTION_X86
#include "nodes/kernels/simd_avx512.h"

#define SD_AVX512BF16_TARGET \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma")))

namespace sd::kernels::attention {
namespace {

using V = VecAvx512;
#define SD_KERNEL_TARGET SD_AVX512BF16_TARGET
#include "nodes/kernels/attention_kernel.inc"

#define SD_BF16_INLINE SD_AVX512BF16_TARGET inline __attribute__((always_inline))
#define SD_BF16_UNROLL _Pragma("GCC unroll 8")

// Two bf16 factors (a key's or a weight's pair), read as one 32-bit lane.
SD_BF16_INLINE __m512bh BroadcastPair(const uint16_t* pair) {
  uint32_t bits;
  std::memcpy(&bits, pair, sizeof bits);
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(bits)));
}

SD_BF16_INLINE __m512 Dot(__m512 acc, __m512bh a, __m512bh b) {
  return _mm512_dpbf16_ps(acc, a, b);
}

// scores[r][j - j0] = (q[r0 + r] · k[j]) * scale, as F32Tiles::Scores, with a feature pair per
// step: lane l of a key register holds features (2i, 2i + 1) of key j + l.
template <int R>
SD_AVX512BF16_TARGET void ScoresBf16(const HeadBf16& h, int64_t r0, int64_t j0, int64_t n,
                                     float* scores) {
  const uint16_t* q = h.q + r0 * h.q_stride;
  const __m512 scale = _mm512_set1_ps(h.scale);
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const int64_t pairs = h.d / 2;
  for (int64_t j = j0; j < j0 + n; j += kKeyStep) {
    const __mmask16 m0 = V::LaneMask(h.tk - j), m1 = V::LaneMask(h.tk - j - 16);
    __m512 a0[R], a1[R];
    SD_BF16_UNROLL for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    const uint16_t* kp = h.k_pairs + (j / kKeyStep) * pairs * 2 * kKeyStep;
    for (int64_t i = 0; i < pairs; ++i, kp += 2 * kKeyStep) {
      const __m512bh k0 = reinterpret_cast<__m512bh>(_mm512_load_si512(kp));
      const __m512bh k1 = reinterpret_cast<__m512bh>(_mm512_load_si512(kp + 32));
      SD_BF16_UNROLL for (int r = 0; r < R; ++r) {
        const __m512bh qv = BroadcastPair(q + r * h.q_stride + 2 * i);
        a0[r] = Dot(a0[r], qv, k0);
        a1[r] = Dot(a1[r], qv, k1);
      }
    }
    SD_BF16_UNROLL for (int r = 0; r < R; ++r) {
      float* out = scores + r * kChunkStride + (j - j0);
      _mm512_storeu_ps(out, _mm512_mask_mov_ps(minus_inf, m0, _mm512_mul_ps(a0[r], scale)));
      _mm512_storeu_ps(out + 16, _mm512_mask_mov_ps(minus_inf, m1, _mm512_mul_ps(a1[r], scale)));
    }
  }
}

// out[r0 + r][c0 : c0 + 16 NV] = shrink[r] * out[...] + Σ_j p[r][j] v[j0 + j][...], as
// F32Tiles::WeightedValues, a key pair per step: lane l of a value register holds column c0 + l of
// keys (2m, 2m + 1). n may be odd: its pair's second weight is a masked key's, 0.
template <int R, int NV>
SD_AVX512BF16_TARGET void WeightedValuesBf16(const HeadBf16& h, int64_t r0, int64_t c0, int64_t j0,
                                             int64_t n, const float* p, const float* shrink,
                                             bool first) {
  __mmask16 mask[NV];
  SD_BF16_UNROLL for (int c = 0; c < NV; ++c) mask[c] = V::LaneMask(h.d - c0 - 16 * c);
  __m512 acc[R][NV];
  SD_BF16_UNROLL for (int r = 0; r < R; ++r) {
    const float* o = h.out + (r0 + r) * h.out_stride + c0;
    const __m512 f = _mm512_set1_ps(shrink[r]);
    SD_BF16_UNROLL for (int c = 0; c < NV; ++c) {
      acc[r][c] = first ? _mm512_setzero_ps()
                        : _mm512_mul_ps(_mm512_maskz_loadu_ps(mask[c], o + 16 * c), f);
    }
  }
  const uint16_t* weights = reinterpret_cast<const uint16_t*>(p);  // StoreWeights' pairs
  const uint16_t* vp = h.v_pairs + j0 * h.d + 2 * c0;              // pair j0 / 2, column c0
  for (int64_t j = 0; j < n; j += 2, vp += 2 * h.d) {
    __m512bh vv[NV];
    SD_BF16_UNROLL for (int c = 0; c < NV; ++c) {
      vv[c] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi32(mask[c], vp + 32 * c));
    }
    SD_BF16_UNROLL for (int r = 0; r < R; ++r) {
      const __m512bh pr = BroadcastPair(weights + r * 2 * kChunkStride + j);
      SD_BF16_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = Dot(acc[r][c], pr, vv[c]);
    }
  }
  SD_BF16_UNROLL for (int r = 0; r < R; ++r) {
    float* o = h.out + (r0 + r) * h.out_stride + c0;
    SD_BF16_UNROLL for (int c = 0; c < NV; ++c)
        _mm512_mask_storeu_ps(o + 16 * c, mask[c], acc[r][c]);
  }
}

struct Bf16Tiles {
  using HeadT = HeadBf16;
  template <int R>
  SD_BF16_INLINE static void Scores(const HeadBf16& h, int64_t r0, int64_t j0, int64_t n,
                                    float* scores) {
    ScoresBf16<R>(h, r0, j0, n, scores);
  }
  // The weights rounded to bf16, two per 32-bit word, over the row's first half: 32 bytes at 2j,
  // behind the 64 ChunkNumerators has just read at 4j. The row's sum is of the rounded weights.
  SD_BF16_INLINE static __m512 StoreWeights(float* row, int64_t j, __m512 e) {
    const __m256i bits = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(e));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(reinterpret_cast<uint16_t*>(row) + j), bits);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
  template <int R, int NV>
  SD_BF16_INLINE static void WeightedValues(const HeadBf16& h, int64_t r0, int64_t c0, int64_t j0,
                                            int64_t n, const float* p, const float* shrink,
                                            bool first) {
    WeightedValuesBf16<R, NV>(h, r0, c0, j0, n, p, shrink, first);
  }
  template <int R>
  SD_BF16_INLINE static void Values(const HeadBf16& h, int64_t r0, int64_t j0, int64_t n,
                                    const float* p, const float* shrink, bool first) {
    TileValues<Bf16Tiles, R>(h, r0, j0, n, p, shrink, first);
  }
};

#undef SD_BF16_UNROLL
#undef SD_BF16_INLINE
#undef SD_KERNEL_TARGET

}  // namespace

SD_AVX512BF16_TARGET void RowsAvx512Bf16(const HeadBf16& head, int64_t row_begin, int64_t row_end,
                                         float* scratch) {
  Rows<Bf16Tiles>(head, row_begin, row_end, scratch);
}

}  // namespace sd::kernels::attention

#endif  // SD_ATTENTION_X86
