#include "nodes/models/onednn_conv.h"

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#ifdef SD_WITH_ONEDNN
#include "nodes/models/onednn_common.h"
#endif

namespace sd::nn {

namespace {

std::atomic<uint64_t> g_flops{0};

std::string ShapeText(const OneDnnConvShape& s) {
  return std::to_string(s.in) + " -> " + std::to_string(s.out) + " channels, kernel " +
         std::to_string(s.kernel) + ", stride " + std::to_string(s.stride) + ", on " +
         std::to_string(s.batch) + " x " + std::to_string(s.height) + "x" + std::to_string(s.width);
}

}  // namespace

uint64_t OneDnnConvFlops() { return g_flops.load(std::memory_order_relaxed); }

#ifdef SD_WITH_ONEDNN

dnnl::engine& OneDnnCpuEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

void* OneDnnThreadScratch(size_t bytes) {
  thread_local std::vector<char> buffer;
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer.data();
}

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

struct Kernel {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward conv;
  std::string implementation;  // empty: oneDNN's reference code
};

std::shared_ptr<const Kernel> MakeKernel(const OneDnnConvShape& s) {
  const memory::desc src({s.batch, s.in, s.height, s.width}, Dt::f32, Tag::nchw);
  const memory::desc weights({s.out, s.in, s.kernel, s.kernel}, Dt::f32, Tag::oihw);
  const memory::desc dst({s.batch, s.out, s.OutHeight(), s.OutWidth()}, Dt::f32, Tag::nchw);
  const memory::dims strides = {s.stride, s.stride}, pad = {s.padding, s.padding};
  const auto prop = dnnl::prop_kind::forward_inference;
  const auto algo = dnnl::algorithm::convolution_direct;
  const dnnl::convolution_forward::desc desc =
      s.bias ? dnnl::convolution_forward::desc(prop, algo, src, weights,
                                               memory::desc({s.out}, Dt::f32, Tag::x), dst, strides,
                                               pad, pad)
             : dnnl::convolution_forward::desc(prop, algo, src, weights, dst, strides, pad, pad);
  // Scratch space (the im2col buffer) from the caller, per thread (OneDnnThreadScratch): oneDNN's
  // own is shared, and the semantic tests run pictures on threads side by side.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto kernel = std::make_shared<Kernel>();
  kernel->pd = dnnl::convolution_forward::primitive_desc(desc, attr, OneDnnCpuEngine());
  const std::string name = kernel->pd.impl_info_str();
  if (name.find("ref") == std::string::npos) kernel->implementation = name;
  kernel->conv = dnnl::convolution_forward(kernel->pd);
  return kernel;
}

// One kernel per shape, made on first use and kept (a process meets a few dozen shapes).
std::shared_ptr<const Kernel> KernelFor(const OneDnnConvShape& s) {
  using Key = std::array<int64_t, 10>;
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<const Kernel>> kernels;
  const Key key = {s.batch,  s.in,     s.out,     s.height, s.width,
                   s.kernel, s.stride, s.padding, s.bias,   s.threads};
  std::lock_guard<std::mutex> lock(mu);
  auto& kernel = kernels[key];
  if (!kernel) {
    try {
      kernel = MakeKernel(s);
    } catch (const dnnl::error& e) {
      kernels.erase(key);
      throw std::runtime_error("oneDNN convolution of " + ShapeText(s) + ": " + e.what());
    }
  }
  return kernel;
}

}  // namespace

bool HaveOneDnnConv() { return true; }

std::string OneDnnConvImplementation(const OneDnnConvShape& shape) {
  return KernelFor(shape)->implementation;
}

void OneDnnConv(const OneDnnConvShape& s, const float* x, const float* w, const float* bias,
                float* y) {
  const std::shared_ptr<const Kernel> kernel = KernelFor(s);
  if (kernel->implementation.empty()) {
    throw std::runtime_error("oneDNN convolution of " + ShapeText(s) +
                             ": oneDNN has only its reference code for it on this CPU");
  }
  try {
    dnnl::engine& engine = OneDnnCpuEngine();
    dnnl::stream stream(engine);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, memory(kernel->pd.src_desc(), engine, const_cast<float*>(x))},
        {DNNL_ARG_WEIGHTS, memory(kernel->pd.weights_desc(), engine, const_cast<float*>(w))},
        {DNNL_ARG_DST, memory(kernel->pd.dst_desc(), engine, y)}};
    const memory::desc scratch = kernel->pd.scratchpad_desc();
    args.emplace(DNNL_ARG_SCRATCHPAD,
                 memory(scratch, engine, OneDnnThreadScratch(scratch.get_size())));
    if (s.bias) {
      args.emplace(DNNL_ARG_BIAS, memory(kernel->pd.bias_desc(), engine, const_cast<float*>(bias)));
    }
    kernel->conv.execute(stream, args);
    stream.wait();
    g_flops.fetch_add(static_cast<uint64_t>(2 * s.batch * s.out * s.OutHeight() * s.OutWidth() *
                                            s.in * s.kernel * s.kernel),
                      std::memory_order_relaxed);
  } catch (const dnnl::error& e) {
    throw std::runtime_error("oneDNN convolution of " + ShapeText(s) + ": " + e.what());
  }
}

#else  // built without oneDNN

bool HaveOneDnnConv() { return false; }

std::string OneDnnConvImplementation(const OneDnnConvShape&) { return ""; }

void OneDnnConv(const OneDnnConvShape& s, const float*, const float*, const float*, float*) {
  throw std::runtime_error("oneDNN convolution of " + ShapeText(s) +
                           ": sdgraph was built without oneDNN");
}

#endif  // SD_WITH_ONEDNN

}  // namespace sd::nn
