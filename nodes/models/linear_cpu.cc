#include "nodes/models/linear_cpu.h"

#include <torch/torch.h>

#include <atomic>
#include <functional>

#include "nodes/models/cpu_choice.h"

namespace sd::nn {

namespace {

std::atomic<int> g_mode{-1};  // a CpuLinear set explicitly, or -1

// Two products of the UNet's transformer blocks at 512x512 (CFG batch 2): the feed-forward output
// of 8192 tokens (1280 -> 320), and a 5120 -> 1280 one of 512 tokens; 6.7 GFLOP each. Products with
// long rows, so that the time is the arithmetic's and not that of faulting in the outputs (a
// process without the CPU block cache maps each output afresh).
std::function<void()> LinearProbe(bool onednn) {
  torch::manual_seed(0);
  const torch::Tensor a = torch::randn({8192, 1280}), wa = torch::randn({320, 1280}).mul_(0.03);
  const torch::Tensor b = torch::randn({512, 5120}), wb = torch::randn({1280, 5120}).mul_(0.01);
  const torch::Tensor bias = torch::randn({1280});
  return [=] {
    torch::Tensor y = onednn ? OneDnnLinear(a, wa, {}) : torch::linear(a, wa);
    torch::Tensor z = onednn ? OneDnnLinear(b, wb, bias) : torch::linear(b, wb, bias);
    (void)y.sum().item<float>();
    (void)z.sum().item<float>();
  };
}

}  // namespace

torch::Tensor OneDnnLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t in = w.size(1), out = w.size(0);
  const torch::Tensor rows = x.reshape({-1, in}).contiguous();
  const int64_t n = rows.size(0);
  // [n, in] row-major is the channels-last layout of an image of 1 x n pixels with `in` channels.
  const torch::Tensor image = rows.view({1, 1, n, in}).permute({0, 3, 1, 2});
  const torch::Tensor y = torch::conv2d(image, w.view({out, in, 1, 1}), b);  // [1, out, 1, n]
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = out;
  // A view where y is channels-last, as oneDNN makes it.
  return y.permute({0, 2, 3, 1}).reshape(sizes);
}

double MeasuredOneDnnLinearSpeedup() {
  return MeasuredOnThisMachine(kOneDnnLinearMeasurement, [] {
    c10::InferenceMode guard;
    return TimedSpeedup(LinearProbe(false), LinearProbe(true));
  });
}

void SetCpuLinear(CpuLinear mode) {
  g_mode = mode == CpuLinear::kAuto ? -1 : static_cast<int>(mode);
}

CpuLinear ResolvedCpuLinear() {
  const int set = ChoiceInForce(g_mode.load(), "SD_CPU_LINEAR",
                                {{"blas", static_cast<int>(CpuLinear::kBlas)},
                                 {"onednn", static_cast<int>(CpuLinear::kOneDnn)}});
  if (set >= 0) return static_cast<CpuLinear>(set);
  return MeasuredOneDnnLinearSpeedup() >= kOneDnnLinearMinSpeedup ? CpuLinear::kOneDnn
                                                                  : CpuLinear::kBlas;
}

const char* CpuLinearName(CpuLinear mode) {
  switch (mode) {
    case CpuLinear::kBlas:
      return "blas";
    case CpuLinear::kOneDnn:
      return "onednn";
    case CpuLinear::kAuto:
      break;
  }
  return "auto";
}

}  // namespace sd::nn
