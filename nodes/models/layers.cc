#include "nodes/models/layers.h"

#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "nodes/kernels/attention_cpu.h"
#include "nodes/kernels/cpu_rates.h"

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

CpuBf16Compute ResolveCpuBf16Compute(CpuBf16Compute mode) {
  if (mode != CpuBf16Compute::kAuto) return mode;
  static const CpuBf16Compute automatic = [] {
    if (kernels::CpuHasAmxBf16()) return CpuBf16Compute::kNative;
    // One thread, ~2 ms per measurement: enough to compare issue rates.
    const kernels::PeakRates r = kernels::MeasurePeakRates(1, 400000);
    return r.bf16_gflops >= 1.3 * r.fp32_gflops ? CpuBf16Compute::kNative : CpuBf16Compute::kF32;
  }();
  return automatic;
}

void SetCpuBf16Compute(CpuBf16Compute mode) { g_bf16_mode = static_cast<int>(mode); }

CpuBf16Compute ResolvedCpuBf16Compute() {
  int set = g_bf16_mode.load();
  if (set < 0) {
    const char* env = std::getenv("SD_CPU_BF16");
    const std::string v = env ? env : "";
    set = static_cast<int>(v == "native" ? CpuBf16Compute::kNative
                           : v == "f32"  ? CpuBf16Compute::kF32
                                         : CpuBf16Compute::kAuto);
  }
  return ResolveCpuBf16Compute(static_cast<CpuBf16Compute>(set));
}

torch::ScalarType ActivationDtype(torch::ScalarType weight_dtype, const torch::Device& device) {
  if (weight_dtype == torch::kBFloat16 && device.is_cpu() && ResolvedCpuBf16Compute() == CpuBf16Compute::kF32) {
    return torch::kFloat32;
  }
  return weight_dtype;
}

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding)
    : stride_(stride), padding_(padding < 0 ? kernel / 2 : padding) {
  weight = register_parameter("weight", torch::empty({out, in, kernel, kernel}), false);
  bias = register_parameter("bias", torch::empty({out}), false);
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  if (WidensWeights(x, weight)) {
    return torch::conv2d(x, WidenedWeight(weight), AsActivation(bias, x.scalar_type()), stride_, padding_);
  }
  return torch::conv2d(x, weight, bias, stride_, padding_);
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}), false);
  if (with_bias) bias = register_parameter("bias", torch::empty({out}), false);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (WidensWeights(x, weight)) {
    return torch::linear(x, WidenedWeight(weight), AsActivation(bias, x.scalar_type()));
  }
  return torch::linear(x, weight, bias);
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

torch::Tensor FusedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads) {
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), width = q.size(2), d = width / heads;
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

torch::Tensor Attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                        bool causal) {
  if (!causal && q.device().is_cpu() && q.size(2) / heads <= kernels::kFusedAttentionMaxHeadDim &&
      FusedAttentionWanted()) {
    return FusedAttention(q, k, v, heads);
  }
  const int64_t b = q.size(0), tq = q.size(1), tk = k.size(1), width = q.size(2), d = width / heads;
  auto split = [&](const torch::Tensor& x, int64_t t) {
    return x.view({b, t, heads, d}).transpose(1, 2);  // [B, H, T, D]
  };
  const torch::Tensor qh = split(q, tq).reshape({b * heads, tq, d});
  const torch::Tensor kt = split(k, tk).transpose(-1, -2).reshape({b * heads, d, tk});
  const torch::Tensor vh = split(v, tk).reshape({b * heads, tk, d});
  const double root_d = std::sqrt(static_cast<double>(d));
  // Softmax rows are independent, so the scores are computed a block of queries of one head at a time,
  // small enough to stay in the CPU's cache between the matmul, the softmax and the second matmul (the
  // same numbers as all at once; a 512x512 image has 4096 latent pixels: 1 GB of scores at batch 2).
  const int64_t chunk = std::max<int64_t>(16, std::min<int64_t>(tq, kScoreBlockElements / std::max<int64_t>(1, tk)));
  torch::Tensor out = torch::empty({b * heads, tq, d}, v.options());
  for (int64_t bh = 0; bh < b * heads; ++bh) {
    const torch::Tensor qb = qh[bh], kb = kt[bh], vb = vh[bh];
    for (int64_t s = 0; s < tq; s += chunk) {
      const int64_t e = std::min(tq, s + chunk);
      torch::Tensor scores = torch::mm(qb.slice(0, s, e), kb);  // [e - s, Tk]
      if (causal) {
        torch::Tensor mask = torch::ones({e - s, tk}, torch::kBool).triu(1 + s);
        scores.masked_fill_(mask, -std::numeric_limits<float>::infinity());
      }
      if (scores.scalar_type() != torch::kFloat32) scores = scores.to(torch::kFloat32);
      scores.div_(root_d);
      torch::Tensor weights = torch::softmax(scores, -1).to(v.scalar_type());
      out[bh].slice(0, s, e).copy_(torch::mm(weights, vb));
    }
  }
  out = out.view({b, heads, tq, d});
  return out.transpose(1, 2).reshape({b, tq, width});
}

}  // namespace sd::nn
