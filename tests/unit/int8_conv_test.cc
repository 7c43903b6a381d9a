// int8 convolutions (nodes/models/int8_conv.h): the integer arithmetic exactly, against a float64
// convolution of the same quantized values (padding, zero points, strides, channel counts where
// oneDNN 2.6's own zero points fail); the quantization error against f32; as a layer
// (Conv2d::UseInt8, the dequantized fallback); which layers the int8 mode takes; and int8
// checkpoints (weights with NAME_scale) as LoadWeights reads them.
//
// ctest runs this suite twice: as it comes on this CPU, and with DNNL_MAX_CPU_ISA=AVX2
// (sd_onednn_avx2_tests), so AVX-512 machines check the AVX2 kernel and its 7-bit weights too.
#include "nodes/models/int8_conv.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "nodes/models/layers.h"
#include "nodes/models/model_util.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/test_util.h"
#include "tests/unit/int8_test_util.h"

namespace sd {
namespace {

using int8_test::RelL2;
using int8_test::WriteFile;

struct Case {
  int64_t batch, in, out, h, w, stride;
};

// The input as the layer quantizes it (int8_conv.cc: per tensor, a zero point, round half up),
// dequantized: the values whose convolution the int8 kernel computes exactly.
torch::Tensor QuantizedInput(const torch::Tensor& x) {
  const int qmax = 255;
  const float lo = std::min(0.0f, x.min().item<float>()),
              hi = std::max(0.0f, x.max().item<float>());
  const float scale = (hi - lo) / static_cast<float>(qmax), inverse = 1.0f / scale;
  const float zp =
      static_cast<float>(std::clamp(static_cast<int>(std::lround(-lo / scale)), 0, qmax));
  const torch::Tensor q = (x * inverse + zp).clamp_(0, qmax).add_(0.5f).floor_();
  return (q.to(torch::kFloat64) - zp) * static_cast<double>(scale);
}

TEST(Int8ConvTest, ComputesTheQuantizedConvolutionExactly) {
  if (!nn::Int8ConvAvailable())
    GTEST_SKIP() << "no oneDNN int8 kernel on this CPU (" << nn::Int8ConvIsa() << ")";
  c10::InferenceMode guard;
  torch::manual_seed(3);
  std::printf("[ int8 ] oneDNN ISA %s, %d-bit weights in the kernel\n", nn::Int8ConvIsa().c_str(),
              nn::Int8KernelWeightBits());
  // 1920 -> 640: a shape where oneDNN 2.6's own source zero points give wrong sums.
  for (const Case c : {Case{1, 64, 48, 16, 16, 1}, Case{2, 96, 64, 12, 10, 1},
                       Case{1, 1920, 640, 16, 16, 1}, Case{1, 64, 64, 15, 15, 2}}) {
    const torch::Tensor w = torch::randn({c.out, c.in, 3, 3}).mul_(1.0 / std::sqrt(9.0 * c.in));
    const torch::Tensor b = torch::randn({c.out});
    const nn::Int8Weights q = nn::QuantizeWeightsPerChannel(w);
    nn::Int8Conv conv(q, b, c.stride, 1);
    ASSERT_TRUE(conv.Supports(c.batch, c.h, c.w));
    // Skewed like SiLU outputs (zero point inside the range), all positive (zero point 0), all
    // negative (zero point at the top): the padding must stand for 0.0 in each.
    const torch::Tensor base = torch::randn({c.batch, c.in, c.h, c.w});
    for (const torch::Tensor& x : {torch::silu(base), base.abs(), -base.abs()}) {
      const torch::Tensor y = conv.Forward(x);
      const torch::Tensor kernel_w =
          nn::DequantizeWeightsPerChannel(nn::Int8Conv::KernelWeights(q));
      const torch::Tensor exact = torch::conv2d(QuantizedInput(x), kernel_w.to(torch::kFloat64),
                                                b.to(torch::kFloat64), c.stride, 1);
      ASSERT_EQ(y.sizes(), exact.sizes());
      EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
      const double scale = exact.abs().max().item<double>();
      const double err = (y.to(torch::kFloat64) - exact).abs().max().item<double>();
      EXPECT_LE(err, 1e-5 * (1 + scale)) << c.in << " -> " << c.out << " at " << c.h << "x" << c.w;
    }
  }
}

TEST(Int8ConvTest, StaysWithinTheQuantizationErrorOfF32) {
  if (!nn::Int8ConvAvailable()) GTEST_SKIP() << "no oneDNN int8 kernel on this CPU";
  c10::InferenceMode guard;
  torch::manual_seed(4);
  const torch::Tensor x = torch::silu(torch::randn({1, 320, 32, 32}));
  const torch::Tensor w = torch::randn({320, 320, 3, 3}).mul_(1.0 / std::sqrt(9.0 * 320));
  const torch::Tensor b = torch::randn({320}).mul_(0.1);
  nn::Int8Conv conv(nn::QuantizeWeightsPerChannel(w), b, 1, 1);
  const double rel = RelL2(conv.Forward(x), torch::conv2d(x, w, b, 1, 1));
  std::printf("[ int8 ] 320 -> 320 at 32x32: relative L2 error %.2e against f32\n", rel);
  // Measured 1.2e-2 with 8-bit weights, 2.4e-2 with the 7-bit ones of CPUs without VNNI: Gaussian
  // weights have a long tail, so a channel's largest weight leaves few levels to the rest.
  EXPECT_LT(rel, 3e-2);
  EXPECT_GT(rel, 1e-4);  // it did quantize
}

TEST(Int8ConvTest, RunsOnThreadsSideBySideAndOnKernelsMadeForFewerThreads) {
  if (!nn::Int8ConvAvailable()) GTEST_SKIP() << "no oneDNN int8 kernel on this CPU";
  c10::InferenceMode guard;
  torch::manual_seed(6);
  const torch::Tensor w = torch::randn({256, 256, 3, 3}).mul_(1.0 / std::sqrt(9.0 * 256));
  nn::Int8Conv conv(nn::QuantizeWeightsPerChannel(w), torch::randn({256}), 1, 1);
  std::vector<torch::Tensor> inputs;
  for (int64_t size : {8, 16, 24})
    inputs.push_back(torch::silu(torch::randn({1, 256, size, size})));
  int8_test::ExpectSameResultsOnThreadsSideBySide(
      [&conv](const torch::Tensor& x) { return conv.Forward(x); }, inputs);
}

TEST(Int8ConvTest, ALayerRunsInt8OnlyInInferenceAndElseOnTheDequantizedWeights) {
  torch::manual_seed(5);
  nn::Conv2d conv(64, 32, 3);
  {
    torch::NoGradGuard no_grad;
    conv->weight.copy_(torch::randn({32, 64, 3, 3}).mul_(0.05));
    conv->bias.copy_(torch::randn({32}));
  }
  const torch::Tensor f32_weight = conv->weight.detach().clone();
  conv->UseInt8();
  ASSERT_TRUE(conv->UsesInt8());
  EXPECT_EQ(conv->weight.scalar_type(), torch::kInt8);
  EXPECT_EQ(conv->weight_scale.sizes(), (std::vector<int64_t>{32}));
  const torch::Tensor x = torch::silu(torch::randn({2, 64, 20, 20}));
  const torch::Tensor dequantized =
      nn::DequantizeWeightsPerChannel({conv->weight, conv->weight_scale});
  EXPECT_LT(RelL2(dequantized, f32_weight), 1e-2);
  torch::Tensor fallback;
  {
    torch::NoGradGuard no_grad;  // not inference mode: the dequantized weights in f32
    fallback = conv->forward(x);
    EXPECT_TRUE(
        torch::allclose(fallback, torch::conv2d(x, dequantized, conv->bias, 1, 1), 1e-5, 1e-5));
  }
  if (!nn::Int8ConvAvailable()) return;
  c10::InferenceMode guard;
  const torch::Tensor y = conv->forward(x);
  const torch::Tensor y_cl = conv->forward(x.contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::equal(y, y_cl)) << "the input's memory order changes nothing";
  const double rel = RelL2(y, fallback);
  EXPECT_GT(rel, 1e-4);  // the int8 kernel ran, not the fallback
  EXPECT_LT(rel, 3e-2);
}

struct Net : torch::nn::Module {
  Net() {
    register_module("conv_in", conv_in);
    register_module("mid", mid);
    register_module("proj", proj);
    register_module("conv_out", conv_out);
  }
  nn::Conv2d conv_in{4, 32, 3}, mid{32, 32, 3}, proj{32, 32, 1}, conv_out{32, 4, 3};
};

TEST(Int8ConvTest, TheInt8ModeTakesThe3x3LayersWithManyChannelsOnly) {
  auto net = std::make_shared<Net>();
  for (auto& p : net->parameters()) p.detach().normal_();
  EXPECT_EQ(nn::UseInt8Layers(*net), 1);
  EXPECT_TRUE(net->mid->UsesInt8());
  EXPECT_FALSE(net->conv_in->UsesInt8());
  EXPECT_FALSE(net->proj->UsesInt8());
  EXPECT_FALSE(net->conv_out->UsesInt8());
  EXPECT_TRUE(nn::Int8ConvShape(640, 1920, 3, 3));
  EXPECT_FALSE(nn::Int8ConvShape(4, 320, 3, 3));
}

TEST(Int8ConvTest, Int8CheckpointsLoadTheirWeightsAndScalesAndBadOnesAreRefused) {
  torch::manual_seed(6);
  testing::TempDir dir;
  auto source = std::make_shared<Net>();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : source->named_parameters())
    tensors.emplace_back(p.key(), p.value().detach().normal_().clone());
  const nn::Int8Weights q = nn::QuantizeWeightsPerChannel(source->mid->weight);
  auto with = [&](const std::string& key, const torch::Tensor& t) {
    auto copy = tensors;
    for (auto& [k, v] : copy) {
      if (k == key) v = t;
    }
    return copy;
  };
  auto good = with("mid.weight", q.q);
  good.emplace_back("mid.weight_scale", q.scale);
  auto ckpt = Checkpoint::Open(WriteFile(dir, "good.safetensors", good));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto loaded = std::make_shared<Net>();
  ASSERT_TRUE(LoadWeights(*loaded, **ckpt, "net.", torch::kFloat32).ok());
  ASSERT_TRUE(loaded->mid->UsesInt8());
  EXPECT_TRUE(torch::equal(loaded->mid->weight, q.q));
  EXPECT_TRUE(torch::equal(loaded->mid->weight_scale, q.scale));
  EXPECT_FALSE(loaded->proj->UsesInt8());

  struct Bad {
    const char* name;
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    const char* error;
  };
  auto negative = good;
  negative.back().second = -q.scale;
  auto bias_int8 = with("mid.bias", torch::zeros({32}, torch::kInt8));
  bias_int8.emplace_back("mid.weight_scale", q.scale);
  auto short_scale = with("mid.weight", q.q);
  short_scale.emplace_back("mid.weight_scale", q.scale.slice(0, 0, 16).contiguous());
  for (const Bad& bad :
       {Bad{"noscale", with("mid.weight", q.q), "needs net.mid.weight_scale"},
        Bad{"negative", negative, "not a positive finite number"},
        Bad{"shortscale", short_scale, "of shape [32]"},
        Bad{"bias", bias_int8, "only convolution and feed-forward projection weights may be"}}) {
    auto c = Checkpoint::Open(WriteFile(dir, std::string(bad.name) + ".safetensors", bad.tensors));
    ASSERT_TRUE(c.ok()) << c.status();
    auto net = std::make_shared<Net>();
    const absl::Status s = LoadWeights(*net, **c, "net.", torch::kFloat32);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad.name << ": " << s;
    EXPECT_NE(s.message().find(bad.error), std::string::npos) << bad.name << ": " << s;
    EXPECT_NE(s.message().find(bad.name), std::string::npos) << "names the file: " << s;
  }
}

}  // namespace
}  // namespace sd
