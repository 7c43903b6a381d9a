// Convolutions on plain weights by oneDNN (nodes/models/plain_conv.h, onednn_conv.h): against a
// float64 convolution over kernels 1 and 3, strides 1 and 2, batches, odd and one-pixel images,
// with and without a bias; as a layer in each mode; in a tiny UNet; and how auto decides.
#include "nodes/models/plain_conv.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>
#include <vector>

#include "nodes/models/layers.h"
#include "nodes/models/onednn_conv.h"
#include "tests/tiny_unet.h"

namespace sd {
namespace {

class PlainConvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!nn::HaveOneDnnConv()) GTEST_SKIP() << "built without oneDNN (SD_WITH_ONEDNN=OFF)";
  }
  void TearDown() override { nn::SetPlainConvMode(nn::PlainConvMode::kAuto); }
};

struct Case {
  int64_t batch, in, out, h, w, kernel, stride;
  bool bias;
};

TEST_F(PlainConvTest, EqualsTheConvolutionWithinF32Rounding) {
  c10::InferenceMode guard;
  torch::manual_seed(1);
  for (const Case c : {Case{1, 16, 24, 8, 8, 3, 1, true}, Case{2, 5, 7, 9, 11, 3, 1, true},
                       Case{1, 32, 16, 7, 5, 3, 2, true}, Case{2, 24, 40, 6, 10, 1, 1, true},
                       Case{1, 8, 8, 1, 1, 3, 1, false}, Case{1, 64, 32, 16, 16, 3, 1, false}}) {
    const nn::PlainConvLayer layer{c.in, c.out, c.kernel, c.stride, c.h, c.w};
    const torch::Tensor x = torch::randn({c.batch, c.in, c.h, c.w});
    const torch::Tensor w = torch::randn({c.out, c.in, c.kernel, c.kernel}).mul_(0.2);
    const torch::Tensor b = c.bias ? torch::randn({c.out}) : torch::Tensor();
    const torch::Tensor exact =
        torch::conv2d(x.to(torch::kFloat64), w.to(torch::kFloat64),
                      c.bias ? b.to(torch::kFloat64) : torch::Tensor(), c.stride, c.kernel / 2);
    const uint64_t flops = nn::OneDnnConvFlops();
    const torch::Tensor y = nn::PlainConv(x, w, b, c.stride);
    ASSERT_EQ(y.sizes(), exact.sizes()) << nn::PlainConvLayerText(layer);
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_EQ(nn::OneDnnConvFlops() - flops,
              static_cast<uint64_t>(2 * exact.numel() * c.in * c.kernel * c.kernel));
    const double scale = exact.abs().max().item<double>();
    const double err = (y.to(torch::kFloat64) - exact).abs().max().item<double>();
    std::printf("[ plain conv ] %s, batch %ld%s (%s): max error %.2e, outputs up to %.1f\n",
                nn::PlainConvLayerText(layer).c_str(), c.batch, c.bias ? "" : ", no bias",
                nn::OneDnnConvImplementation(
                    {c.batch, c.in, c.out, c.h, c.w, c.kernel, c.stride, c.kernel / 2, c.bias})
                    .c_str(),
                err, scale);
    EXPECT_LE(err, 1e-5 * (1 + scale)) << nn::PlainConvLayerText(layer);
  }
}

// oneDNN sizes a kernel's scratch space for the threads it is made with: a kernel made on a thread
// of one OpenMP thread (the semantic tests run pictures that way, side by side) is not run on more.
TEST_F(PlainConvTest, KernelsMadeForOneThreadAreNotRunOnMore) {
  c10::InferenceMode guard;
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({1, 96, 16, 16});
  const torch::Tensor w = torch::randn({96, 96, 3, 3}).mul_(0.05), b = torch::randn({96});
  torch::Tensor alone;
  std::thread([&] {
    c10::InferenceMode thread_guard;
    at::set_num_threads(1);
    alone = nn::PlainConv(x, w, b, 1);
  }).join();
  const int threads = at::get_num_threads();
  at::set_num_threads(std::max(threads, 4));
  const torch::Tensor together = nn::PlainConv(x, w, b, 1);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::allclose(alone, together, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(together, torch::conv2d(x, w, b, 1, 1), 1e-4, 1e-4));
}

TEST_F(PlainConvTest, LayersRunItAsTheModeSays) {
  c10::InferenceMode guard;
  torch::manual_seed(2);
  nn::Conv2d conv(8, 8, 3), strided(8, 8, 3, /*stride=*/2), pointwise(8, 8, 1);
  for (nn::Conv2d* c : {&conv, &strided, &pointwise}) {
    c->get()->weight.normal_(0, 0.2);
    c->get()->bias.normal_(0, 1);
  }
  const torch::Tensor x = torch::randn({1, 8, 12, 12});
  nn::SetPlainConvMode(nn::PlainConvMode::kOn);
  for (const auto& [layer, stride] :
       {std::pair<nn::Conv2d*, int64_t>{&conv, 1}, {&strided, 2}, {&pointwise, 1}}) {
    const nn::Conv2dImpl& m = *layer->get();
    const torch::Tensor want = torch::conv2d(x, m.weight, m.bias, stride, m.weight.size(2) / 2);
    const uint64_t flops = nn::OneDnnConvFlops();
    EXPECT_TRUE(torch::allclose((*layer)(x), want, 1e-4, 1e-4));
    EXPECT_GT(nn::OneDnnConvFlops(), flops) << "ran by oneDNN on plain weights";
  }
  // Channels-last inputs and training (no inference mode) keep LibTorch's convolution.
  const uint64_t flops = nn::OneDnnConvFlops();
  const torch::Tensor nhwc = x.contiguous(torch::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(torch::equal(conv(nhwc), torch::conv2d(nhwc, conv->weight, conv->bias, 1, 1)));
  EXPECT_EQ(nn::OneDnnConvFlops(), flops);
  nn::SetPlainConvMode(nn::PlainConvMode::kOff);
  EXPECT_TRUE(torch::equal(conv(x), torch::conv2d(x, conv->weight, conv->bias, 1, 1)));
  EXPECT_EQ(nn::OneDnnConvFlops(), flops);
}

TEST_F(PlainConvTest, TheUNetRunsItsSmallConvolutionsThisWayToTheSameResult) {
  c10::InferenceMode guard;
  testing::RandomTinyUNet unet;
  nn::SetPlainConvMode(nn::PlainConvMode::kOff);
  auto libtorch = unet.Predict();
  nn::SetPlainConvMode(nn::PlainConvMode::kOn);
  const uint64_t flops = nn::OneDnnConvFlops();
  auto plain = unet.Predict();
  ASSERT_TRUE(libtorch.ok() && plain.ok());
  EXPECT_GT(nn::OneDnnConvFlops(), flops);
  const double rel = testing::RandomTinyUNet::RelativeDifference(*libtorch, *plain);
  std::printf("[ plain conv ] tiny UNet: relative difference %.2e\n", rel);
  EXPECT_LT(rel, 1e-5);
}

TEST_F(PlainConvTest, AutoUsesItWhereMeasuredFaster) {
  const nn::PlainConvLayer layer{128, 128, 3, 1, 8, 8};
  const double speedup = nn::MeasuredPlainConvSpeedup(layer);
  std::printf("[ plain conv ] %s: %.2fx LibTorch's speed here\n",
              nn::PlainConvLayerText(layer).c_str(), speedup);
  EXPECT_GT(speedup, 0.0);
  EXPECT_EQ(nn::MeasuredPlainConvSpeedup(layer), speedup);  // measured once
  nn::SetPlainConvMode(nn::PlainConvMode::kAuto);
  EXPECT_EQ(nn::UsesPlainConv(layer), speedup >= nn::kPlainConvMinSpeedup);
  EXPECT_FALSE(nn::UsesPlainConv({128, 128, 3, 1, 64, 64}));  // a large image
  EXPECT_FALSE(nn::UsesPlainConv({64, 64, 3, 1, 8, 8}));      // few channels
  EXPECT_FALSE(nn::UsesPlainConv({128, 128, 5, 1, 8, 8}));    // a kernel it does not take
  nn::SetPlainConvMode(nn::PlainConvMode::kOn);
  EXPECT_TRUE(nn::UsesPlainConv({8, 8, 3, 1, 64, 64}));
  nn::SetPlainConvMode(nn::PlainConvMode::kOff);
  EXPECT_FALSE(nn::UsesPlainConv(layer));
  // Each layer shape is measured apart.
  EXPECT_NE(nn::PlainConvMeasurement(layer), nn::PlainConvMeasurement({128, 128, 3, 2, 8, 8}));
  EXPECT_NE(nn::PlainConvMeasurement(layer), nn::PlainConvMeasurement({128, 128, 1, 1, 8, 8}));
  EXPECT_NE(nn::PlainConvMeasurement(layer), nn::PlainConvMeasurement({128, 128, 3, 1, 8, 16}));
}

}  // namespace
}  // namespace sd
