// 3x3 stride-1 convolutions by Winograd F(4x4, 3x3) on a CPU (nodes/kernels/winograd_cpu.h for the
// transforms; the 36 matrix products go through the BLAS), for the layers where it was measured
// faster than LibTorch's direct convolution on this CPU: it does 4x fewer multiplications, at the
// cost of the transforms and of transformed weights 4x the size of the layer's (36 values per 3x3
// kernel). So it pays on layers with large images and many channels, the VAE's, and is used there
// only: the UNet's convolutions are small and its weights large.
//
// SD_CPU_WINOGRAD=on|off|auto (default auto) or SetWinogradMode: auto times each pair of channel
// counts both ways once per process, on a 64x64 image (the first decode pays a fraction of a
// second), and takes Winograd for layers of at least kWinogradMinChannels in and out where it ran
// at least kWinogradMinSpeedup times faster. The margins keep the choice the same in every process
// of a machine (a worker and its host give the same image bytes): the layers it wins on run about
// 2x faster (measured: 1.7-2.6x on a 2-core AVX2 EPYC), smaller ones barely gain.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace sd::nn {

enum class WinogradMode { kAuto, kOff, kOn };
inline constexpr int64_t kWinogradMinChannels = 128;
inline constexpr double kWinogradMinSpeedup = 1.2;
// Over SD_CPU_WINOGRAD; kAuto clears it (SD_CPU_WINOGRAD again, else measured).
void SetWinogradMode(WinogradMode mode);
WinogradMode WinogradModeInForce();  // set, else SD_CPU_WINOGRAD, else kAuto

// Whether a layer of `in` -> `out` channels runs by Winograd: as the mode says, and on kAuto as
// measured (once per pair, cached) for layers of kWinogradMinChannels or more.
bool UsesWinograd(int64_t in, int64_t out);
// How many times faster Winograd ran than the direct convolution for that pair (measured once).
double MeasuredWinogradSpeedup(int64_t in, int64_t out);

// The pairs of channel counts measured so far in this process, with their speedups.
struct WinogradProbe {
  int64_t in = 0, out = 0;
  double speedup = 0;
};
std::vector<WinogradProbe> WinogradProbes();

// w [out, in, 3, 3] f32 as the transformed weights [36, out, in].
torch::Tensor WinogradWeights(const torch::Tensor& w);
// conv2d(x, w, bias, stride 1, padding 1) for f32 x [N, in, H, W] on a CPU, with
// u = WinogradWeights(w); bias may be undefined. The result is contiguous (NCHW).
torch::Tensor WinogradConv3x3(const torch::Tensor& x, const torch::Tensor& u,
                              const torch::Tensor& bias);

}  // namespace sd::nn
