// Winograd F(4x4, 3x3) convolutions (nodes/models/winograd_conv.h): against a float64 direct
// convolution on shapes with partial tiles, one-pixel images, batches and unequal channel counts;
// as a layer (Conv2d::AllowWinograd) in each mode; and how auto decides.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "nodes/models/batched_matmul.h"
#include "nodes/models/layers.h"
#include "nodes/models/linear_cpu.h"
#include "nodes/models/winograd_conv.h"
#include "tests/tiny_unet.h"

namespace sd {
namespace {

struct Shape {
  int64_t batch, in, h, w, out;
};

class WinogradTest : public ::testing::Test {
 protected:
  void TearDown() override {
    nn::SetWinogradMode(nn::WinogradMode::kAuto);
    nn::SetCpuLinear(nn::CpuLinear::kAuto);
  }
  // The ways this build can run the 36 products (winograd_conv.h): the BLAS, and oneDNN's batched
  // matmul where the build has oneDNN. Each as linear layers would choose it.
  static std::vector<nn::CpuLinear> ProductPaths() {
    std::vector<nn::CpuLinear> paths = {nn::CpuLinear::kBlas};
    if (nn::HaveOneDnnBatchedMatmul()) paths.push_back(nn::CpuLinear::kOneDnn);
    return paths;
  }
};

TEST_F(WinogradTest, EqualsTheDirectConvolutionWithinF32Rounding) {
  c10::InferenceMode guard;
  for (const nn::CpuLinear products : ProductPaths()) {
    nn::SetCpuLinear(products);
    ASSERT_EQ(nn::WinogradProductsByOneDnn(), products == nn::CpuLinear::kOneDnn);
    const uint64_t onednn_flops = nn::OneDnnBatchedMatmulFlops();
    torch::manual_seed(1);
    // Partial tiles at both edges, images smaller than a tile, and a band loop of many tile rows.
    for (const Shape s : {Shape{2, 5, 7, 9, 11}, Shape{1, 3, 1, 1, 4}, Shape{1, 8, 4, 4, 8},
                          Shape{1, 16, 13, 6, 3}, Shape{1, 32, 130, 66, 24}}) {
      const torch::Tensor x = torch::randn({s.batch, s.in, s.h, s.w});
      const torch::Tensor w = torch::randn({s.out, s.in, 3, 3}).mul_(0.2),
                          b = torch::randn({s.out});
      const torch::Tensor exact =
          torch::conv2d(x.to(torch::kFloat64), w.to(torch::kFloat64), b.to(torch::kFloat64), 1, 1);
      const torch::Tensor y = nn::WinogradConv3x3(x, nn::WinogradWeights(w), b);
      ASSERT_EQ(y.sizes(), exact.sizes());
      EXPECT_TRUE(y.is_contiguous());
      const double scale = exact.abs().max().item<double>();
      const double err = (y.to(torch::kFloat64) - exact).abs().max().item<double>();
      const double direct =
          (torch::conv2d(x, w, b, 1, 1).to(torch::kFloat64) - exact).abs().max().item<double>();
      std::printf(
          "[ winograd ] products by %s: %ldx%ldx%ldx%ld -> %ld: max error %.2e (direct f32 %.2e), "
          "outputs up to %.1f\n",
          nn::CpuLinearName(products), s.batch, s.in, s.h, s.w, s.out, err, direct, scale);
      EXPECT_LE(err, 1e-5 * (1 + scale));
    }
    // Without a bias.
    const torch::Tensor x = torch::randn({1, 4, 9, 9}), w = torch::randn({6, 4, 3, 3});
    EXPECT_TRUE(torch::allclose(nn::WinogradConv3x3(x, nn::WinogradWeights(w), {}),
                                torch::conv2d(x, w, {}, 1, 1), 1e-4, 1e-4));
    // The products ran the way chosen.
    EXPECT_EQ(nn::OneDnnBatchedMatmulFlops() > onednn_flops, products == nn::CpuLinear::kOneDnn);
  }
}

// The transformed weights are G g Gᵀ rounded once from double: against the same product in
// float64, over more kernels than one block of the transform and a partial last block.
TEST_F(WinogradTest, TransformedWeightsAreGgGtRoundedOnce) {
  c10::InferenceMode guard;
  torch::manual_seed(3);
  const torch::Tensor w = torch::randn({7, 19, 3, 3});  // 133 kernels: two full blocks and a part
  const torch::Tensor g =
      torch::tensor({1.0 / 4, 0.0, 0.0, -1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6,
                     1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 24, -1.0 / 12, 1.0 / 6, 0.0, 0.0, 1.0},
                    torch::kFloat64)
          .view({6, 3});
  const torch::Tensor exact =
      torch::matmul(torch::matmul(g, w.to(torch::kFloat64)), g.t());  // [7, 19, 6, 6]
  const torch::Tensor u = nn::WinogradWeights(w);                     // [36, 7, 19]
  ASSERT_EQ(u.sizes(), (std::vector<int64_t>{36, 7, 19}));
  const torch::Tensor want = exact.permute({2, 3, 0, 1}).reshape({36, 7, 19});
  const double err = (u.to(torch::kFloat64) - want).abs().max().item<double>();
  EXPECT_LE(err, 1e-7 * (1 + want.abs().max().item<double>()));
}

// The UNet lets its convolutions run by Winograd (where the rule allows: forced here on every 3x3
// layer of a tiny UNet): the same prediction as the direct convolutions up to f32 rounding.
TEST_F(WinogradTest, TheUNetRunsItsConvolutionsByWinogradToTheSameResult) {
  c10::InferenceMode guard;
  testing::RandomTinyUNet unet;
  nn::SetWinogradMode(nn::WinogradMode::kOff);
  auto direct = unet.Predict();
  nn::SetWinogradMode(nn::WinogradMode::kOn);
  auto winograd = unet.Predict();
  ASSERT_TRUE(direct.ok() && winograd.ok());
  const double rel = testing::RandomTinyUNet::RelativeDifference(*direct, *winograd);
  std::printf("[ winograd ] tiny UNet: relative difference %.2e\n", rel);
  EXPECT_FALSE(torch::equal(*winograd, *direct)) << "the convolutions ran another way";
  EXPECT_LT(rel, 1e-5);
}

// Each Winograd convolution reports the FLOPs it saved against the direct one (sd-bench counts a
// CFG step at direct-convolution FLOPs): 8 -> 8 channels on 8x8, 2x2 tiles.
TEST_F(WinogradTest, ReportsTheFlopsItSavedAgainstTheDirectConvolution) {
  c10::InferenceMode guard;
  const torch::Tensor x = torch::randn({1, 8, 8, 8}), w = torch::randn({8, 8, 3, 3});
  const int64_t before = nn::WinogradFlopsSaved();
  (void)nn::WinogradConv3x3(x, nn::WinogradWeights(w), {});
  const int64_t direct = 2 * 9 * 8 * 8 * 8 * 8, products = 2 * 36 * 8 * 8 * 2 * 2;
  EXPECT_EQ(nn::WinogradFlopsSaved() - before, direct - products);
}

// The products' measurement is kept apart per way of running them: a machine's record for one does
// not decide the other.
TEST_F(WinogradTest, EachWayOfRunningTheProductsIsMeasuredApart) {
  EXPECT_NE(nn::WinogradMeasurement(512, 256, false), nn::WinogradMeasurement(512, 256, true));
  EXPECT_NE(nn::WinogradMeasurement(512, 256, true), nn::WinogradMeasurement(256, 512, true));
}

TEST_F(WinogradTest, LayersRunItOnlyWhereAllowedAndAsTheModeSays) {
  c10::InferenceMode guard;
  torch::manual_seed(2);
  nn::Conv2d conv(8, 8, 3), strided(8, 8, 3, /*stride=*/2);
  for (nn::Conv2d* c : {&conv, &strided}) {
    c->get()->weight.copy_(torch::randn({8, 8, 3, 3}).mul_(0.2));
    c->get()->bias.copy_(torch::randn({8}));
  }
  const torch::Tensor x = torch::randn({1, 8, 12, 12});
  const torch::Tensor direct = torch::conv2d(x, conv->weight, conv->bias, 1, 1);
  nn::SetWinogradMode(nn::WinogradMode::kOn);
  EXPECT_TRUE(torch::equal(conv(x), direct));  // not allowed: direct
  conv->AllowWinograd();
  strided->AllowWinograd();  // not a 3x3 stride-1 layer: stays direct
  const torch::Tensor by_winograd = conv(x);
  EXPECT_FALSE(torch::equal(by_winograd, direct));
  EXPECT_TRUE(torch::allclose(by_winograd, direct, 1e-4, 1e-4));
  EXPECT_TRUE(torch::equal(strided(x), torch::conv2d(x, strided->weight, strided->bias, 2, 1)));
  // Channels-last inputs take the direct path (Winograd reads NCHW planes).
  EXPECT_TRUE(torch::equal(conv(x.contiguous(torch::MemoryFormat::ChannelsLast)),
                           torch::conv2d(x.contiguous(torch::MemoryFormat::ChannelsLast),
                                         conv->weight, conv->bias, 1, 1)));
  // New weights: transformed again.
  conv->weight = conv->weight * 2;
  EXPECT_TRUE(
      torch::allclose(conv(x), torch::conv2d(x, conv->weight, conv->bias, 1, 1), 1e-4, 1e-4));
  nn::SetWinogradMode(nn::WinogradMode::kOff);
  EXPECT_TRUE(torch::equal(conv(x), torch::conv2d(x, conv->weight, conv->bias, 1, 1)));
}

TEST_F(WinogradTest, AutoUsesItWhereMeasuredFaster) {
  for (const auto& [in, out] : {std::pair<int64_t, int64_t>{64, 64}, {128, 128}, {128, 3}}) {
    const double speedup = nn::MeasuredWinogradSpeedup(in, out);
    std::printf("[ winograd ] %ld -> %ld channels: %.2fx the direct convolution's speed here\n", in,
                out, speedup);
    EXPECT_GT(speedup, 0.0);
    EXPECT_EQ(nn::MeasuredWinogradSpeedup(in, out), speedup);  // measured once
    nn::SetWinogradMode(nn::WinogradMode::kAuto);
    EXPECT_EQ(nn::UsesWinograd(in, out, 256, 256),
              std::min(in, out) >= nn::kWinogradMinChannels && speedup >= nn::kWinogradMinSpeedup);
    EXPECT_FALSE(nn::UsesWinograd(in, out, 32, 64));  // a small image
    EXPECT_FALSE(nn::UsesWinograd(in, out, 64, 64));  // too little work at these widths
    nn::SetWinogradMode(nn::WinogradMode::kOn);
    EXPECT_TRUE(nn::UsesWinograd(in, out, 8, 8));
    nn::SetWinogradMode(nn::WinogradMode::kOff);
    EXPECT_FALSE(nn::UsesWinograd(in, out, 512, 512));
  }
}

}  // namespace
}  // namespace sd
