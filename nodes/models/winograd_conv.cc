#include "nodes/models/winograd_conv.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nodes/kernels/winograd_cpu.h"
#include "nodes/models/batched_matmul.h"
#include "nodes/models/cpu_choice.h"
#include "nodes/models/linear_cpu.h"

namespace sd::nn {

namespace {

using kernels::kWinogradPoints;
using kernels::WinogradTiles;

// Floats of one transformed-data buffer (the input's, and the products'): a band of tile rows at a
// time, so the transforms' output stays in the caches' reach.
constexpr int64_t kBandFloats = int64_t{8} << 20;

std::atomic<int> g_mode{-1};  // a WinogradMode set explicitly, or -1
std::atomic<int64_t> g_flops_saved{0};

std::mutex g_probes_mu;
std::map<std::pair<int64_t, int64_t>, double> g_probes;  // the pairs this process used, for reports

// Per thread, the two band buffers (at most kBandFloats each, plus a band row), kept between calls:
// a fresh 32 MB buffer would be page-faulted in on every layer.
torch::Tensor Scratch(int which, int64_t floats) {
  thread_local torch::Tensor buffers[2];
  torch::Tensor& b = buffers[which];
  if (!b.defined() || b.numel() < floats) b = torch::empty({floats}, torch::kFloat32);
  return b;
}

// How many times faster Winograd runs than the direct convolution for one pair of channel counts.
double ProbeSpeedup(int64_t in, int64_t out) {
  c10::InferenceMode guard;
  torch::manual_seed(0);
  const int64_t side = WinogradProbeSide(in, out);
  const torch::Tensor x = torch::randn({1, in, side, side});
  const torch::Tensor w = torch::randn({out, in, 3, 3}).mul_(0.02), b = torch::zeros({out});
  const torch::Tensor u = WinogradWeights(w);
  return TimedSpeedup([&] { (void)torch::conv2d(x, w, b, 1, 1); },
                      [&] { (void)WinogradConv3x3(x, u, b); });
}

}  // namespace

void SetWinogradMode(WinogradMode mode) {
  g_mode = mode == WinogradMode::kAuto ? -1 : static_cast<int>(mode);
}

WinogradMode WinogradModeInForce() {
  const int set = ChoiceInForce(
      g_mode.load(), "SD_CPU_WINOGRAD",
      {{"on", static_cast<int>(WinogradMode::kOn)}, {"off", static_cast<int>(WinogradMode::kOff)}});
  return set < 0 ? WinogradMode::kAuto : static_cast<WinogradMode>(set);
}

double MeasuredWinogradSpeedup(int64_t in, int64_t out) {
  // Not under g_probes_mu: a measurement may wait for another process's, or nest in one.
  const double speedup =
      MeasuredOnThisMachine(WinogradMeasurement(in, out, WinogradProductsByOneDnn()),
                            [&] { return ProbeSpeedup(in, out); });
  std::lock_guard<std::mutex> lock(g_probes_mu);
  g_probes[{in, out}] = speedup;
  return speedup;
}

int64_t WinogradFlopsSaved() { return g_flops_saved.load(std::memory_order_relaxed); }

bool WinogradProductsByOneDnn() {
  return HaveOneDnnBatchedMatmul() && ResolvedCpuLinear() == CpuLinear::kOneDnn;
}

std::string WinogradMeasurement(int64_t in, int64_t out, bool onednn_products) {
  return absl::StrCat("winograd f4x4 ", onednn_products ? "(onednn products) " : "", "speedup ", in,
                      "x", out);
}

std::vector<WinogradProbe> WinogradProbes() {
  std::lock_guard<std::mutex> lock(g_probes_mu);
  std::vector<WinogradProbe> probes;
  for (const auto& [pair, speedup] : g_probes) probes.push_back({pair.first, pair.second, speedup});
  return probes;
}

int64_t WinogradProbeSide(int64_t in, int64_t out) {
  const double side =
      64.0 * std::sqrt(512.0 * 512.0 / static_cast<double>(std::max<int64_t>(in * out, 1)));
  return std::clamp<int64_t>(static_cast<int64_t>(side / 4) * 4, 64, 256);
}

bool UsesWinograd(int64_t in, int64_t out, int64_t h, int64_t w) {
  switch (WinogradModeInForce()) {
    case WinogradMode::kOn:
      return true;
    case WinogradMode::kOff:
      return false;
    case WinogradMode::kAuto:
      break;
  }
  return std::min(in, out) >= kWinogradMinChannels && h * w >= kWinogradMinPixels &&
         h * w * in * out >= kWinogradMinWork &&
         MeasuredWinogradSpeedup(in, out) >= kWinogradMinSpeedup;
}

torch::Tensor WinogradWeights(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3,
              "Winograd weights: not 3x3 kernels");
  const torch::Tensor src = w.to(torch::kFloat32).contiguous();
  torch::Tensor u = torch::empty({kWinogradPoints, w.size(0), w.size(1)}, torch::kFloat32);
  kernels::WinogradWeights(src.data_ptr<float>(), w.size(0), w.size(1), u.data_ptr<float>());
  return u;
}

torch::Tensor WinogradConv3x3(const torch::Tensor& input, const torch::Tensor& u,
                              const torch::Tensor& bias) {
  const torch::Tensor x = input.contiguous();
  const int64_t n = x.size(0), in = x.size(1), h = x.size(2), w = x.size(3), out = u.size(1);
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.device().is_cpu() && u.size(2) == in,
              "Winograd convolution: f32 CPU input with ", u.size(2), " channels expected");
  // The oneDNN products read the transformed weights as dense [36][out][in] memory.
  TORCH_CHECK(u.dim() == 3 && u.size(0) == kWinogradPoints && u.is_contiguous() &&
                  u.scalar_type() == torch::kFloat32,
              "Winograd convolution: transformed weights must be dense f32 [36, out, in] "
              "(WinogradWeights)");
  const int64_t tw = WinogradTiles(w), th = WinogradTiles(h);
  const int64_t band =
      std::clamp<int64_t>(kBandFloats / (kWinogradPoints * std::max(in, out) * tw), 1, th);
  torch::Tensor y = torch::empty({n, out, h, w}, torch::kFloat32);
  torch::Tensor v_buffer = Scratch(0, kWinogradPoints * in * band * tw);
  torch::Tensor m_buffer = Scratch(1, kWinogradPoints * out * band * tw);
  const torch::Tensor b = bias.defined() ? bias.to(torch::kFloat32).contiguous() : torch::Tensor();
  const int threads = at::get_num_threads();
  const bool onednn_products = WinogradProductsByOneDnn();
  for (int64_t image = 0; image < n; ++image) {
    const float* xi = x.data_ptr<float>() + image * in * h * w;
    float* yi = y.data_ptr<float>() + image * out * h * w;
    for (int64_t row0 = 0; row0 < th; row0 += band) {
      const int64_t rows = std::min(band, th - row0), tiles = rows * tw;
      torch::Tensor v =
          v_buffer.narrow(0, 0, kWinogradPoints * in * tiles).view({kWinogradPoints, in, tiles});
      torch::Tensor m =
          m_buffer.narrow(0, 0, kWinogradPoints * out * tiles).view({kWinogradPoints, out, tiles});
      kernels::WinogradInput(xi, in, h, w, row0, rows, v.data_ptr<float>(), threads);
      if (onednn_products) {
        OneDnnBatchedMatmul(u.data_ptr<float>(), v.data_ptr<float>(), m.data_ptr<float>(),
                            kWinogradPoints, out, in, tiles);
      } else {
        // One product per point, the points spread over the threads (each product single-threaded):
        // faster than bmm's one threaded product after another at these shapes (measured 1.1-1.5x).
        at::parallel_for(0, kWinogradPoints, 1, [&](int64_t begin, int64_t end) {
          c10::InferenceMode guard;  // per thread: the buffers are inference tensors
          for (int64_t k = begin; k < end; ++k) {
            torch::Tensor mk = m[k];
            torch::mm_out(mk, u[k], v[k]);
          }
        });
      }
      kernels::WinogradOutput(m.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, out,
                              h, w, row0, rows, yi, threads);
    }
  }
  const int64_t direct = 2 * 9 * n * out * in * h * w;
  const int64_t products = 2 * kWinogradPoints * n * out * in * th * tw;
  g_flops_saved.fetch_add(direct - products, std::memory_order_relaxed);
  return y;
}

}  // namespace sd::nn
