// The layers Stable Diffusion's three networks are built from, as LibTorch modules whose parameters carry
// the checkpoint's own names ("weight", "bias"). Parameters are created uninitialised: loading replaces
// them with checkpoint tensors (zero-copy where possible), so no time goes into random initialisation.
// Normalisation layers keep fp32 parameters and compute in fp32 whatever the model's dtype.
#pragma once

#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <memory>

namespace sd::nn {

class Int8Conv;
class Int8Linear;
// Something made from a layer's `weight` (Winograd-transformed weights, packed int8 weights): made
// on first use, remade when the weight tensor is replaced (layers.cc).
template <typename T>
struct FromWeight;

// How bf16 weights compute on a CPU. kNative: bf16 convolutions and matmuls through oneDNN (fast
// with AMX, where the CPU has bf16 tiles). kF32: the weights stay bf16 in memory and each layer
// widens its weights to fp32 as it runs, so the arithmetic is fp32's — faster where the CPU's bf16
// dot product issues at a lower rate than its fp32 FMA (measured: half the rate on AVX-512 BF16
// CPUs without AMX; 30x slower on AVX2-only CPUs, where bf16 is emulated), and more exact. kAuto
// (the default) times a convolution and a matmul both ways once per process (milliseconds; a
// fraction of a second on AVX2) and picks kNative only when it is at least kNativeBf16MinSpeedup
// times faster. SD_CPU_BF16=native|f32|auto overrides the default.
enum class CpuBf16Compute { kAuto, kNative, kF32 };
void SetCpuBf16Compute(CpuBf16Compute mode);
// The mode in force (set, else SD_CPU_BF16, else kAuto), resolved to kNative or kF32 on this machine.
CpuBf16Compute ResolvedCpuBf16Compute();
// What `mode` means on this machine: itself, or for kAuto kNative or kF32 (measured once).
CpuBf16Compute ResolveCpuBf16Compute(CpuBf16Compute mode);
inline constexpr double kNativeBf16MinSpeedup = 1.2;
// How many times faster native bf16 arithmetic ran than kF32 mode's in kAuto's measurement (< 1:
// slower). Measured once per machine (cpu_choice.h).
double MeasuredNativeBf16Speedup();
// Its name in the measurement file.
inline constexpr char kNativeBf16Measurement[] = "bf16 native speedup";

// The dtype a network's activations take when its weights are `weight_dtype` on `device`: the weights'
// own, except bf16 on a CPU in CpuBf16Compute::kF32, which computes in fp32.
torch::ScalarType ActivationDtype(torch::ScalarType weight_dtype, const torch::Device& device);

// Marks modules whose parameters stay fp32 when the model is loaded in bf16/fp16.
class Fp32Params {
 public:
  virtual ~Fp32Params() = default;
};

class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = -1);
  torch::Tensor forward(const torch::Tensor& x);
  // Lets a 3x3, stride-1 layer run by Winograd F(4x4, 3x3) where this CPU runs its channel counts
  // faster that way (winograd_conv.h): f32 weights and contiguous (NCHW) f32 inputs on a CPU, in
  // inference mode (the networks' entry points; training's autograd keeps the direct path). The
  // transformed weights are made on first use and kept (4x the layer's weight bytes) until the
  // weight tensor is replaced. No effect on other layers.
  void AllowWinograd();
  // Replaces the weights by int8 ones (int8_conv.h: QuantizeWeightsPerChannel), `weight` then
  // holding the int8 values and `weight_scale` their scales. The layer computes in int8 on f32
  // inputs on a CPU in inference mode where oneDNN has a fast kernel for the input's shape (packed
  // on first use), else in the input's dtype on the dequantized weights. No effect when the weights
  // are int8 already.
  void UseInt8();
  // The same with weights quantized elsewhere (an int8 checkpoint): q int8 [out, in, k, k], scale
  // f32 [out].
  void SetInt8Weights(const torch::Tensor& q, const torch::Tensor& scale);
  bool UsesInt8() const { return weight.scalar_type() == torch::kInt8; }
  // forward(nearest 2x upsampling of x), for a 3x3 stride-1 layer: the VAE decoder's upsampling. In
  // inference mode on a CPU with f32 inputs and f32 or bf16 weights it runs on x itself by four 2x2
  // convolutions where that measured faster on this machine (upsample_conv.h: 2.25x fewer FLOPs;
  // the taps made on first use and kept, 16/9 of the layer's weight bytes in f32); else it
  // upsamples and calls forward.
  torch::Tensor ForwardUpsampled2x(const torch::Tensor& x);
  torch::Tensor weight, bias;
  torch::Tensor weight_scale;  // int8 weights only

 private:
  torch::Tensor WinogradWeights();
  std::shared_ptr<Int8Conv> PackedInt8();
  bool TakesWinograd(const torch::Tensor& x) const;
  // Whether the layer runs by plain_conv.h's PlainConv (small images, measured per machine).
  bool TakesPlainConv(const torch::Tensor& x) const;
  int64_t stride_, padding_;
  std::shared_ptr<FromWeight<torch::Tensor>> upsample_taps_;     // null: not a 3x3 stride-1 layer
  std::shared_ptr<FromWeight<torch::Tensor>> winograd_;          // null: not allowed
  std::shared_ptr<FromWeight<std::shared_ptr<Int8Conv>>> int8_;  // null: f32
};
TORCH_MODULE(Conv2d);

// The int8 mode's choice of layers (README, "--dtype q8"): every 3x3 convolution of `network` with
// at least kInt8MinChannels in and out, i.e. all but the UNet's first and last, which see 4-channel
// latents; and, on CPUs with VNNI (int8_linear.h), the transformer blocks' feed-forward
// projections (Int8LinearShape). 1x1 convolutions and the other linear layers stay f32: they are a
// small share of the time, or int8 costs them more accuracy than it saves time (measured, README).
// Returns how many layers.
inline constexpr int64_t kInt8MinChannels = 32;
int UseInt8Layers(torch::nn::Module& network);
// Conv2d::AllowWinograd on every convolution of `network` (the VAE's and the UNet's): which layers
// then run by Winograd is winograd_conv.h's rule (channels, image size, and this CPU's measurement
// per pair of channel counts), so only the large ones do (the UNet's: its 320-channel level at
// 512x512 and up; the transformed weights, 4x a layer's bytes, are kept only for layers used).
void AllowWinogradIn(torch::nn::Module& network);
// Whether a convolution weight of this shape [out, in, kh, kw] is one the int8 mode quantizes.
inline bool Int8ConvShape(int64_t out, int64_t in, int64_t kh, int64_t kw) {
  return kh == 3 && kw == 3 && out >= kInt8MinChannels && in >= kInt8MinChannels;
}

// Whether a linear weight of this shape [out, in] is one the int8 mode quantizes: the feed-forward
// projection of SD's transformer blocks (`ff.net.0.proj`, C -> 8C: value and gate), the one shape
// no other layer of the three networks has. (The feed-forward output, 4C -> C, stays f32: its
// input, the gated values, has outlying tokens that per-token int8 rounds too coarsely: UNet error
// 1.6-2.0e-2 with it, 1.25-1.57e-2 without, simulated.)
inline bool Int8LinearShape(int64_t out, int64_t in) {
  return in >= kInt8MinChannels && out == 8 * in;
}

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x);
  // As Conv2d's: int8 weights (`weight` int8 [out, in], `weight_scale` f32 [out]) that compute in
  // int8 (int8_linear.h) on f32 inputs on a CPU with VNNI in inference mode, else in the input's
  // dtype on the dequantized weights. UseInt8 quantizes the weights it holds (no effect when they
  // are int8 already); SetInt8Weights takes weights quantized elsewhere (an int8 checkpoint).
  void UseInt8();
  void SetInt8Weights(const torch::Tensor& q, const torch::Tensor& scale);
  bool UsesInt8() const { return weight.scalar_type() == torch::kInt8; }
  torch::Tensor weight, bias;
  torch::Tensor weight_scale;  // int8 weights only

 private:
  std::shared_ptr<FromWeight<std::shared_ptr<Int8Linear>>> int8_;  // null: not int8
};
TORCH_MODULE(Linear);

class GroupNormImpl : public torch::nn::Module, public Fp32Params {
 public:
  GroupNormImpl(int64_t channels, double eps, int64_t groups = 32);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm);

class LayerNormImpl : public torch::nn::Module, public Fp32Params {
 public:
  explicit LayerNormImpl(int64_t width, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;

 private:
  int64_t width_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t count, int64_t width);
  torch::Tensor forward(const torch::Tensor& ids);
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// Multi-head attention on [B, Tq, H*D] queries and [B, Tk, H*D] keys/values -> [B, Tq, H*D]. Scores
// and softmax are computed in fp32. `causal` masks keys after each query (CLIP's text encoder).
// Under autograd (training: grad mode on and an input that requires grad) it runs as whole-tensor
// operations autograd can differentiate; otherwise through the fused kernel or blocked matmuls (by
// the BLAS or oneDNN, as linear layers: linear_cpu.h), which it cannot.
torch::Tensor Attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                        bool causal = false);

}  // namespace sd::nn
