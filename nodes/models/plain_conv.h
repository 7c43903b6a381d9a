// Convolutions on small images by oneDNN on the layer's weights as they are (onednn_conv.h: no
// per-call reorder of the weights into a blocked layout, which LibTorch's convolution does on every
// call). It pays where a layer's weights are large against its image: the UNet's 1280-channel
// levels at 8x8 and 16x16 latents (512x512 images), where the reorder costs as much as the
// arithmetic. For f32 inputs (contiguous NCHW) and f32 weights on a CPU, in c10::InferenceMode;
// training's autograd keeps LibTorch's path. The result equals LibTorch's up to f32 rounding
// (another summation order).
//
// SD_CPU_PLAIN_CONV=on|off|auto (default auto) or SetPlainConvMode. Auto takes it for a layer of
// at least kPlainConvMinChannels in and out, kernel 1 or 3 (padding kernel / 2, stride 1 or 2), on
// an image of at most kPlainConvMaxPixels, where oneDNN has a JIT kernel for it and it ran at least
// kPlainConvMinSpeedup times faster than LibTorch's convolution: timed once per layer shape and
// machine (cpu_choice.h: every process of a machine takes the same choice and gives the same image
// bytes), at the layer's own image size, batch 1. `on` takes it on every layer that has a JIT
// kernel (for comparisons); `off` never.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sd::nn {

enum class PlainConvMode { kAuto, kOff, kOn };
inline constexpr int64_t kPlainConvMinChannels = 128;
inline constexpr int64_t kPlainConvMaxPixels = 32 * 32;
inline constexpr double kPlainConvMinSpeedup = 1.1;
// Over SD_CPU_PLAIN_CONV; kAuto clears it (SD_CPU_PLAIN_CONV again, else measured).
void SetPlainConvMode(PlainConvMode mode);
PlainConvMode PlainConvModeInForce();  // set, else SD_CPU_PLAIN_CONV, else kAuto

// The layer a choice is about: `in` -> `out` channels, a kernel x kernel window moving by `stride`
// (padding kernel / 2), on an h x w image.
struct PlainConvLayer {
  int64_t in = 0, out = 0, kernel = 3, stride = 1, h = 0, w = 0;
};
// Whether such a layer runs by PlainConv: as the mode says, and on kAuto by the rules above.
bool UsesPlainConv(const PlainConvLayer& layer);
// How many times faster PlainConv ran than torch::conv2d for the layer (measured once per machine).
double MeasuredPlainConvSpeedup(const PlainConvLayer& layer);
std::string PlainConvMeasurement(const PlainConvLayer& layer);  // its name in the measurement file

// The layers this process has asked about, with their speedups (for sd-bench's report).
struct PlainConvProbe {
  PlainConvLayer layer;
  double speedup = 0;
};
std::vector<PlainConvProbe> PlainConvProbes();
std::string PlainConvLayerText(const PlainConvLayer& layer);  // "1280->1280 3x3 at 8x8"

// torch::conv2d(x, w, bias, stride, w.size(2) / 2) for f32 x [N, in, H, W] and f32 w
// [out, in, k, k] on a CPU; bias [out] or undefined. Contiguous (NCHW) result. Throws (naming the
// shape) where oneDNN has no JIT kernel for it: UsesPlainConv says where it has.
torch::Tensor PlainConv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                        int64_t stride);

}  // namespace sd::nn
