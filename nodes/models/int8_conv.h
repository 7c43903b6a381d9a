// Convolutions in int8 on a CPU, through oneDNN's own API (Debian's libdnnl, the library LibTorch
// itself links): the int8 mode's arithmetic (README, "--dtype q8").
//
// Weights: symmetric int8 per output channel (scale = max |w| / 127), packed once per layer into
// the blocked layout oneDNN's kernel asks for. Activations: quantized per call, per tensor, to
// unsigned integers with a zero point ("dynamic" quantization: the range is the tensor's own min
// and max, so no calibration data is needed and nothing depends on earlier calls). The sums are
// exact int32; the output is f32: out = x_scale * w_scale[oc] * sum((q - zp) * w_q) + bias[oc].
//
// Bits of the weights the kernel multiplies: 8 on CPUs with VNNI (AVX-512 VNNI, AVX-VNNI), whose
// u8 x s8 dot product sums in int32. Elsewhere (AVX2 without VNNI) oneDNN multiplies by vpmaddubsw,
// which adds pairs of products in saturating int16: 255 x 127 x 2 overflows it, so the kernel takes
// the weights halved to 7 bits there (255 x 63 x 2 fits), rounded once more. (7-bit activations
// instead measured 2.1-2.8e-2 UNet error against 1.2-1.4e-2: the per-tensor activations are the
// coarser of the two.)
//
// How it runs: the input is quantized straight into a channels-last u8 buffer with a border of
// padding filled with the zero point (the value that stands for 0.0), and the convolution runs
// unpadded on it. (oneDNN 2.6's own source zero points give wrong sums for some channel counts,
// 1920 -> 640 among them, and it takes no run-time output scales: so the zero point's share,
// zp * sum(w_q[oc]), is subtracted through the per-channel bias, and the activation scale is a
// run-time multiplier, both as post-operations.) The result is f32 in channels-last memory order.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace sd::nn {

// Whether this CPU has an int8 convolution kernel in oneDNN (AVX2 or newer; not the reference one).
bool Int8ConvAvailable();
// 8 with VNNI, 7 without (above); honours DNNL_MAX_CPU_ISA, as oneDNN does. Activations: 8 bits.
int Int8KernelWeightBits();
// oneDNN's name for the instruction set its kernels use here ("avx512_core_vnni", "avx2", ...).
std::string Int8ConvIsa();

// Symmetric int8 weights per output channel: w ~= q * scale[o], q in [-127, 127].
struct Int8Weights {
  torch::Tensor q;      // int8 [out, in, k, k] (a convolution) or [out, in] (int8_linear.h)
  torch::Tensor scale;  // f32 [out]
};
// From w [out, ...] of any floating dtype (its f32 value); a zero channel gets scale 1.
Int8Weights QuantizeWeightsPerChannel(const torch::Tensor& w);
// q * scale as f32 (the fallback for inputs the int8 kernel does not take).
torch::Tensor DequantizeWeightsPerChannel(const Int8Weights& w);

// One layer's packed weights and the kernels made for the input shapes it has met.
class Int8Conv {
 public:
  // bias [out] (any floating dtype) or undefined.
  Int8Conv(const Int8Weights& w, const torch::Tensor& bias, int64_t stride, int64_t padding);
  ~Int8Conv();
  Int8Conv(const Int8Conv&) = delete;
  Int8Conv& operator=(const Int8Conv&) = delete;

  // conv2d(x, w, bias, stride, padding) for f32 x [N, in, H, W] (contiguous or channels-last) on a
  // CPU; f32 [N, out, OH, OW] in channels-last memory order. Thread-safe.
  torch::Tensor Forward(const torch::Tensor& x);
  // Whether oneDNN has a fast kernel for an input of this shape (else Forward would run its slow
  // reference code: the caller should run the f32 convolution).
  bool Supports(int64_t n, int64_t h, int64_t w);
  // The weights the kernel multiplies on this CPU: `w`, or with 7 bits (above).
  static Int8Weights KernelWeights(const Int8Weights& w);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace sd::nn
