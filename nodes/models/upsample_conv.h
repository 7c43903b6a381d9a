// A 3x3 convolution (stride 1, padding 1) of a nearest-neighbour 2x upsampling - the upsampling
// layers of the VAE decoder and the UNet - computed on the low-resolution map. Each output pixel
// (2i + a, 2j + b) sees only two distinct input rows and two distinct columns of the upsampled map,
// so each of the four phases (a, b) is a 2x2 convolution of the input whose taps are sums of the
// 3x3 taps (rows [w0, w1 + w2] for a = 0, [w0 + w1, w2] for a = 1; columns alike). The four phases
// run as one 2x2 convolution with 4x the output channels, and their results are interleaved: 16
// products per output pixel and channel pair instead of 9 x 4 = 36 (2.25x fewer FLOPs), and no 4x
// upsampled copy of the input. The same numbers up to f32 rounding (the taps are summed before
// multiplying).
//
//   torch::Tensor p = UpsampleConvWeights(conv->weight);                  // once per weight
//   torch::Tensor y = UpsampleConv3x3(x, p, conv->bias);   // == conv(interpolate(x, 2x nearest))
//
// Fewer FLOPs, but oneDNN runs 2x2 kernels at a lower rate than 3x3 ones, so whether it pays is
// measured (on a 2-core AVX-512 EPYC: 1.2-1.45x faster at the VAE decoder's shapes, in both
// layouts; slower at the UNet's 1280 channels on 16x16): once per machine and channel count, for
// the VAE decoder only. SD_CPU_UPSAMPLE_CONV=subpixel|direct|auto (default auto) or SetUpsampleConv
// overrides.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "nodes/weights/sd_config.h"

namespace sd::nn {

enum class UpsampleConv { kAuto, kDirect, kSubpixel };
inline constexpr double kSubpixelMinSpeedup = 1.1;
// Over SD_CPU_UPSAMPLE_CONV; kAuto clears it.
void SetUpsampleConv(UpsampleConv mode);
// Whether the VAE decoder's upsampling layer of `channels` runs sub-pixel: as the mode in force
// says, and on kAuto where it ran at least kSubpixelMinSpeedup times faster than upsampling then
// convolving as the decoder otherwise would (its layout, vae_conv_layout; Winograd where the layer
// would take it), timed on a (24576 / channels)-pixel-square input (512 channels at 48x48).
bool UsesSubpixelUpsample(int64_t channels);
double MeasuredSubpixelSpeedup(int64_t channels);
// Its name in the measurement file. The upsampled path's convolution may run by Winograd, whose
// products run one of two ways (winograd_conv.h): each is measured apart.
std::string SubpixelMeasurement(int64_t channels, bool onednn_products);
// The channel counts of a VAE decoder's upsampling layers (every level but the first), each once:
// 256 and 512 for SD v1.x.
std::vector<int64_t> DecoderUpsampleChannels(const VaeConfig& vae);

// w [out, in, 3, 3] (any float dtype) as the phases' f32 taps [4 * out, in, 2, 2], phase 2a + b
// first-major.
torch::Tensor UpsampleConvWeights(const torch::Tensor& w);
// Nearest-neighbour 2x upsampling of x [N, C, H, W] (SD's Upsample layers; keeps x's layout).
torch::Tensor Nearest2x(const torch::Tensor& x);
// conv2d(Nearest2x(x), w, bias, stride 1, padding 1) for f32 x [N, in, H, W] on a CPU with
// p = UpsampleConvWeights(w); bias [out] (any float dtype) or undefined. The result
// [N, out, 2H, 2W] has x's memory format (NCHW or channels-last).
torch::Tensor UpsampleConv3x3(const torch::Tensor& x, const torch::Tensor& p,
                              const torch::Tensor& bias);

}  // namespace sd::nn
