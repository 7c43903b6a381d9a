// Two CPU paths chosen by measurement: the VAE decoder's upsampling convolutions computed sub-pixel
// on the low-resolution map (nodes/models/upsample_conv.h), and linear layers by oneDNN
// (nodes/models/linear_cpu.h). Each against a float64 reference on awkward shapes, as a layer in
// each mode, and how auto decides.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "nodes/models/layers.h"
#include "nodes/models/linear_cpu.h"
#include "nodes/models/upsample_conv.h"

namespace sd {
namespace {

namespace F = torch::nn::functional;

torch::Tensor Upsampled(const torch::Tensor& x) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .scale_factor(std::vector<double>{2.0, 2.0})
                               .mode(torch::kNearest));
}

class CpuKernelPathsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    nn::SetUpsampleConv(nn::UpsampleConv::kAuto);
    nn::SetCpuLinear(nn::CpuLinear::kAuto);
  }
};

struct ConvShape {
  int64_t batch, in, h, w, out;
};

TEST_F(CpuKernelPathsTest, SubpixelUpsamplingEqualsUpsamplingThenConvolving) {
  c10::InferenceMode guard;
  torch::manual_seed(3);
  // One-pixel and one-row images, odd sizes, batches, unequal channel counts.
  for (const ConvShape s : {ConvShape{1, 3, 1, 1, 4}, ConvShape{2, 5, 7, 9, 11},
                            ConvShape{1, 16, 1, 6, 8}, ConvShape{1, 32, 13, 10, 24}}) {
    const torch::Tensor w = torch::randn({s.out, s.in, 3, 3}).mul_(0.2), b = torch::randn({s.out});
    const torch::Tensor taps = nn::UpsampleConvWeights(w);
    ASSERT_EQ(taps.sizes(), torch::IntArrayRef({4 * s.out, s.in, 2, 2}));
    for (const bool channels_last : {false, true}) {
      torch::Tensor x = torch::randn({s.batch, s.in, s.h, s.w});
      if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      const torch::Tensor exact = torch::conv2d(Upsampled(x.to(torch::kFloat64)),
                                                w.to(torch::kFloat64), b.to(torch::kFloat64), 1, 1);
      const torch::Tensor y = nn::UpsampleConv3x3(x, taps, b);
      ASSERT_EQ(y.sizes(), exact.sizes());
      if (s.h * s.w > 1) {
        EXPECT_EQ(y.is_contiguous(), !channels_last);
        EXPECT_EQ(y.is_contiguous(torch::MemoryFormat::ChannelsLast), channels_last);
      }
      const double scale = exact.abs().max().item<double>();
      const double err = (y.to(torch::kFloat64) - exact).abs().max().item<double>();
      std::printf("[ sub-pixel ] %ldx%ldx%ldx%ld -> %ld %s: max error %.2e, outputs up to %.1f\n",
                  s.batch, s.in, s.h, s.w, s.out, channels_last ? "nhwc" : "nchw", err, scale);
      EXPECT_LE(err, 1e-5 * (1 + scale));
    }
  }
  // Without a bias.
  const torch::Tensor x = torch::randn({1, 4, 5, 3}), w = torch::randn({6, 4, 3, 3});
  EXPECT_TRUE(torch::allclose(nn::UpsampleConv3x3(x, nn::UpsampleConvWeights(w), {}),
                              torch::conv2d(Upsampled(x), w, {}, 1, 1), 1e-4, 1e-4));
}

TEST_F(CpuKernelPathsTest, LayersUpsampleSubpixelOnlyWhereTheModeAndTheirShapeSay) {
  torch::manual_seed(4);
  nn::Conv2d conv(8, 6, 3), strided(8, 6, 3, /*stride=*/2);
  {
    torch::NoGradGuard no_grad;
    for (nn::Conv2d* c : {&conv, &strided}) {
      c->get()->weight.copy_(torch::randn({6, 8, 3, 3}).mul_(0.2));
      c->get()->bias.copy_(torch::randn({6}));
    }
  }
  const torch::Tensor x = torch::randn({1, 8, 5, 7});
  const torch::Tensor direct = torch::conv2d(Upsampled(x), conv->weight, conv->bias, 1, 1);
  nn::SetUpsampleConv(nn::UpsampleConv::kSubpixel);
  {
    torch::NoGradGuard no_grad;  // not inference mode (training's evaluation): the direct path
    EXPECT_TRUE(torch::equal(conv->ForwardUpsampled2x(x), direct));
  }
  c10::InferenceMode guard;
  const torch::Tensor subpixel = conv->ForwardUpsampled2x(x);
  EXPECT_FALSE(torch::equal(subpixel, direct));
  EXPECT_TRUE(torch::allclose(subpixel, direct, 1e-4, 1e-4));
  // Not a 3x3 stride-1 layer: upsampled, then its own convolution.
  EXPECT_TRUE(torch::equal(strided->ForwardUpsampled2x(x), strided(Upsampled(x))));
  // New weights: new taps.
  conv->weight = conv->weight * 2;
  EXPECT_TRUE(torch::allclose(conv->ForwardUpsampled2x(x),
                              torch::conv2d(Upsampled(x), conv->weight, conv->bias, 1, 1), 1e-4,
                              1e-4));
  nn::SetUpsampleConv(nn::UpsampleConv::kDirect);
  EXPECT_TRUE(torch::equal(conv->ForwardUpsampled2x(x), conv(Upsampled(x))));
}

TEST_F(CpuKernelPathsTest, AutoUpsamplesSubpixelWhereMeasuredFaster) {
  const double speedup = nn::MeasuredSubpixelSpeedup(512);
  std::printf("[ sub-pixel ] 512 channels: %.2fx upsampling then convolving here\n", speedup);
  EXPECT_GT(speedup, 0.0);
  EXPECT_EQ(nn::MeasuredSubpixelSpeedup(512), speedup);  // measured once
  EXPECT_EQ(nn::UsesSubpixelUpsample(512), speedup >= nn::kSubpixelMinSpeedup);
  nn::SetUpsampleConv(nn::UpsampleConv::kDirect);
  EXPECT_FALSE(nn::UsesSubpixelUpsample(512));
  nn::SetUpsampleConv(nn::UpsampleConv::kSubpixel);
  EXPECT_TRUE(nn::UsesSubpixelUpsample(512));
}

TEST_F(CpuKernelPathsTest, OneDnnLinearEqualsTheBlasProduct) {
  c10::InferenceMode guard;
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({12, 40}).mul_(0.1), b = torch::randn({12});
  // One row, a batch of sequences, a transposed (non-contiguous) input, no bias.
  const std::vector<torch::Tensor> inputs = {torch::randn({1, 40}), torch::randn({2, 77, 40}),
                                             torch::randn({40, 9}).t(),
                                             torch::randn({3, 1, 5, 40})};
  for (const torch::Tensor& x : inputs) {
    for (const bool with_bias : {true, false}) {
      const torch::Tensor exact =
          torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64),
                        with_bias ? b.to(torch::kFloat64) : torch::Tensor());
      const torch::Tensor y = nn::OneDnnLinear(x, w, with_bias ? b : torch::Tensor());
      ASSERT_EQ(y.sizes(), exact.sizes());
      EXPECT_LE((y.to(torch::kFloat64) - exact).abs().max().item<double>(), 1e-5);
    }
  }
}

TEST_F(CpuKernelPathsTest, LinearLayersTakeTheModeInForce) {
  torch::manual_seed(6);
  const int threads = at::get_num_threads();
  at::set_num_threads(2);      // on one, LibTorch runs small 1x1 convolutions through the BLAS too
  nn::Linear linear(512, 24);  // long rows: the two libraries' summation orders differ somewhere
  {
    torch::NoGradGuard no_grad;
    linear->weight.copy_(torch::randn({24, 512}).mul_(0.05));
    linear->bias.copy_(torch::randn({24}));
  }
  const torch::Tensor x = torch::randn({3, 50, 512});
  const torch::Tensor blas = torch::linear(x, linear->weight, linear->bias);
  nn::SetCpuLinear(nn::CpuLinear::kOneDnn);
  EXPECT_TRUE(torch::equal(linear(x), blas));  // not inference mode (training): torch::linear
  c10::InferenceMode guard;
  const torch::Tensor onednn = linear(x);
  EXPECT_FALSE(torch::equal(onednn, blas));  // another summation order: oneDNN's, not the BLAS's
  EXPECT_TRUE(torch::allclose(onednn, blas, 1e-4, 1e-5));
  EXPECT_TRUE(torch::equal(onednn, nn::OneDnnLinear(x, linear->weight, linear->bias)));
  nn::SetCpuLinear(nn::CpuLinear::kBlas);
  EXPECT_TRUE(torch::equal(linear(x), blas));
  nn::SetCpuLinear(nn::CpuLinear::kAuto);
  const double speedup = nn::MeasuredOneDnnLinearSpeedup();
  std::printf("[ linear ] oneDNN %.2fx the BLAS here: %s\n", speedup,
              nn::CpuLinearName(nn::ResolvedCpuLinear()));
  EXPECT_GT(speedup, 0.0);
  EXPECT_EQ(nn::ResolvedCpuLinear(),
            speedup >= nn::kOneDnnLinearMinSpeedup ? nn::CpuLinear::kOneDnn : nn::CpuLinear::kBlas);
  at::set_num_threads(threads);
}

}  // namespace
}  // namespace sd
