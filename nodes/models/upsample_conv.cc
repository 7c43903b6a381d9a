#include "nodes/models/upsample_conv.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "nodes/models/conv_layout.h"
#include "nodes/models/cpu_choice.h"
#include "nodes/models/layers.h"
#include "nodes/models/winograd_conv.h"

namespace sd::nn {

namespace {

std::atomic<int> g_mode{-1};  // an UpsampleConv set explicitly, or -1

// One decoder upsampling layer of `channels` on a random input in the decoder's layout, sub-pixel
// or as Conv2d::ForwardUpsampled2x does otherwise.
std::function<void()> UpsampleProbe(int64_t channels, bool subpixel) {
  torch::manual_seed(0);
  const int64_t side = 24576 / channels;
  Conv2d conv(channels, channels, 3);
  conv->AllowWinograd();
  conv->weight.normal_(0, 0.02);
  conv->bias.normal_(0, 0.1);
  torch::Tensor x = torch::randn({1, channels, side, side});
  if (ResolvedVaeConvLayout() == ConvLayout::kNhwc)
    x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  const torch::Tensor taps = UpsampleConvWeights(conv->weight);
  return [=]() mutable {
    const torch::Tensor y = subpixel ? UpsampleConv3x3(x, taps, conv->bias) : conv(Nearest2x(x));
    (void)y.sum().item<float>();
  };
}

// The 3 taps along `dim` seen by phase `a` as 2: [w0, w1 + w2] (a = 0: the output row 2i sees input
// rows i - 1, i, i) or [w0 + w1, w2] (a = 1: rows i, i, i + 1).
torch::Tensor FoldTaps(const torch::Tensor& w, int64_t dim, int a) {
  const torch::Tensor t0 = w.narrow(dim, 0, 1), t1 = w.narrow(dim, 1, 1), t2 = w.narrow(dim, 2, 1);
  return a == 0 ? torch::cat({t0, t1 + t2}, dim) : torch::cat({t0 + t1, t2}, dim);
}

// The phases' results y [n, 4 * c, h + 1, w + 1] into out [n, c, 2h, 2w]:
// out[., ch, 2i + a, 2j + b] = y[., (2a + b) c + ch, i + a, j + b]. Channels-last: each output
// pixel is c contiguous floats of one input pixel.
void InterleaveNhwc(const float* y, float* out, int64_t n, int64_t c, int64_t h, int64_t w) {
  const int64_t in_row = (w + 1) * 4 * c, out_row = 2 * w * c;
  at::parallel_for(0, n * 2 * h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {  // output row r = (image, 2i + a)
      const int64_t image = r / (2 * h), row = r % (2 * h), i = row / 2, a = row % 2;
      const float* src = y + (image * (h + 1) + i + a) * in_row;
      float* dst = out + r * out_row;
      for (int64_t j = 0; j < w; ++j) {
        for (int64_t b = 0; b < 2; ++b) {
          std::memcpy(dst + (2 * j + b) * c, src + (j + b) * 4 * c + (2 * a + b) * c,
                      c * sizeof(float));
        }
      }
    }
  });
}

// NCHW: each output row of 2w floats alternates two input rows' values.
void InterleaveNchw(const float* y, float* out, int64_t n, int64_t c, int64_t h, int64_t w) {
  const int64_t plane = (h + 1) * (w + 1);
  at::parallel_for(0, n * c * 2 * h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {  // output row r = (image, ch, 2i + a)
      const int64_t image = r / (c * 2 * h), ch = (r / (2 * h)) % c, row = r % (2 * h), i = row / 2,
                    a = row % 2;
      const float* even = y + ((image * 4 + 2 * a) * c + ch) * plane + (i + a) * (w + 1);  // b = 0
      const float* odd =
          y + ((image * 4 + 2 * a + 1) * c + ch) * plane + (i + a) * (w + 1) + 1;  // b = 1
      float* dst = out + r * 2 * w;
      for (int64_t j = 0; j < w; ++j) {
        dst[2 * j] = even[j];
        dst[2 * j + 1] = odd[j];
      }
    }
  });
}

}  // namespace

torch::Tensor Nearest2x(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .scale_factor(std::vector<double>{2.0, 2.0})
                               .mode(torch::kNearest));
}

torch::Tensor UpsampleConvWeights(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3,
              "UpsampleConvWeights: want [out, in, 3, 3]");
  const torch::Tensor w32 = w.to(torch::kFloat32);
  std::vector<torch::Tensor> phases;
  for (int a = 0; a < 2; ++a) {
    const torch::Tensor rows = FoldTaps(w32, 2, a);
    for (int b = 0; b < 2; ++b) phases.push_back(FoldTaps(rows, 3, b));
  }
  return torch::cat(phases, 0).contiguous();
}

torch::Tensor UpsampleConv3x3(const torch::Tensor& x, const torch::Tensor& p,
                              const torch::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
                  p.scalar_type() == torch::kFloat32,
              "UpsampleConv3x3: want f32 inputs and taps on a CPU");
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), out = p.size(0) / 4;
  // Padding 1 with a 2x2 kernel: y[i] = k0 * x[i - 1] + k1 * x[i], (H + 1) x (W + 1) of them; phase
  // a = 0 reads y[0 .. H - 1], a = 1 reads y[1 .. H].
  const torch::Tensor y =
      torch::conv2d(x, p, bias.defined() ? bias.to(p.scalar_type()).repeat({4}) : bias, 1, 1);
  const bool channels_last =
      x.is_contiguous(torch::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  const torch::Tensor phases = y.contiguous(channels_last ? torch::MemoryFormat::ChannelsLast
                                                          : torch::MemoryFormat::Contiguous);
  torch::Tensor result =
      torch::empty({n, out, 2 * h, 2 * w},
                   y.options().memory_format(channels_last ? torch::MemoryFormat::ChannelsLast
                                                           : torch::MemoryFormat::Contiguous));
  if (channels_last) {
    InterleaveNhwc(phases.data_ptr<float>(), result.data_ptr<float>(), n, out, h, w);
  } else {
    InterleaveNchw(phases.data_ptr<float>(), result.data_ptr<float>(), n, out, h, w);
  }
  return result;
}

void SetUpsampleConv(UpsampleConv mode) {
  g_mode = mode == UpsampleConv::kAuto ? -1 : static_cast<int>(mode);
}

std::string SubpixelMeasurement(int64_t channels, bool onednn_products) {
  return absl::StrCat("vae sub-pixel upsampling ", onednn_products ? "(onednn products) " : "",
                      "speedup ", channels);
}

double MeasuredSubpixelSpeedup(int64_t channels) {
  return MeasuredOnThisMachine(SubpixelMeasurement(channels, WinogradProductsByOneDnn()), [&] {
    c10::InferenceMode guard;
    return TimedSpeedup(UpsampleProbe(channels, false), UpsampleProbe(channels, true));
  });
}

std::vector<int64_t> DecoderUpsampleChannels(const VaeConfig& vae) {
  std::vector<int64_t> channels;
  for (size_t l = 1; l < vae.ch_mult.size(); ++l) {
    const int64_t c = vae.ch * vae.ch_mult[l];
    if (std::find(channels.begin(), channels.end(), c) == channels.end()) channels.push_back(c);
  }
  return channels;
}

bool UsesSubpixelUpsample(int64_t channels) {
  const int set = ChoiceInForce(g_mode.load(), "SD_CPU_UPSAMPLE_CONV",
                                {{"direct", static_cast<int>(UpsampleConv::kDirect)},
                                 {"subpixel", static_cast<int>(UpsampleConv::kSubpixel)}});
  if (set >= 0) return static_cast<UpsampleConv>(set) == UpsampleConv::kSubpixel;
  return MeasuredSubpixelSpeedup(channels) >= kSubpixelMinSpeedup;
}

}  // namespace sd::nn
