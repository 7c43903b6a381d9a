#include "nodes/models/conv_layout.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <vector>

#include "nodes/models/cpu_choice.h"
#include "nodes/models/winograd_conv.h"

namespace sd::nn {

namespace {

std::atomic<int> g_layout{-1};  // a ConvLayout set explicitly, or -1

// Two 3x3 convolutions shaped like the decoder's up blocks (2.4 GFLOP each: 256 channels at 64x64
// and 128 channels at 128x128) in one layout, to be timed in inference mode. NCHW runs each by
// Winograd where the decoder would (winograd_conv.h), which channels-last inputs never do.
std::function<void()> ConvProbe(bool channels_last) {
  torch::manual_seed(0);
  const auto format =
      channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  struct Case {
    torch::Tensor x, w, b, winograd;  // winograd: transformed weights where NCHW runs that way
  };
  std::vector<Case> cases;
  for (const auto& [c, s] : {std::pair<int64_t, int64_t>{256, 64}, {128, 128}}) {
    Case k{torch::randn({1, c, s, s}).contiguous(format),
           torch::randn({c, c, 3, 3}).mul_(0.02),
           torch::zeros({c}),
           {}};
    if (!channels_last && UsesWinograd(c, c, s, s)) k.winograd = WinogradWeights(k.w);
    cases.push_back(k);
  }
  return [cases] {
    for (const Case& k : cases) {
      const torch::Tensor y = k.winograd.defined() ? WinogradConv3x3(k.x, k.winograd, k.b)
                                                   : torch::conv2d(k.x, k.w, k.b, 1, 1);
      (void)y.sum().item<float>();
    }
  };
}

}  // namespace

double MeasuredChannelsLastSpeedup() {
  return MeasuredOnThisMachine(kChannelsLastMeasurement, [] {
    c10::InferenceMode guard;
    return TimedSpeedup(ConvProbe(false), ConvProbe(true));
  });
}

void SetVaeConvLayout(ConvLayout layout) {
  g_layout = layout == ConvLayout::kAuto ? -1 : static_cast<int>(layout);
}

ConvLayout ResolvedVaeConvLayout() {
  const int set = ChoiceInForce(g_layout.load(), "SD_CPU_CONV_LAYOUT",
                                {{"nchw", static_cast<int>(ConvLayout::kNchw)},
                                 {"nhwc", static_cast<int>(ConvLayout::kNhwc)}});
  if (set < 0) return MeasuredChannelsLastSpeedup() > 1.0 ? ConvLayout::kNhwc : ConvLayout::kNchw;
  return static_cast<ConvLayout>(set);
}

const char* ConvLayoutName(ConvLayout layout) {
  switch (layout) {
    case ConvLayout::kNchw:
      return "nchw";
    case ConvLayout::kNhwc:
      return "nhwc";
    case ConvLayout::kAuto:
      break;
  }
  return "auto";
}

}  // namespace sd::nn
