// Linear layers in int8 on a CPU with VNNI, through oneDNN's matmul: the int8 mode's feed-forward
// projections (README, "--dtype q8"), the UNet's largest linear layers (C -> 8C, `ff.net.0.proj`).
//
// Weights: symmetric int8 per output channel, as the convolutions' (int8_conv.h,
// QuantizeWeightsPerChannel). Activations: quantized per call and per row (one scale per token),
// symmetric, q = round(x / s) in [-127, 127] with s = max |x_row| / 127: a token's own range, so
// one token with large values does not coarsen the others (per-tensor scales, as the convolutions
// take them, were not tried here). The sums are exact int32; the
// output is f32: out[m, n] = s[m] * w_scale[n] * sum_k(q[m, k] * w_q[n, k]) + bias[n], the scales
// and the bias applied by the kernel as it writes (output scales and two post-operations).
//
// VNNI only (AVX-512 VNNI or AVX-VNNI: Int8KernelWeightBits() == 8). Without it oneDNN multiplies
// with saturating int16 pair sums, which would need 7-bit weights, and the mode's error budget has
// no room for that on top of the 7-bit convolutions (README): there the layers stay f32.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>

#include "nodes/models/int8_conv.h"

namespace sd::nn {

// Whether this CPU runs Int8Linear (oneDNN with VNNI, DNNL_MAX_CPU_ISA honoured).
bool Int8LinearAvailable();

// One layer's packed weights and the kernels made for the row counts it has met.
class Int8Linear {
 public:
  // w.q int8 [out, in], w.scale f32 [out]; bias [out] (any floating dtype) or undefined.
  Int8Linear(const Int8Weights& w, const torch::Tensor& bias);
  ~Int8Linear();
  Int8Linear(const Int8Linear&) = delete;
  Int8Linear& operator=(const Int8Linear&) = delete;

  // linear(x, w, bias) for f32 x [..., in] on a CPU: f32 [..., out], contiguous. Thread-safe.
  torch::Tensor Forward(const torch::Tensor& x);
  // Whether oneDNN has a fast kernel for `rows` rows (else the caller should compute in f32).
  bool Supports(int64_t rows);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// x [rows, width] f32 -> q int8 [rows, width] and scale f32 [rows], as Forward quantizes (round
// half up of x / scale; a zero row gets scale 0 and zeros). For the tests.
void QuantizeRowsSymmetric(const float* x, int64_t rows, int64_t width, int8_t* q, float* scale);

}  // namespace sd::nn
