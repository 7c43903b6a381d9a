#include "nodes/models/int8_conv.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "nodes/kernels/isa_clones.h"

#ifdef SD_WITH_ONEDNN
#include "nodes/models/onednn_common.h"
#endif

namespace sd::nn {

namespace {

// [out] -> [out, 1, ...] to broadcast over a weight of `dims` dimensions.
torch::Tensor PerChannel(const torch::Tensor& v, int64_t dims) {
  std::vector<int64_t> shape(static_cast<size_t>(dims), 1);
  shape[0] = -1;
  return v.view(shape);
}

}  // namespace

Int8Weights QuantizeWeightsPerChannel(const torch::Tensor& w) {
  const torch::Tensor wf = w.detach().to(torch::kCPU, torch::kFloat32);
  torch::Tensor scale = wf.abs().flatten(1).amax(1).div_(127.0f);
  scale.masked_fill_(scale == 0, 1.0f);
  torch::Tensor q =
      wf.div(PerChannel(scale, wf.dim())).round_().clamp_(-127, 127).to(torch::kInt8).contiguous();
  return {q, scale.contiguous()};
}

torch::Tensor DequantizeWeightsPerChannel(const Int8Weights& w) {
  return w.q.to(torch::kFloat32).mul_(PerChannel(w.scale.to(torch::kFloat32), w.q.dim()));
}

Int8Weights Int8Conv::KernelWeights(const Int8Weights& w) {
  torch::Tensor scale = w.scale.to(torch::kCPU, torch::kFloat32).contiguous();
  if (Int8KernelWeightBits() == 8) return {w.q.contiguous(), scale};
  // No VNNI: 7-bit weights, so that no pair of u8 x s8 products overflows int16 (255 x 63 x 2).
  torch::Tensor q =
      w.q.to(torch::kFloat32).div_(2).round_().clamp_(-63, 63).to(torch::kInt8).contiguous();
  return {q, scale.mul(2).contiguous()};
}

#ifdef SD_WITH_ONEDNN

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

// The instruction sets oneDNN has int8 convolution kernels for, and whether they have VNNI.
struct Int8Isa {
  dnnl::cpu_isa isa;
  const char* name;
  bool vnni;
};
constexpr Int8Isa kInt8Isas[] = {
    {dnnl::cpu_isa::avx2, "avx2", false},
    {dnnl::cpu_isa::avx2_vnni, "avx2_vnni", true},
    {dnnl::cpu_isa::avx512_core, "avx512_core", false},
    {dnnl::cpu_isa::avx512_core_vnni, "avx512_core_vnni", true},
    {dnnl::cpu_isa::avx512_core_bf16, "avx512_core_bf16", true},
    {dnnl::cpu_isa::avx512_core_amx, "avx512_core_amx", true},
};

// oneDNN's effective instruction set (DNNL_MAX_CPU_ISA honoured) among those; null: none of them.
const Int8Isa* EffectiveInt8Isa() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  for (const Int8Isa& i : kInt8Isas) {
    if (i.isa == isa) return &i;
  }
  return nullptr;
}

// The activation range [lo, hi] (always holding 0) as a scale and a zero point on [0, qmax].
struct ActivationQuant {
  float scale = 1, inverse = 1;
  int32_t zero_point = 0;
};

ActivationQuant ChooseQuant(float lo, float hi, int qmax) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  ActivationQuant q;
  if (!(hi > lo) || !std::isfinite(hi - lo))
    return q;  // all zeros (or non-finite: garbage in, garbage out)
  q.scale = (hi - lo) / static_cast<float>(qmax);
  q.inverse = 1.0f / q.scale;
  q.zero_point = std::clamp(static_cast<int32_t>(std::lround(-lo / q.scale)), 0, qmax);
  return q;
}

// d[i] = round-half-up(clamp(s[i] * inverse + zero_point, 0, qmax)) for a run of n values; one
// vectorized clone per ISA (isa_clones.h).
SD_ISA_CLONES_O3 void QuantizeRun(const float* __restrict s, uint8_t* __restrict d, int64_t n,
                                  float inverse, float zero_point, float qmax) {
  for (int64_t i = 0; i < n; ++i) {
    const float t = std::min(std::max(s[i] * inverse + zero_point, 0.0f), qmax) + 0.5f;
    d[i] = static_cast<uint8_t>(static_cast<int32_t>(t));
  }
}

// x f32 [N, C, H, W] (contiguous or channels-last) -> u8 [N, H + 2p, W + 2p, C] with a border of
// p pixels holding the zero point.
torch::Tensor QuantizePadded(const torch::Tensor& x, int64_t pad, const ActivationQuant& q,
                             int qmax) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad;
  torch::Tensor out = torch::empty({n, hp, wp, c}, torch::kUInt8);
  uint8_t* dst = out.data_ptr<uint8_t>();
  const uint8_t zp = static_cast<uint8_t>(q.zero_point);
  const bool channels_last = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const torch::Tensor src_t = channels_last ? x : x.contiguous();
  const float* src = src_t.data_ptr<float>();
  const float inv = q.inverse, fzp = static_cast<float>(q.zero_point),
              fmax = static_cast<float>(qmax);
  at::parallel_for(0, n * hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / hp, y = row % hp - pad;
      uint8_t* line = dst + row * wp * c;
      if (y < 0 || y >= h) {
        std::memset(line, zp, wp * c);
        continue;
      }
      std::memset(line, zp, pad * c);
      std::memset(line + (pad + w) * c, zp, pad * c);
      uint8_t* inner = line + pad * c;
      if (channels_last) {
        const float* s = src + ((b * h + y) * w) * c;
        QuantizeRun(s, inner, w * c, inv, fzp, fmax);
      } else {
        // Each channel's run quantized as it lies, then interleaved: byte moves only.
        thread_local std::vector<uint8_t> runs;
        runs.resize(static_cast<size_t>(c * w));
        for (int64_t ch = 0; ch < c; ++ch) {
          QuantizeRun(src + ((b * c + ch) * h + y) * w, runs.data() + ch * w, w, inv, fzp, fmax);
        }
        for (int64_t i = 0; i < w; ++i) {
          uint8_t* pixel = inner + i * c;
          for (int64_t ch = 0; ch < c; ++ch) pixel[ch] = runs[static_cast<size_t>(ch * w + i)];
        }
      }
    }
  });
  return out;
}

}  // namespace

bool Int8ConvAvailable() { return EffectiveInt8Isa() != nullptr; }

int Int8KernelWeightBits() {
  const Int8Isa* isa = EffectiveInt8Isa();
  return isa != nullptr && isa->vnni ? 8 : 7;
}

std::string Int8ConvIsa() {
  const Int8Isa* isa = EffectiveInt8Isa();
  return isa != nullptr ? isa->name : "other";
}

// The kernel for one input shape, and the weights in the layout it reads.
struct Kernel {
  dnnl::convolution_forward conv;
  memory::desc src, dst, scratch;
  std::shared_ptr<memory> weights;
  bool fast = false;
};

struct Int8Conv::State {
  int64_t out = 0, in = 0, k = 0, stride = 1, pad = 0;
  torch::Tensor w_q;           // s8 [out, in, k, k]
  std::vector<float> w_scale;  // per output channel
  std::vector<float> bias;     // f32 (zeros without one)
  std::vector<float> w_q_sum;  // sum of each output channel's int8 weights
  std::mutex mu;
  // By input shape and OpenMP thread count: oneDNN sizes a kernel's scratch space for the threads
  // it is made with, so one made on a single-threaded caller must not run on more.
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, std::shared_ptr<Kernel>> kernels;

  std::shared_ptr<Kernel> KernelFor(int64_t n, int64_t h, int64_t w);
  std::shared_ptr<memory> PackedWeights(const memory::desc& desc);
};

std::shared_ptr<memory> Int8Conv::State::PackedWeights(const memory::desc& desc) {
  for (const auto& [shape, kernel] : kernels) {
    if (kernel->weights->get_desc() == desc) return kernel->weights;
  }
  memory plain({{out, in, k, k}, Dt::s8, Tag::oihw}, OneDnnCpuEngine(), w_q.data_ptr());
  auto packed = std::make_shared<memory>(desc, OneDnnCpuEngine());
  dnnl::stream stream(OneDnnCpuEngine());
  dnnl::reorder(plain, *packed).execute(stream, plain, *packed);
  stream.wait();
  return packed;
}

std::shared_ptr<Kernel> Int8Conv::State::KernelFor(int64_t n, int64_t h, int64_t w) {
  const auto key = std::make_tuple(n, h, w, at::get_num_threads());
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = kernels.find(key); it != kernels.end()) return it->second;
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad;
  const int64_t oh = (hp - k) / stride + 1, ow = (wp - k) / stride + 1;
  auto kernel = std::make_shared<Kernel>();
  kernel->src = memory::desc({n, in, hp, wp}, Dt::u8, Tag::nhwc);
  kernel->dst = memory::desc({n, out, oh, ow}, Dt::f32, Tag::nhwc);
  const memory::desc weights_any({out, in, k, k}, Dt::s8, Tag::any);
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference,
                                       dnnl::algorithm::convolution_direct, kernel->src,
                                       weights_any, kernel->dst, {stride, stride}, {0, 0}, {0, 0});
  dnnl::primitive_attr attr;
  // Scratch space from the caller, one buffer per thread (onednn_common.h): oneDNN's own is shared
  // by all primitives, and pictures drawn on threads side by side run this layer at once.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_output_scales(1 << 1, w_scale);  // per output channel
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, 1, 1, 1}, Dt::f32, Tag::nchw));
  ops.append_binary(dnnl::algorithm::binary_add, memory::desc({1, out, 1, 1}, Dt::f32, Tag::nchw));
  attr.set_post_ops(ops);
  dnnl::convolution_forward::primitive_desc pd(desc, attr, OneDnnCpuEngine());
  kernel->fast = std::strncmp(pd.impl_info_str(), "ref", 3) != 0;
  kernel->conv = dnnl::convolution_forward(pd);
  kernel->scratch = pd.scratchpad_desc();
  kernel->weights = PackedWeights(pd.weights_desc());
  kernels[key] = kernel;
  return kernel;
}

Int8Conv::Int8Conv(const Int8Weights& w, const torch::Tensor& bias, int64_t stride, int64_t padding)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.out = w.q.size(0);
  s.in = w.q.size(1);
  s.k = w.q.size(2);
  s.stride = stride;
  s.pad = padding;
  const Int8Weights kernel = KernelWeights(w);
  s.w_q = kernel.q;
  const torch::Tensor scale = kernel.scale;
  const torch::Tensor sums = s.w_q.to(torch::kFloat32).sum({1, 2, 3}).contiguous();
  s.w_scale.assign(scale.data_ptr<float>(), scale.data_ptr<float>() + s.out);
  s.w_q_sum.assign(sums.data_ptr<float>(), sums.data_ptr<float>() + s.out);
  s.bias.assign(s.out, 0.0f);
  if (bias.defined()) {
    const torch::Tensor b = bias.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    std::copy(b.data_ptr<float>(), b.data_ptr<float>() + s.out, s.bias.begin());
  }
}

Int8Conv::~Int8Conv() = default;

bool Int8Conv::Supports(int64_t n, int64_t h, int64_t w) {
  return state_->KernelFor(n, h, w)->fast;
}

torch::Tensor Int8Conv::Forward(const torch::Tensor& x) {
  State& s = *state_;
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const std::shared_ptr<Kernel> kernel = s.KernelFor(n, h, w);
  constexpr int qmax = 255;
  const auto [lo, hi] = torch::aminmax(x);
  const ActivationQuant q = ChooseQuant(lo.item<float>(), hi.item<float>(), qmax);
  torch::Tensor src = QuantizePadded(x, s.pad, q, qmax);
  // out = scale * w_scale * sum(q * w_q) + (bias - scale * zp * w_scale * sum(w_q)).
  std::vector<float> shift(s.out);
  for (int64_t o = 0; o < s.out; ++o) {
    shift[o] = s.bias[o] - q.scale * static_cast<float>(q.zero_point) * s.w_scale[o] * s.w_q_sum[o];
  }
  float scale = q.scale;
  const memory::dims dst_dims = kernel->dst.dims();
  torch::Tensor out = torch::empty(
      {dst_dims[0], dst_dims[1], dst_dims[2], dst_dims[3]},
      torch::TensorOptions().dtype(torch::kFloat32).memory_format(at::MemoryFormat::ChannelsLast));
  dnnl::engine& engine = OneDnnCpuEngine();
  memory src_mem(kernel->src, engine, src.data_ptr());
  memory dst_mem(kernel->dst, engine, out.data_ptr());
  memory scale_mem({{1, 1, 1, 1}, Dt::f32, Tag::nchw}, engine, &scale);
  memory shift_mem({{1, s.out, 1, 1}, Dt::f32, Tag::nchw}, engine, shift.data());
  memory scratch_mem(kernel->scratch, engine, OneDnnThreadScratch(kernel->scratch.get_size()));
  dnnl::stream stream(engine);
  kernel->conv.execute(stream, {{DNNL_ARG_SRC, src_mem},
                                {DNNL_ARG_SCRATCHPAD, scratch_mem},
                                {DNNL_ARG_WEIGHTS, *kernel->weights},
                                {DNNL_ARG_DST, dst_mem},
                                {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, scale_mem},
                                {DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, shift_mem}});
  stream.wait();
  return out;
}

#else  // no oneDNN: int8 weights compute dequantized (layers.cc)

bool Int8ConvAvailable() { return false; }
int Int8KernelWeightBits() { return 8; }
std::string Int8ConvIsa() { return "none (built without oneDNN)"; }

struct Int8Conv::State {};
Int8Conv::Int8Conv(const Int8Weights&, const torch::Tensor&, int64_t, int64_t)
    : state_(std::make_unique<State>()) {}
Int8Conv::~Int8Conv() = default;
bool Int8Conv::Supports(int64_t, int64_t, int64_t) { return false; }
torch::Tensor Int8Conv::Forward(const torch::Tensor&) {
  throw std::runtime_error(
      "int8 convolutions: sdgraph was built without oneDNN (SD_WITH_ONEDNN=OFF)");
}

#endif  // SD_WITH_ONEDNN

}  // namespace sd::nn
