#include "nodes/kernels/attention_cpu.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SD_ATTENTION_AVX512 1
// GCC 12's AVX-512 reduce/mask intrinsics start from _mm512_undefined_ps(), which it then reports
// as uninitialised (a known false positive of the header).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace sd::kernels {
namespace {

constexpr int kRows =
    6;  // query rows per tile: 6 x 32 score accumulators, 6 x 48 output accumulators
constexpr int64_t kKeyStep = kAttentionKeyBlock;  // keys per step of the score kernel (two vectors)
constexpr int64_t kBlockRows = 48;                // query rows that share one pass over the keys
constexpr int64_t kChunkKeys = 64;                // keys per chunk of that pass
// Score rows are a little longer than a chunk so that the rows of a tile do not sit a power of two
// apart (which would map them onto the same cache sets).
constexpr int64_t kChunkStride = kChunkKeys + 16;

inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

std::atomic<uint64_t> g_attention_flops{0};

// One head, as the kernel reads it.
struct AttentionHead {
  const float* q;  // [tq, d], row r at q + r * q_stride
  int64_t q_stride;
  const float* k_packed;  // one head of AttentionBatch::k_packed
  const float* v;         // [tk, d], row j at v + j * v_stride
  int64_t v_stride;
  float* out;  // [tq, d], row r at out + r * out_stride
  int64_t out_stride;
  int64_t tk;  // keys
  int64_t d;   // head width
  float scale;
};

}  // namespace

uint64_t FusedAttentionFlops() { return g_attention_flops.load(std::memory_order_relaxed); }

#ifdef SD_ATTENTION_AVX512

#define SD_AVX512_FN __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
// The loops over a tile's rows and vectors must be unrolled, or their accumulators live on the
// stack.
#define SD_UNROLL _Pragma("GCC unroll 8")

namespace {

SD_AVX512_FN inline __mmask16 LaneMask(int64_t valid) {
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1);
}

// e^x for x <= 0 (including -inf), to about 1 ulp: x = n ln2 + r with |r| <= ln2/2, e^r by its
// Taylor series to degree 7 (truncation error < 6e-9), times 2^n. Results that would be subnormal
// are 0.
SD_AVX512_FN inline __m512 ExpNonPositive(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r =
      _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2, high bits (exact n * hi)
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);  // ln2, the rest
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_scalef_ps(p, n));
}

// scores[r][j - j0] = (q[r0 + r] · k[j]) * scale for R rows and keys j0 <= j < j0 + n (n a multiple
// of the key step, or the rest of the keys); lanes past tk hold -inf.
template <int R>
SD_AVX512_FN void Scores(const AttentionHead& h, int64_t r0, int64_t j0, int64_t n, float* scores) {
  const float* q = h.q + r0 * h.q_stride;
  const __m512 scale = _mm512_set1_ps(h.scale);
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = j0; j < j0 + n; j += kKeyStep) {
    const __mmask16 m0 = LaneMask(h.tk - j), m1 = LaneMask(h.tk - j - 16);
    __m512 a0[R], a1[R];
    SD_UNROLL for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    const float* kp = h.k_packed + j * h.d;  // block j / 32 starts at (j / 32) * d * 32
    for (int64_t i = 0; i < h.d; ++i, kp += kKeyStep) {
      const __m512 k0 = _mm512_load_ps(kp);  // padded keys are zeros; their lanes are masked below
      const __m512 k1 = _mm512_load_ps(kp + 16);
      SD_UNROLL for (int r = 0; r < R; ++r) {
        const __m512 qv = _mm512_set1_ps(q[r * h.q_stride + i]);
        a0[r] = _mm512_fmadd_ps(qv, k0, a0[r]);
        a1[r] = _mm512_fmadd_ps(qv, k1, a1[r]);
      }
    }
    SD_UNROLL for (int r = 0; r < R; ++r) {
      float* s = scores + r * kChunkStride + (j - j0);
      _mm512_storeu_ps(s, _mm512_mask_mul_ps(minus_inf, m0, a0[r], scale));
      _mm512_storeu_ps(s + 16, _mm512_mask_mul_ps(minus_inf, m1, a1[r], scale));
    }
  }
}

// One row of a chunk of scores: raises the row's running maximum to cover the chunk, replaces the
// scores by exp(score - maximum) and returns the factor by which the row's earlier sums must
// shrink.
SD_AVX512_FN float ChunkNumerators(float* row, int64_t padded, float& running_max,
                                   float& running_sum) {
  __m512 mx = _mm512_set1_ps(running_max);
  for (int64_t j = 0; j < padded; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + j));
  const float new_max = _mm512_reduce_max_ps(mx);
  const __m512 shift = _mm512_set1_ps(new_max);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < padded; j += 16) {
    const __m512 e = ExpNonPositive(_mm512_sub_ps(_mm512_loadu_ps(row + j), shift));
    _mm512_storeu_ps(row + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  // Past the first chunks the maximum rarely moves: no rescaling then (exactly 1).
  const float shrink = running_max == new_max ? 1.0f
                       : running_max == -std::numeric_limits<float>::infinity()
                           ? 0.0f
                           : std::exp(running_max - new_max);
  running_max = new_max;
  running_sum = running_sum * shrink + _mm512_reduce_add_ps(sum);
  return shrink;
}

// out[r0 + r][c0 : c0 + 16 NV] = shrink[r] * out[...] + Σ_j p[r][j] v[j0 + j][c0 : ...] over n keys
// (the earlier value is ignored on the first chunk); columns past d are left alone.
template <int R, int NV>
SD_AVX512_FN void WeightedValues(const AttentionHead& h, int64_t r0, int64_t c0, int64_t j0,
                                 int64_t n, const float* p, const float* shrink, bool first) {
  __mmask16 mask[NV];
  SD_UNROLL for (int c = 0; c < NV; ++c) mask[c] = LaneMask(h.d - c0 - 16 * c);
  __m512 acc[R][NV];
  SD_UNROLL for (int r = 0; r < R; ++r) {
    const float* o = h.out + (r0 + r) * h.out_stride + c0;
    const __m512 f = _mm512_set1_ps(shrink[r]);
    SD_UNROLL for (int c = 0; c < NV; ++c) {
      acc[r][c] = first ? _mm512_setzero_ps()
                        : _mm512_mul_ps(_mm512_maskz_loadu_ps(mask[c], o + 16 * c), f);
    }
  }
  const float* vp = h.v + j0 * h.v_stride + c0;
  for (int64_t j = 0; j < n; ++j, vp += h.v_stride) {
    __m512 vv[NV];
    SD_UNROLL for (int c = 0; c < NV; ++c) vv[c] = _mm512_maskz_loadu_ps(mask[c], vp + 16 * c);
    SD_UNROLL for (int r = 0; r < R; ++r) {
      const __m512 pr = _mm512_set1_ps(p[r * kChunkStride + j]);
      SD_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_fmadd_ps(pr, vv[c], acc[r][c]);
    }
  }
  SD_UNROLL for (int r = 0; r < R; ++r) {
    float* o = h.out + (r0 + r) * h.out_stride + c0;
    SD_UNROLL for (int c = 0; c < NV; ++c) _mm512_mask_storeu_ps(o + 16 * c, mask[c], acc[r][c]);
  }
}

template <int R>
SD_AVX512_FN void TileValues(const AttentionHead& h, int64_t r0, int64_t j0, int64_t n,
                             const float* p, const float* shrink, bool first) {
  for (int64_t c0 = 0; c0 < h.d; c0 += 48) {
    switch (std::min<int64_t>(3, (h.d - c0 + 15) / 16)) {
      case 1:
        WeightedValues<R, 1>(h, r0, c0, j0, n, p, shrink, first);
        break;
      case 2:
        WeightedValues<R, 2>(h, r0, c0, j0, n, p, shrink, first);
        break;
      default:
        WeightedValues<R, 3>(h, r0, c0, j0, n, p, shrink, first);
        break;
    }
  }
}

// Calls F<R>(args...) for the tile height R = rows (1..kRows).
#define SD_DISPATCH_ROWS(rows, F, ...) \
  switch (rows) {                      \
    case 1:                            \
      F<1>(__VA_ARGS__);               \
      break;                           \
    case 2:                            \
      F<2>(__VA_ARGS__);               \
      break;                           \
    case 3:                            \
      F<3>(__VA_ARGS__);               \
      break;                           \
    case 4:                            \
      F<4>(__VA_ARGS__);               \
      break;                           \
    case 5:                            \
      F<5>(__VA_ARGS__);               \
      break;                           \
    default:                           \
      F<kRows>(__VA_ARGS__);           \
      break;                           \
  }

// Rows [b, e) of one head, e - b <= kBlockRows, walking the keys a chunk at a time (online
// softmax): the chunk's keys, values and scores stay in the L1 cache while every row of the block
// uses them.
SD_AVX512_FN void Block(const AttentionHead& h, int64_t b, int64_t e, float* scratch) {
  float* scores = scratch;  // [kBlockRows][kChunkStride]
  float running_max[kBlockRows], running_sum[kBlockRows], shrink[kBlockRows];
  for (int64_t r = 0; r < e - b; ++r) {
    running_max[r] = -std::numeric_limits<float>::infinity();
    running_sum[r] = 0;
  }
  for (int64_t j0 = 0; j0 < h.tk; j0 += kChunkKeys) {
    const int64_t n = std::min(kChunkKeys, h.tk - j0), padded = RoundUp(n, kKeyStep);
    for (int64_t r0 = b; r0 < e; r0 += kRows) {
      SD_DISPATCH_ROWS(std::min<int64_t>(kRows, e - r0), Scores, h, r0, j0, padded,
                       scores + (r0 - b) * kChunkStride)
    }
    for (int64_t r = 0; r < e - b; ++r) {
      shrink[r] =
          ChunkNumerators(scores + r * kChunkStride, padded, running_max[r], running_sum[r]);
    }
    for (int64_t r0 = b; r0 < e; r0 += kRows) {
      SD_DISPATCH_ROWS(std::min<int64_t>(kRows, e - r0), TileValues, h, r0, j0, n,
                       scores + (r0 - b) * kChunkStride, shrink + (r0 - b), j0 == 0)
    }
  }
  for (int64_t r = 0; r < e - b; ++r) {
    float* o = h.out + (b + r) * h.out_stride;
    const __m512 inv = _mm512_set1_ps(1.0f / running_sum[r]);
    for (int64_t c = 0; c < h.d; c += 16) {
      const __mmask16 m = LaneMask(h.d - c);
      _mm512_mask_storeu_ps(o + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + c), inv));
    }
  }
}

// Output rows [row_begin, row_end) of one head; `scratch` holds kBlockRows * kChunkStride floats.
SD_AVX512_FN void AttentionRows(const AttentionHead& head, int64_t row_begin, int64_t row_end,
                                float* scratch) {
  // Flush subnormals to zero while in here: tiny softmax weights times small values would otherwise
  // take the slow microcode path of the FMA units (the differences are below 1e-38).
  const unsigned int saved_csr = _mm_getcsr();
  _mm_setcsr(saved_csr | 0x8040);  // FTZ | DAZ
  for (int64_t b = row_begin; b < row_end; b += kBlockRows)
    Block(head, b, std::min(row_end, b + kBlockRows), scratch);
  _mm_setcsr(saved_csr);
}

}  // namespace

bool FusedAttentionAvailable() {
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }();
  return available;
}

void MultiHeadAttention(const AttentionBatch& a) {
  g_attention_flops.fetch_add(static_cast<uint64_t>(4 * a.batch * a.heads * a.tq * a.tk * a.d),
                              std::memory_order_relaxed);
  // Tasks are blocks of query rows of one head, so both cores have work at batch 1 too.
  constexpr int64_t kRowsPerTask = 2 * kBlockRows;
  const int64_t blocks = (a.tq + kRowsPerTask - 1) / kRowsPerTask, width = a.heads * a.d;
  const int64_t keys_padded = RoundUp(a.tk, kAttentionKeyBlock), tasks = a.batch * a.heads * blocks;
  const int threads = a.threads > 0 ? a.threads : omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch(kBlockRows * kChunkStride);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bh = task / blocks, block = task % blocks, bi = bh / a.heads, hi = bh % a.heads;
      const AttentionHead head{a.q + bi * a.tq * width + hi * a.d,
                               width,
                               a.k_packed + bh * keys_padded * a.d,
                               a.v + bh * a.tk * a.d,
                               a.d,
                               a.out + bi * a.tq * width + hi * a.d,
                               width,
                               a.tk,
                               a.d,
                               a.scale};
      AttentionRows(head, block * kRowsPerTask, std::min(a.tq, (block + 1) * kRowsPerTask),
                    scratch.data());
    }
  }
}

#else  // no AVX-512 kernel in this build

bool FusedAttentionAvailable() { return false; }

// See FusedAttentionAvailable.
void MultiHeadAttention(const AttentionBatch&) { std::abort(); }

#endif

}  // namespace sd::kernels
