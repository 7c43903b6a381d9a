// The data transforms of a Winograd F(4x4, 3x3) convolution (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2015): a 3x3, stride-1, padding-1 convolution computed per 4x4
// output tile from the 6x6 input patch around it as Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A, which costs 36
// multiplications per tile and channel pair instead of 144. The element-wise products summed over
// input channels are 36 matrix products (one per point of the 6x6 transform), which the caller
// runs through the BLAS; these functions move data into and out of that form. Interpolation points
// 0, ±1, ±2 (the usual choice: f32 error about 1e-6 relative on the VAE's layers).
//
// Torch-free: raw f32 pointers, NCHW planes of one image. The loops are built for AVX-512, AVX2 and
// plain x86-64 and chosen at load time (GCC target clones); they run on OpenMP threads.
#ifndef SD_NODES_KERNELS_WINOGRAD_CPU_H_
#define SD_NODES_KERNELS_WINOGRAD_CPU_H_

#include <cstdint>

namespace sd::kernels {

inline constexpr int64_t kWinogradTile = 4;     // output tile side
inline constexpr int64_t kWinogradPoints = 36;  // points of the 6x6 transform

inline constexpr int64_t WinogradTiles(int64_t size) {
  return (size + kWinogradTile - 1) / kWinogradTile;
}

// The 3x3 kernels w [out][in][3][3] as u [36][out][in]: u[6r + c] = (G w Gᵀ)[r][c], computed in
// double and rounded once.
void WinogradWeights(const float* w, int64_t out_channels, int64_t in_channels, float* u);

// Tile rows [row0, row0 + rows) of the image x [channels][h][w]: v[k][c][t] = (Bᵀ d B)[k] for the
// tile t = (i - row0) * WinogradTiles(w) + j, where d is the 6x6 patch of channel c at rows
// 4i-1..., columns 4j-1... (zero outside the image). v: [36][channels][rows * WinogradTiles(w)].
void WinogradInput(const float* x, int64_t channels, int64_t h, int64_t w, int64_t row0,
                   int64_t rows, float* v, int threads);

// The same tile rows of the output y [out_channels][h][w]: its 4x4 tile (i, j) is Aᵀ m A plus
// bias[o] (bias may be null), m the 36 values m[k][o][t]; tiles are cut at the image's edge.
void WinogradOutput(const float* m, const float* bias, int64_t out_channels, int64_t h, int64_t w,
                    int64_t row0, int64_t rows, float* y, int threads);

}  // namespace sd::kernels

#endif  // SD_NODES_KERNELS_WINOGRAD_CPU_H_
