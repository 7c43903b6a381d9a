#include "nodes/models/plain_conv.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "nodes/models/cpu_choice.h"
#include "nodes/models/onednn_conv.h"

namespace sd::nn {

namespace {

std::atomic<int> g_mode{-1};  // a PlainConvMode set explicitly, or -1

using LayerKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
LayerKey KeyOf(const PlainConvLayer& l) { return {l.in, l.out, l.kernel, l.stride, l.h, l.w}; }

std::mutex g_probes_mu;
std::map<LayerKey, PlainConvProbe> g_probes;  // the layers this process asked about

OneDnnConvShape ShapeOf(const PlainConvLayer& l, int64_t batch, bool bias) {
  OneDnnConvShape s;
  s.batch = batch;
  s.in = l.in;
  s.out = l.out;
  s.height = l.h;
  s.width = l.w;
  s.kernel = l.kernel;
  s.stride = l.stride;
  s.padding = l.kernel / 2;
  s.bias = bias;
  s.threads = at::get_num_threads();
  return s;
}

// Whether oneDNN has a JIT kernel (not its reference code) for the layer at batch 1.
bool HasKernel(const PlainConvLayer& l) {
  return HaveOneDnnConv() && !OneDnnConvImplementation(ShapeOf(l, 1, true)).empty();
}

double ProbeSpeedup(const PlainConvLayer& l) {
  c10::InferenceMode guard;
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({1, l.in, l.h, l.w});
  const torch::Tensor w = torch::randn({l.out, l.in, l.kernel, l.kernel}).mul_(0.02);
  const torch::Tensor b = torch::zeros({l.out});
  return TimedSpeedup([&] { (void)torch::conv2d(x, w, b, l.stride, l.kernel / 2); },
                      [&] { (void)PlainConv(x, w, b, l.stride); });
}

}  // namespace

void SetPlainConvMode(PlainConvMode mode) {
  g_mode = mode == PlainConvMode::kAuto ? -1 : static_cast<int>(mode);
}

PlainConvMode PlainConvModeInForce() {
  const int set = ChoiceInForce(g_mode.load(), "SD_CPU_PLAIN_CONV",
                                {{"on", static_cast<int>(PlainConvMode::kOn)},
                                 {"off", static_cast<int>(PlainConvMode::kOff)}});
  return set < 0 ? PlainConvMode::kAuto : static_cast<PlainConvMode>(set);
}

std::string PlainConvLayerText(const PlainConvLayer& l) {
  return absl::StrCat(l.in, "->", l.out, " ", l.kernel, "x", l.kernel,
                      l.stride == 1 ? "" : absl::StrCat(" stride ", l.stride), " at ", l.h, "x",
                      l.w);
}

std::string PlainConvMeasurement(const PlainConvLayer& l) {
  return absl::StrCat("onednn plain-weight conv speedup ", PlainConvLayerText(l));
}

double MeasuredPlainConvSpeedup(const PlainConvLayer& l) {
  // Not under g_probes_mu: a measurement may wait for another process's.
  const double speedup =
      MeasuredOnThisMachine(PlainConvMeasurement(l), [&] { return ProbeSpeedup(l); });
  std::lock_guard<std::mutex> lock(g_probes_mu);
  g_probes[KeyOf(l)] = {l, speedup};
  return speedup;
}

std::vector<PlainConvProbe> PlainConvProbes() {
  std::lock_guard<std::mutex> lock(g_probes_mu);
  std::vector<PlainConvProbe> probes;
  for (const auto& [key, probe] : g_probes) probes.push_back(probe);
  return probes;
}

bool UsesPlainConv(const PlainConvLayer& l) {
  const PlainConvMode mode = PlainConvModeInForce();
  if (mode == PlainConvMode::kOff || (l.kernel != 1 && l.kernel != 3) ||
      (l.stride != 1 && l.stride != 2)) {
    return false;
  }
  if (mode == PlainConvMode::kOn) return HasKernel(l);
  // The cheap tests first: asking oneDNN for a kernel makes one.
  return std::min(l.in, l.out) >= kPlainConvMinChannels && l.h * l.w <= kPlainConvMaxPixels &&
         HasKernel(l) && MeasuredPlainConvSpeedup(l) >= kPlainConvMinSpeedup;
}

torch::Tensor PlainConv(const torch::Tensor& input, const torch::Tensor& weight,
                        const torch::Tensor& bias, int64_t stride) {
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && input.device().is_cpu() &&
                  input.scalar_type() == torch::kFloat32 &&
                  weight.scalar_type() == torch::kFloat32 && weight.size(1) == input.size(1) &&
                  weight.size(2) == weight.size(3),
              "plain-weight convolution: f32 CPU input [N, ", weight.size(1),
              ", H, W] and square f32 kernels expected");
  const torch::Tensor x = input.contiguous(), w = weight.contiguous();
  const torch::Tensor b = bias.defined() ? bias.to(torch::kFloat32).contiguous() : bias;
  const OneDnnConvShape s = ShapeOf({x.size(1), w.size(0), w.size(2), stride, x.size(2), x.size(3)},
                                    x.size(0), b.defined());
  torch::Tensor y = torch::empty({s.batch, s.out, s.OutHeight(), s.OutWidth()}, x.options());
  OneDnnConv(s, x.data_ptr<float>(), w.data_ptr<float>(),
             b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>());
  return y;
}

}  // namespace sd::nn
