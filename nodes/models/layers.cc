#include "nodes/models/layers.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <vector>

#include "nodes/kernels/attention_cpu.h"
#include "nodes/models/cpu_choice.h"
#include "nodes/models/differentiable_bmm.h"
#include "nodes/models/int8_conv.h"
#include "nodes/models/int8_linear.h"
#include "nodes/models/linear_cpu.h"
#include "nodes/models/plain_conv.h"
#include "nodes/models/upsample_conv.h"
#include "nodes/models/winograd_conv.h"

namespace sd::nn {

namespace {

std::atomic<int> g_bf16_mode{-1};  // a CpuBf16Compute set explicitly, or -1

// A per-thread fp32 buffer the weights of one layer are widened into (kF32 mode): no allocation per call.
torch::Tensor WidenedWeight(const torch::Tensor& w) {
  thread_local torch::Tensor buffer;
  if (!buffer.defined() || buffer.numel() < w.numel()) buffer = torch::empty({w.numel()}, torch::kFloat32);
  return buffer.narrow(0, 0, w.numel()).view(w.sizes()).copy_(w);
}

// bf16 weights meeting fp32 activations: CpuBf16Compute::kF32.
bool WidensWeights(const torch::Tensor& x, const torch::Tensor& weight) {
  return weight.scalar_type() == torch::kBFloat16 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu();
}

torch::Tensor AsActivation(const torch::Tensor& t, torch::ScalarType dtype) {
  return !t.defined() || t.scalar_type() == dtype ? t : t.to(dtype);
}

}  // namespace

namespace {

// One convolution and one matmul of UNet-like shapes (a few hundred MFLOP each), in bf16 arithmetic
// (`native`) or in fp32 on weights widened from bf16 (kF32 mode's arithmetic), to be timed in
// inference mode, as the networks run (WidenedWeight's buffer may already be an inference tensor).
std::function<void()> Bf16Probe(bool native) {
  torch::manual_seed(0);
  const torch::ScalarType act = native ? torch::kBFloat16 : torch::kFloat32;
  const torch::Tensor x = torch::randn({1, 128, 32, 32}).to(act);
  const torch::Tensor w = torch::randn({128, 128, 3, 3}).mul_(0.03).to(torch::kBFloat16);
  const torch::Tensor a = torch::randn({1024, 320}).to(act);
  const torch::Tensor m = torch::randn({320, 320}).mul_(0.05).to(torch::kBFloat16);
  return [=] {
    torch::Tensor y = torch::conv2d(x, native ? w : WidenedWeight(w), {}, 1, 1);
    torch::Tensor z = torch::linear(a, native ? m : WidenedWeight(m));
    (void)y.sum().item<float>();
    (void)z.sum().item<float>();
  };
}

}  // namespace

double MeasuredNativeBf16Speedup() {
  return MeasuredOnThisMachine(kNativeBf16Measurement, [] {
    c10::InferenceMode guard;
    return TimedSpeedup(Bf16Probe(false), Bf16Probe(true));
  });
}

CpuBf16Compute ResolveCpuBf16Compute(CpuBf16Compute mode) {
  if (mode != CpuBf16Compute::kAuto) return mode;
  // Measured, not read from CPU flags: bf16 arithmetic is fast with AMX (when the OS grants it to
  // oneDNN), half the fp32 rate on AVX-512 BF16 without it, and emulated (30x slower) on AVX2.
  return MeasuredNativeBf16Speedup() >= kNativeBf16MinSpeedup ? CpuBf16Compute::kNative
                                                              : CpuBf16Compute::kF32;
}

void SetCpuBf16Compute(CpuBf16Compute mode) { g_bf16_mode = static_cast<int>(mode); }

CpuBf16Compute ResolvedCpuBf16Compute() {
  const int set = ChoiceInForce(g_bf16_mode.load(), "SD_CPU_BF16",
                                {{"native", static_cast<int>(CpuBf16Compute::kNative)},
                                 {"f32", static_cast<int>(CpuBf16Compute::kF32)}});
  return ResolveCpuBf16Compute(set < 0 ? CpuBf16Compute::kAuto : static_cast<CpuBf16Compute>(set));
}

torch::ScalarType ActivationDtype(torch::ScalarType weight_dtype, const torch::Device& device) {
  if (weight_dtype == torch::kBFloat16 && device.is_cpu() && ResolvedCpuBf16Compute() == CpuBf16Compute::kF32) {
    return torch::kFloat32;
  }
  return weight_dtype;
}

template <typename T>
struct FromWeight {
  // The value for `weight`: made by make() unless the one kept was made from this weight tensor.
  template <typename Make>
  T Get(const torch::Tensor& weight, const Make& make) {
    std::lock_guard<std::mutex> lock(mu);
    if (source != weight.data_ptr() || !made) {
      value = make();
      source = weight.data_ptr();
      made = true;
    }
    return value;
  }

 private:
  std::mutex mu;
  T value;
  bool made = false;
  const void* source = nullptr;  // the weights value was made from
};

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding)
    : stride_(stride), padding_(padding < 0 ? kernel / 2 : padding) {
  weight = register_parameter("weight", torch::empty({out, in, kernel, kernel}), false);
  bias = register_parameter("bias", torch::empty({out}), false);
  if (kernel == 3 && stride_ == 1 && padding_ == 1)
    upsample_taps_ = std::make_shared<FromWeight<torch::Tensor>>();
}

void Conv2dImpl::AllowWinograd() {
  if (weight.size(2) == 3 && weight.size(3) == 3 && stride_ == 1 && padding_ == 1) {
    winograd_ = std::make_shared<FromWeight<torch::Tensor>>();
  }
}

torch::Tensor Conv2dImpl::WinogradWeights() {
  return winograd_->Get(weight, [&] { return nn::WinogradWeights(weight); });
}

void Conv2dImpl::UseInt8() {
  if (UsesInt8()) return;
  const Int8Weights w = QuantizeWeightsPerChannel(weight);
  SetInt8Weights(w.q, w.scale);
}

void Conv2dImpl::SetInt8Weights(const torch::Tensor& q, const torch::Tensor& scale) {
  torch::NoGradGuard no_grad;
  weight.set_data(q);
  weight_scale = scale;
  int8_ = std::make_shared<FromWeight<std::shared_ptr<Int8Conv>>>();
}

int UseInt8Layers(torch::nn::Module& network) {
  int count = 0;
  std::vector<torch::nn::Module*> all = {&network};  // itself too, shared_ptr-held or not
  for (const auto& m : network.modules(/*include_self=*/false)) all.push_back(m.get());
  for (torch::nn::Module* m : all) {
    if (auto* conv = m->as<Conv2dImpl>()) {
      const torch::Tensor& w = conv->weight;
      if (!Int8ConvShape(w.size(0), w.size(1), w.size(2), w.size(3))) continue;
      conv->UseInt8();
      ++count;
    } else if (auto* linear = m->as<LinearImpl>()) {
      const torch::Tensor& w = linear->weight;
      if (!Int8LinearShape(w.size(0), w.size(1)) || !Int8LinearAvailable()) continue;
      linear->UseInt8();
      ++count;
    }
  }
  return count;
}

void AllowWinogradIn(torch::nn::Module& network) {
  for (const auto& m : network.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<Conv2dImpl>()) conv->AllowWinograd();
  }
}

std::shared_ptr<Int8Conv> Conv2dImpl::PackedInt8() {
  return int8_->Get(weight, [&] {
    return std::make_shared<Int8Conv>(Int8Weights{weight, weight_scale}, bias, stride_, padding_);
  });
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  if (UsesInt8()) {
    if (x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 4 &&
        c10::InferenceMode::is_enabled() && Int8ConvAvailable()) {
      const std::shared_ptr<Int8Conv> q = PackedInt8();
      if (q->Supports(x.size(0), x.size(2), x.size(3))) return q->Forward(x);
    }
    const torch::Tensor w =
        DequantizeWeightsPerChannel({weight, weight_scale}).to(x.device(), x.scalar_type());
    return torch::conv2d(x, w, AsActivation(bias, x.scalar_type()), stride_, padding_);
  }
  if (TakesWinograd(x)) return WinogradConv3x3(x, WinogradWeights(), bias);
  if (TakesPlainConv(x)) {
    // bf16 weights in kF32 mode compute exactly as f32 weights rounded to bf16 would.
    const bool widen = WidensWeights(x, weight);
    return PlainConv(x, widen ? WidenedWeight(weight) : weight,
                     widen ? AsActivation(bias, x.scalar_type()) : bias, stride_);
  }
  if (WidensWeights(x, weight)) {
    return torch::conv2d(x, WidenedWeight(weight), AsActivation(bias, x.scalar_type()), stride_, padding_);
  }
  return torch::conv2d(x, weight, bias, stride_, padding_);
}

bool Conv2dImpl::TakesWinograd(const torch::Tensor& x) const {
  return winograd_ && x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
         weight.scalar_type() == torch::kFloat32 && x.dim() == 4 && x.is_contiguous() &&
         c10::InferenceMode::is_enabled() &&
         UsesWinograd(weight.size(1), weight.size(0), x.size(2), x.size(3));
}

bool Conv2dImpl::TakesPlainConv(const torch::Tensor& x) const {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
         (weight.scalar_type() == torch::kFloat32 || WidensWeights(x, weight)) && x.dim() == 4 &&
         x.is_contiguous() && weight.size(2) == weight.size(3) && padding_ == weight.size(2) / 2 &&
         c10::InferenceMode::is_enabled() &&
         UsesPlainConv(
             {weight.size(1), weight.size(0), weight.size(2), stride_, x.size(2), x.size(3)});
}

torch::Tensor Conv2dImpl::ForwardUpsampled2x(const torch::Tensor& x) {
  const bool eligible =
      upsample_taps_ && !UsesInt8() && x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
      x.dim() == 4 && c10::InferenceMode::is_enabled() &&
      (weight.scalar_type() == torch::kFloat32 || weight.scalar_type() == torch::kBFloat16);
  if (eligible && UsesSubpixelUpsample(weight.size(0))) {
    const torch::Tensor taps =
        upsample_taps_->Get(weight, [&] { return UpsampleConvWeights(weight); });
    return UpsampleConv3x3(x, taps, bias);
  }
  return forward(Nearest2x(x));
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}), false);
  if (with_bias) bias = register_parameter("bias", torch::empty({out}), false);
}

void LinearImpl::UseInt8() {
  if (UsesInt8()) return;
  const Int8Weights w = QuantizeWeightsPerChannel(weight);
  SetInt8Weights(w.q, w.scale);
}

void LinearImpl::SetInt8Weights(const torch::Tensor& q, const torch::Tensor& scale) {
  torch::NoGradGuard no_grad;
  weight.set_data(q);
  weight_scale = scale;
  int8_ = std::make_shared<FromWeight<std::shared_ptr<Int8Linear>>>();
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (UsesInt8()) {
    if (x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() >= 2 &&
        x.size(-1) == weight.size(1) && c10::InferenceMode::is_enabled() && Int8LinearAvailable()) {
      const std::shared_ptr<Int8Linear> q = int8_->Get(weight, [&] {
        return std::make_shared<Int8Linear>(Int8Weights{weight, weight_scale}, bias);
      });
      if (q->Supports(x.numel() / x.size(-1))) return q->Forward(x);
    }
    const torch::Tensor w =
        DequantizeWeightsPerChannel({weight, weight_scale}).to(x.device(), x.scalar_type());
    return torch::linear(x, w, AsActivation(bias, x.scalar_type()));
  }
  const bool widen = WidensWeights(x, weight);
  const torch::Tensor w = widen ? WidenedWeight(weight) : weight;
  const torch::Tensor b = widen ? AsActivation(bias, x.scalar_type()) : bias;
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
      w.scalar_type() == torch::kFloat32 && x.dim() >= 2 && c10::InferenceMode::is_enabled() &&
      ResolvedCpuLinear() == CpuLinear::kOneDnn) {
    return OneDnnLinear(x, w, b);
  }
  return torch::linear(x, w, b);
}

GroupNormImpl::GroupNormImpl(int64_t channels, double eps, int64_t groups) : groups_(groups), eps_(eps) {
  weight = register_parameter("weight", torch::empty({channels}), false);
  bias = register_parameter("bias", torch::empty({channels}), false);
}

torch::Tensor GroupNormImpl::forward(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kFloat32) return torch::group_norm(x, groups_, weight, bias, eps_);
  return torch::group_norm(x.to(torch::kFloat32), groups_, weight, bias, eps_).to(x.scalar_type());
}

LayerNormImpl::LayerNormImpl(int64_t width, double eps) : width_(width), eps_(eps) {
  weight = register_parameter("weight", torch::empty({width}), false);
  bias = register_parameter("bias", torch::empty({width}), false);
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kFloat32) return torch::layer_norm(x, {width_}, weight, bias, eps_);
  return torch::layer_norm(x.to(torch::kFloat32), {width_}, weight, bias, eps_).to(x.scalar_type());
}

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t width) {
  weight = register_parameter("weight", torch::empty({count, width}), false);
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return AsActivation(torch::embedding(weight, ids), ActivationDtype(weight.scalar_type(), weight.device()));
}

// Score elements per block (4 MB in f32: 256 queries of a 64x64 latent): blocks of this size stay in a core's cache.
constexpr int64_t kScoreBlockElements = int64_t{1} << 20;

namespace {

// SD_FUSED_ATTENTION=0 turns the fused kernel off (for comparisons; the result differs by rounding only).
bool FusedAttentionWanted() {
  static const bool wanted = [] {
    const char* env = std::getenv("SD_FUSED_ATTENTION");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return wanted && kernels::FusedAttentionAvailable();
}

// bf16 activations on a CPU with AVX-512 BF16: the bf16 body reads them as they are (no f32
// copies), keys and values packed in the pairs its dot products take (attention_cpu.h).
torch::Tensor FusedAttentionBf16(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, int64_t heads) {
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), width = q.size(2), d = width / heads;
  constexpr int64_t kb = kernels::kAttentionKeyBlock;
  const int64_t blocks_k = (tk + kb - 1) / kb, keys_even = (tk + 1) / 2 * 2;
  const torch::Tensor qc = q.contiguous();
  const torch::Tensor kp = torch::constant_pad_nd(k, {0, 0, 0, blocks_k * kb - tk})
                               .view({b, blocks_k, kb, heads, d / 2, 2})
                               .permute({0, 3, 1, 4, 2, 5})
                               .contiguous();
  const torch::Tensor vp = torch::constant_pad_nd(v, {0, 0, 0, keys_even - tk})
                               .view({b, keys_even / 2, 2, heads, d})
                               .permute({0, 3, 1, 4, 2})
                               .contiguous();
  torch::Tensor out = torch::empty({b, tq, width}, q.options().dtype(torch::kFloat32));
  auto bits = [](const torch::Tensor& t) {
    return reinterpret_cast<const uint16_t*>(t.data_ptr());
  };
  kernels::MultiHeadAttentionBf16(
      {bits(qc), bits(kp), bits(vp), out.data_ptr<float>(), b, heads, tq, tk, d,
       static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))), at::get_num_threads()});
  return out.to(torch::kBFloat16);
}

torch::Tensor FusedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads) {
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), width = q.size(2), d = width / heads;
  if (q.scalar_type() == torch::kBFloat16 && k.scalar_type() == torch::kBFloat16 &&
      v.scalar_type() == torch::kBFloat16 && d % 2 == 0 && kernels::Bf16AttentionAvailable()) {
    return FusedAttentionBf16(q, k, v, heads);
  }
  const torch::Tensor qf = q.to(torch::kFloat32).contiguous();
  // Values per head, [B, H, Tk, D]: a chunk of keys then reads one contiguous block.
  const torch::Tensor vf = v.to(torch::kFloat32).view({b, tk, heads, d}).permute({0, 2, 1, 3}).contiguous();
  // Keys packed per head in blocks of 32 keys, [B, H, Tk/32, D, 32], zero-padded: one step of the kernel's
  // score loop reads one contiguous block.
  constexpr int64_t kb = kernels::kAttentionKeyBlock;
  const int64_t blocks_k = (tk + kb - 1) / kb;
  torch::Tensor kf = k.to(torch::kFloat32);
  if (blocks_k * kb != tk) kf = torch::constant_pad_nd(kf, {0, 0, 0, blocks_k * kb - tk});
  const torch::Tensor kt = kf.view({b, blocks_k, kb, heads, d}).permute({0, 3, 1, 4, 2}).contiguous();
  torch::Tensor out = torch::empty({b, tq, width}, qf.options());
  kernels::MultiHeadAttention({qf.data_ptr<float>(), kt.data_ptr<float>(), vf.data_ptr<float>(), out.data_ptr<float>(),
                               b, heads, tq, tk, d,
                               static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))),  // the reference's d^-0.5
                               at::get_num_threads()});
  return out.to(q.scalar_type());
}

}  // namespace

namespace {

// softmax(q k^T / sqrt(d)) v in whole-tensor operations that autograd can differentiate (training).
torch::Tensor DifferentiableAttention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v, int64_t heads, bool causal) {
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), width = q.size(2), d = width / heads;
  auto split = [&](const torch::Tensor& x, int64_t t) {  // [B * H, T, D]
    return x.view({b, t, heads, d}).transpose(1, 2).reshape({b * heads, t, d});
  };
  torch::Tensor scores =
      DifferentiableBmm(split(q, tq), split(k, tk).transpose(1, 2)) / std::sqrt(double(d));
  if (causal) {
    scores = scores.masked_fill(torch::ones({tq, tk}, torch::kBool).triu(1),
                                -std::numeric_limits<float>::infinity());
  }
  const torch::Tensor out = DifferentiableBmm(
      torch::softmax(scores.to(torch::kFloat32), -1).to(v.scalar_type()), split(v, tk));
  return out.view({b, heads, tq, d}).transpose(1, 2).reshape({b, tq, width});
}

}  // namespace

torch::Tensor Attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                        bool causal) {
  if (torch::GradMode::is_enabled() &&
      (q.requires_grad() || k.requires_grad() || v.requires_grad())) {
    return DifferentiableAttention(q, k, v, heads, causal);
  }
  if (!causal && q.device().is_cpu() && q.size(2) / heads <= kernels::kFusedAttentionMaxHeadDim &&
      FusedAttentionWanted()) {
    return FusedAttention(q, k, v, heads);
  }
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), width = q.size(2), d = width / heads;
  // On a CPU, half-precision activations are attended in f32 as the fused kernel does: bf16 scores
  // of peaked rows (|q·k| of tens) would be off by tenths, and so would their softmax weights.
  const bool widen = q.device().is_cpu() && q.scalar_type() != torch::kFloat32;
  auto split = [&](const torch::Tensor& x, int64_t t) {
    const torch::Tensor y = widen ? x.to(torch::kFloat32) : x;
    return y.view({b, t, heads, d}).transpose(1, 2);  // [B, H, T, D]
  };
  const torch::Tensor qh = split(q, tq).reshape({b * heads, tq, d});
  const torch::Tensor vh = split(v, tk).reshape({b * heads, tk, d});
  // Where linear layers run through oneDNN (linear_cpu.h), so do these products: q·kᵀ is a linear
  // layer of weights k [Tk, D], and weights·v one of weights vᵀ [D, Tk]. The BLAS takes kᵀ [D, Tk].
  const bool onednn = !widen && q.device().is_cpu() && q.scalar_type() == torch::kFloat32 &&
                      ResolvedCpuLinear() == CpuLinear::kOneDnn;
  const torch::Tensor k_rows =
      onednn ? split(k, tk).reshape({b * heads, tk, d}).contiguous() : torch::Tensor();
  const torch::Tensor kt =
      onednn ? torch::Tensor() : split(k, tk).transpose(-1, -2).reshape({b * heads, d, tk});
  const double root_d = std::sqrt(static_cast<double>(d));
  // Softmax rows are independent, so the scores are computed a block of queries of one head at a time,
  // small enough to stay in the CPU's cache between the matmul, the softmax and the second matmul (the
  // same numbers as all at once; a 512x512 image has 4096 latent pixels: 1 GB of scores at batch 2).
  const int64_t chunk = std::max<int64_t>(16, std::min<int64_t>(tq, kScoreBlockElements / std::max<int64_t>(1, tk)));
  torch::Tensor out = torch::empty({b * heads, tq, d}, vh.options());
  for (int64_t bh = 0; bh < b * heads; ++bh) {
    const torch::Tensor qb = qh[bh], vb = vh[bh];
    const torch::Tensor v_rows = onednn ? vb.t().contiguous() : torch::Tensor();
    for (int64_t s = 0; s < tq; s += chunk) {
      const int64_t e = std::min(tq, s + chunk);
      torch::Tensor scores = onednn ? OneDnnLinear(qb.slice(0, s, e), k_rows[bh], {})
                                    : torch::mm(qb.slice(0, s, e), kt[bh]);  // [e - s, Tk]
      if (causal) {
        torch::Tensor mask = torch::ones({e - s, tk}, torch::kBool).triu(1 + s);
        scores.masked_fill_(mask, -std::numeric_limits<float>::infinity());
      }
      if (scores.scalar_type() != torch::kFloat32) scores = scores.to(torch::kFloat32);
      scores.div_(root_d);
      torch::Tensor weights = torch::softmax(scores, -1).to(vh.scalar_type());
      out[bh].slice(0, s, e).copy_(onednn ? OneDnnLinear(weights, v_rows, {})
                                          : torch::mm(weights, vb));
    }
  }
  out = out.view({b, heads, tq, d});
  return out.transpose(1, 2).reshape({b, tq, width}).to(v.scalar_type());
}

}  // namespace sd::nn
