#include "nodes/models/int8_linear.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "nodes/kernels/isa_clones.h"

#ifdef SD_WITH_ONEDNN
#include "nodes/models/onednn_common.h"
#endif

namespace sd::nn {

namespace {

// max |x[i]| over a run: on the bits of |x| as unsigned integers, whose order is the floats' for
// everything but NaN (integer maxima vectorize without -ffast-math).
SD_ISA_CLONES_O3 float AbsMax(const float* __restrict x, int64_t n) {
  uint32_t most = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    most = std::max(most, bits & 0x7fffffffu);
  }
  float m;
  std::memcpy(&m, &most, sizeof m);
  return m;
}

// q[i] = round-half-up(x[i] * inverse), clamped to [-127, 127]: by truncation of a positive value.
SD_ISA_CLONES_O3 void QuantizeRow(const float* __restrict x, int8_t* __restrict q, int64_t n,
                                  float inverse) {
  for (int64_t i = 0; i < n; ++i) {
    const float t = std::min(std::max(x[i] * inverse, -127.0f), 127.0f) + 128.5f;
    q[i] = static_cast<int8_t>(static_cast<int32_t>(t) - 128);
  }
}

}  // namespace

void QuantizeRowsSymmetric(const float* x, int64_t rows, int64_t width, int8_t* q, float* scale) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float m = AbsMax(x + r * width, width);
      scale[r] = m / 127.0f;
      QuantizeRow(x + r * width, q + r * width, width, m > 0 ? 127.0f / m : 0.0f);
    }
  });
}

#ifdef SD_WITH_ONEDNN

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

// The product as a batch of one: [1, rows, in] x [1, in, out]. (In 2-D, oneDNN 2.6 has no fast
// kernel for a per-row post-operation; in 3-D, with the rows as the middle dimension, it has.)
struct Kernel {
  dnnl::matmul matmul;
  memory::desc src, dst, scratch;
  std::shared_ptr<memory> weights;
  bool fast = false;
};

}  // namespace

bool Int8LinearAvailable() { return Int8ConvAvailable() && Int8KernelWeightBits() == 8; }

struct Int8Linear::State {
  int64_t out = 0, in = 0;
  torch::Tensor w_q;           // s8 [out, in]
  std::vector<float> w_scale;  // per output channel
  std::vector<float> bias;     // f32 (zeros without one)
  std::mutex mu;
  // By row count and OpenMP thread count (a kernel's scratch space is sized for its threads).
  std::map<std::pair<int64_t, int>, std::shared_ptr<Kernel>> kernels;

  std::shared_ptr<Kernel> KernelFor(int64_t rows);
  std::shared_ptr<memory> PackedWeights(const memory::desc& desc);
};

std::shared_ptr<memory> Int8Linear::State::PackedWeights(const memory::desc& desc) {
  for (const auto& [key, kernel] : kernels) {
    if (kernel->weights->get_desc() == desc) return kernel->weights;
  }
  // w_q [out, in] row-major is the [1, in, out] weights with `in` innermost.
  memory plain({{1, in, out}, Dt::s8, Tag::acb}, OneDnnCpuEngine(), w_q.data_ptr());
  auto packed = std::make_shared<memory>(desc, OneDnnCpuEngine());
  dnnl::stream stream(OneDnnCpuEngine());
  dnnl::reorder(plain, *packed).execute(stream, plain, *packed);
  stream.wait();
  return packed;
}

std::shared_ptr<Kernel> Int8Linear::State::KernelFor(int64_t rows) {
  const auto key = std::make_pair(rows, at::get_num_threads());
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = kernels.find(key); it != kernels.end()) return it->second;
  auto kernel = std::make_shared<Kernel>();
  kernel->src = memory::desc({1, rows, in}, Dt::s8, Tag::abc);
  kernel->dst = memory::desc({1, rows, out}, Dt::f32, Tag::abc);
  const memory::desc weights_any({1, in, out}, Dt::s8, Tag::any);
  dnnl::matmul::desc desc(kernel->src, weights_any, kernel->dst);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per thread (onednn_common.h)
  attr.set_output_scales(1 << 2, w_scale);                // per output channel
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, rows, 1}, Dt::f32, Tag::abc));
  ops.append_binary(dnnl::algorithm::binary_add, memory::desc({1, 1, out}, Dt::f32, Tag::abc));
  attr.set_post_ops(ops);
  dnnl::matmul::primitive_desc pd(desc, attr, OneDnnCpuEngine());
  kernel->fast = std::strncmp(pd.impl_info_str(), "ref", 3) != 0;
  kernel->matmul = dnnl::matmul(pd);
  kernel->scratch = pd.scratchpad_desc();
  kernel->weights = PackedWeights(pd.weights_desc());
  kernels[key] = kernel;
  return kernel;
}

Int8Linear::Int8Linear(const Int8Weights& w, const torch::Tensor& bias)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.out = w.q.size(0);
  s.in = w.q.size(1);
  s.w_q = w.q.contiguous();
  const torch::Tensor scale = w.scale.to(torch::kCPU, torch::kFloat32).contiguous();
  s.w_scale.assign(scale.data_ptr<float>(), scale.data_ptr<float>() + s.out);
  s.bias.assign(s.out, 0.0f);
  if (bias.defined()) {
    const torch::Tensor b = bias.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    std::copy(b.data_ptr<float>(), b.data_ptr<float>() + s.out, s.bias.begin());
  }
}

Int8Linear::~Int8Linear() = default;

bool Int8Linear::Supports(int64_t rows) { return rows > 0 && state_->KernelFor(rows)->fast; }

torch::Tensor Int8Linear::Forward(const torch::Tensor& x) {
  State& s = *state_;
  const torch::Tensor rows_f = x.reshape({-1, s.in}).contiguous();
  const int64_t rows = rows_f.size(0);
  const std::shared_ptr<Kernel> kernel = s.KernelFor(rows);
  torch::Tensor q = torch::empty({rows, s.in}, torch::kInt8);
  std::vector<float> row_scale(static_cast<size_t>(rows));
  QuantizeRowsSymmetric(rows_f.data_ptr<float>(), rows, s.in, q.data_ptr<int8_t>(),
                        row_scale.data());
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = s.out;
  torch::Tensor out = torch::empty(sizes, torch::kFloat32);
  dnnl::engine& engine = OneDnnCpuEngine();
  memory src_mem(kernel->src, engine, q.data_ptr());
  memory dst_mem(kernel->dst, engine, out.data_ptr());
  memory scale_mem({{1, rows, 1}, Dt::f32, Tag::abc}, engine, row_scale.data());
  memory bias_mem({{1, 1, s.out}, Dt::f32, Tag::abc}, engine, s.bias.data());
  memory scratch_mem(kernel->scratch, engine, OneDnnThreadScratch(kernel->scratch.get_size()));
  dnnl::stream stream(engine);
  kernel->matmul.execute(stream, {{DNNL_ARG_SRC, src_mem},
                                  {DNNL_ARG_SCRATCHPAD, scratch_mem},
                                  {DNNL_ARG_WEIGHTS, *kernel->weights},
                                  {DNNL_ARG_DST, dst_mem},
                                  {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, scale_mem},
                                  {DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, bias_mem}});
  stream.wait();
  return out;
}

#else  // no oneDNN: int8 weights compute dequantized (layers.cc)

bool Int8LinearAvailable() { return false; }

struct Int8Linear::State {};
Int8Linear::Int8Linear(const Int8Weights&, const torch::Tensor&)
    : state_(std::make_unique<State>()) {}
Int8Linear::~Int8Linear() = default;
bool Int8Linear::Supports(int64_t) { return false; }
torch::Tensor Int8Linear::Forward(const torch::Tensor&) {
  throw std::runtime_error(
      "int8 linear layers: sdgraph was built without oneDNN (SD_WITH_ONEDNN=OFF)");
}

#endif  // SD_WITH_ONEDNN

}  // namespace sd::nn
