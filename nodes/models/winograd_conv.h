// 3x3 stride-1 convolutions by Winograd F(4x4, 3x3) on a CPU (nodes/kernels/winograd_cpu.h for the
// transforms; the 36 matrix products go through oneDNN's batched matmul where linear layers run
// through oneDNN (linear_cpu.h: measured per machine), else through the BLAS), for the layers where
// it was measured faster than LibTorch's direct convolution on this CPU: it does 4x fewer
// multiplications, at the cost of the transforms and of transformed weights 4x the size of the
// layer's (36 values per 3x3 kernel). So it pays on layers with large images and many channels: the
// VAE's, and the UNet's first level (320 channels on 64x64 latents at 512x512; its transformed
// weights about 200 MB). The UNet's lower levels have too few pixels for the rule below, and too
// many weights to keep transformed. SD_CPU_WINOGRAD=on forces it on every 3x3 layer, the UNet's
// included (4x their weight bytes more memory): for comparisons.
//
// SD_CPU_WINOGRAD=on|off|auto (default auto) or SetWinogradMode. Auto takes Winograd for a layer
// of at least kWinogradMinChannels in and out, on an image of at least kWinogradMinPixels, doing at
// least kWinogradMinWork (pixels x in x out: 128 channels at 128x128, 512 at 32x32), where it ran
// at least kWinogradMinSpeedup times faster than the direct convolution: timed once per pair of
// channel counts and machine (cpu_choice.h: every process of a machine, a worker and its host,
// takes the same choice and gives the same image bytes), on an image sized so that every pair does
// the same work (512 -> 512 channels at 64x64, 128 -> 128 at 256x256: about 1 s per pair, paid by
// the machine's first decode of a large image). The layers it is used on run 1.3-2.7x faster
// (measured on 2-core AVX2 and AVX-512 EPYCs); smaller layers and images gain little, and their
// timings are the noisiest. (At 48x48 ... 192x192 the probes of 128 channels measured 1.1-1.4x
// where the decoder's 512x512 layers ran 1.6x faster.)
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sd::nn {

enum class WinogradMode { kAuto, kOff, kOn };
inline constexpr int64_t kWinogradMinChannels = 128;
inline constexpr int64_t kWinogradMinPixels = 64 * 64;
inline constexpr int64_t kWinogradMinWork = int64_t{1} << 28;
inline constexpr double kWinogradMinSpeedup = 1.2;
// Over SD_CPU_WINOGRAD; kAuto clears it (SD_CPU_WINOGRAD again, else measured).
void SetWinogradMode(WinogradMode mode);
WinogradMode WinogradModeInForce();  // set, else SD_CPU_WINOGRAD, else kAuto

// Whether a layer of `in` -> `out` channels on an h x w image runs by Winograd: as the mode says,
// and on kAuto by the rules above.
bool UsesWinograd(int64_t in, int64_t out, int64_t h, int64_t w);
// How many times faster Winograd ran than the direct convolution for that pair (measured once per
// machine, on an image of WinogradProbeSide(in, out) pixels square: cpu_choice.h).
double MeasuredWinogradSpeedup(int64_t in, int64_t out);
// Its name in the measurement file. The products are part of what is timed, so each way of running
// them is measured apart.
std::string WinogradMeasurement(int64_t in, int64_t out, bool onednn_products);
// The FLOPs the Winograd convolutions of this process did not do: a direct convolution's minus
// their 36 products' (negative for images smaller than a tile). sd-bench adds them back so that a
// CFG step counts at its direct-convolution FLOPs, the measure its goals are stated in.
int64_t WinogradFlopsSaved();
// Whether the 36 products run as one oneDNN batched matmul (batched_matmul.h), else the BLAS.
bool WinogradProductsByOneDnn();
int64_t WinogradProbeSide(int64_t in, int64_t out);

// The pairs of channel counts this process has asked about, with their speedups.
struct WinogradProbe {
  int64_t in = 0, out = 0;
  double speedup = 0;
};
std::vector<WinogradProbe> WinogradProbes();

// w [out, in, 3, 3] f32 as the transformed weights [36, out, in].
torch::Tensor WinogradWeights(const torch::Tensor& w);
// conv2d(x, w, bias, stride 1, padding 1) for f32 x [N, in, H, W] on a CPU, in c10::InferenceMode,
// with u = WinogradWeights(w); bias may be undefined. The result is contiguous (NCHW).
torch::Tensor WinogradConv3x3(const torch::Tensor& x, const torch::Tensor& u,
                              const torch::Tensor& bias);

}  // namespace sd::nn
