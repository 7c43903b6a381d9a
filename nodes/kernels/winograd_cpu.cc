#include "nodes/kernels/winograd_cpu.h"

#include <omp.h>

#include <algorithm>
#include <vector>

// One body per instruction set, chosen when the library loads: the loops below are element-wise
// over runs of tiles, which the compiler vectorizes for each target.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SD_WINOGRAD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SD_WINOGRAD_CLONES
#endif

namespace sd::kernels {

namespace {

constexpr int64_t kPatch = 6;  // input patch side: tile + kernel - 1

// o = Bᵀ d for six runs of n values (d[s][j] is row s of tile j's patch, or its column).
SD_WINOGRAD_CLONES void InputRows(const float* const* d, float* const* o, int64_t n) {
  const float* __restrict d0 = d[0], * __restrict d1 = d[1], * __restrict d2 = d[2];
  const float* __restrict d3 = d[3], * __restrict d4 = d[4], * __restrict d5 = d[5];
  float* __restrict o0 = o[0], * __restrict o1 = o[1], * __restrict o2 = o[2];
  float* __restrict o3 = o[3], * __restrict o4 = o[4], * __restrict o5 = o[5];
  for (int64_t j = 0; j < n; ++j) {
    const float a = d4[j] - 4.0f * d2[j], b = d3[j] - 4.0f * d1[j];
    const float c = d4[j] - d2[j], e = 2.0f * (d3[j] - d1[j]);
    o0[j] = 4.0f * d0[j] - 5.0f * d2[j] + d4[j];
    o1[j] = a + b;
    o2[j] = a - b;
    o3[j] = c + e;
    o4[j] = c - e;
    o5[j] = 4.0f * d1[j] - 5.0f * d3[j] + d5[j];
  }
}

// o = Aᵀ m for six runs of n values: four outputs.
SD_WINOGRAD_CLONES void OutputRows(const float* const* m, float* const* o, int64_t n) {
  const float* __restrict m0 = m[0], * __restrict m1 = m[1], * __restrict m2 = m[2];
  const float* __restrict m3 = m[3], * __restrict m4 = m[4], * __restrict m5 = m[5];
  float* __restrict o0 = o[0], * __restrict o1 = o[1], * __restrict o2 = o[2], * __restrict o3 = o[3];
  for (int64_t j = 0; j < n; ++j) {
    const float s12 = m1[j] + m2[j], d12 = m1[j] - m2[j];
    const float s34 = m3[j] + m4[j], d34 = m3[j] - m4[j];
    o0[j] = m0[j] + s12 + s34;
    o1[j] = d12 + 2.0f * d34;
    o2[j] = s12 + 4.0f * s34;
    o3[j] = d12 + 8.0f * d34 + m5[j];
  }
}

}  // namespace

namespace {

constexpr double kG[kPatch][3] = {{1.0 / 4, 0, 0},
                                  {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                  {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                  {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                  {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                  {0, 0, 1}};
constexpr int64_t kWeightBlock = 64;  // kernels transformed together, one per vector lane

// G g Gᵀ for the n <= kWeightBlock kernels from `first` on, in double: each step runs across the
// kernels (the vectorized dimension), and each of the 36 results lands as a run of n in its plane.
SD_WINOGRAD_CLONES void WeightBlock(const float* w, int64_t first, int64_t n, int64_t pairs,
                                    float* u) {
  double g[9][kWeightBlock];
  for (int64_t j = 0; j < n; ++j) {
    for (int t = 0; t < 9; ++t) g[t][j] = w[(first + j) * 9 + t];
  }
  double gw[kPatch][3][kWeightBlock];  // G g
  for (int r = 0; r < kPatch; ++r) {
    for (int c = 0; c < 3; ++c) {
      for (int64_t j = 0; j < n; ++j)
        gw[r][c][j] = kG[r][0] * g[c][j] + kG[r][1] * g[3 + c][j] + kG[r][2] * g[6 + c][j];
    }
  }
  for (int r = 0; r < kPatch; ++r) {
    for (int c = 0; c < kPatch; ++c) {
      float* __restrict dst = u + (r * kPatch + c) * pairs + first;
      for (int64_t j = 0; j < n; ++j) {
        dst[j] = static_cast<float>(gw[r][0][j] * kG[c][0] + gw[r][1][j] * kG[c][1] +
                                    gw[r][2][j] * kG[c][2]);
      }
    }
  }
}

}  // namespace

void WinogradWeights(const float* w, int64_t out_channels, int64_t in_channels, float* u) {
  const int64_t pairs = out_channels * in_channels;
  const int64_t blocks = (pairs + kWeightBlock - 1) / kWeightBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t first = b * kWeightBlock;
    WeightBlock(w, first, std::min(kWeightBlock, pairs - first), pairs, u);
  }
}

void WinogradInput(const float* x, int64_t channels, int64_t h, int64_t w, int64_t row0,
                   int64_t rows, float* v, int threads) {
  const int64_t tw = WinogradTiles(w), tiles = rows * tw, plane = channels * tiles;
  // Per thread: the patch rows of one tile row split by column phase (phase p holds columns 4j+p-1,
  // so tile j's six columns are runs starting at j or j + 1), and the six rows after Bᵀ across.
  const int64_t run = tw + 1;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> phases(kPatch * 4 * run), across(kPatch * kPatch * tw);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < channels; ++c) {
      const float* xc = x + c * h * w;
      for (int64_t li = 0; li < rows; ++li) {
        const int64_t i = row0 + li;
        for (int64_t r = 0; r < kPatch; ++r) {
          const int64_t y = kWinogradTile * i - 1 + r;
          const float* row = y >= 0 && y < h ? xc + y * w : nullptr;
          float* ph = phases.data() + r * 4 * run;
          for (int64_t p = 0; p < 4; ++p) {
            for (int64_t j = 0; j < run; ++j) {
              const int64_t col = kWinogradTile * j + p - 1;
              ph[p * run + j] = row && col >= 0 && col < w ? row[col] : 0.0f;
            }
          }
          // Bᵀ along the row: column s of tile j is phase s % 4 from j + s / 4.
          const float* cols[kPatch] = {ph,           ph + run, ph + 2 * run,
                                       ph + 3 * run, ph + 1,   ph + run + 1};
          float* out[kPatch];
          for (int64_t k = 0; k < kPatch; ++k) out[k] = across.data() + (r * kPatch + k) * tw;
          InputRows(cols, out, tw);
        }
        // Bᵀ down the columns, into the 36 planes.
        for (int64_t kc = 0; kc < kPatch; ++kc) {
          const float* in[kPatch];
          float* out[kPatch];
          for (int64_t r = 0; r < kPatch; ++r) {
            in[r] = across.data() + (r * kPatch + kc) * tw;
            out[r] = v + (r * kPatch + kc) * plane + c * tiles + li * tw;
          }
          InputRows(in, out, tw);
        }
      }
    }
  }
}

void WinogradOutput(const float* m, const float* bias, int64_t out_channels, int64_t h, int64_t w,
                    int64_t row0, int64_t rows, float* y, int threads) {
  const int64_t tw = WinogradTiles(w), tiles = rows * tw, plane = out_channels * tiles;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> down(kWinogradTile * kPatch * tw), tile_cols(kWinogradTile * tw);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < out_channels; ++o) {
      const float b = bias ? bias[o] : 0.0f;
      float* yo = y + o * h * w;
      for (int64_t li = 0; li < rows; ++li) {
        // Aᵀ down the columns: four rows of six values per tile.
        for (int64_t kc = 0; kc < kPatch; ++kc) {
          const float* in[kPatch];
          for (int64_t kr = 0; kr < kPatch; ++kr)
            in[kr] = m + (kr * kPatch + kc) * plane + o * tiles + li * tw;
          float* out[kWinogradTile];
          for (int64_t a = 0; a < kWinogradTile; ++a) out[a] = down.data() + (a * kPatch + kc) * tw;
          OutputRows(in, out, tw);
        }
        // Aᵀ along each row, then the four columns of every tile into the image row.
        for (int64_t a = 0; a < kWinogradTile; ++a) {
          const int64_t yy = kWinogradTile * (row0 + li) + a;
          if (yy >= h) break;
          const float* in[kPatch];
          for (int64_t kc = 0; kc < kPatch; ++kc) in[kc] = down.data() + (a * kPatch + kc) * tw;
          float* out[kWinogradTile];
          for (int64_t col = 0; col < kWinogradTile; ++col) out[col] = tile_cols.data() + col * tw;
          OutputRows(in, out, tw);
          float* row = yo + yy * w;
          for (int64_t j = 0; j < tw; ++j) {
            const int64_t x0 = kWinogradTile * j, n = std::min<int64_t>(kWinogradTile, w - x0);
            for (int64_t col = 0; col < n; ++col) row[x0 + col] = out[col][j] + b;
          }
        }
      }
    }
  }
}

}  // namespace sd::kernels
