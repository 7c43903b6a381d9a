// The transformer blocks' feed-forward gate (nodes/kernels/geglu_cpu.h): value * gelu(gate) with
// our own erf, against the exact GELU in float64 over the range activations take and beyond
// (0, tiny, huge and non-finite values, rows whose width is not a multiple of a vector), the
// row layout the projection writes, every thread count; and a tiny UNet run with it against the
// same UNet on LibTorch's gelu (SD_CPU_GEGLU=aten).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "nodes/kernels/geglu_cpu.h"
#include "tests/tiny_unet.h"

namespace sd {
namespace {

torch::Tensor ExactGelu(const torch::Tensor& x) {
  const torch::Tensor d = x.to(torch::kFloat64);
  return 0.5 * d * (1 + torch::erf(d / std::sqrt(2.0)));
}

TEST(GegluTest, GeluIsWithinItsBoundOfTheExactFunction) {
  torch::Tensor x =
      torch::cat({torch::linspace(-12, 12, 200001), torch::randn({100000}).mul_(3),
                  torch::tensor({0.0f, -0.0f, 1e-30f, -1e-30f, 1e4f, -1e4f, 3e38f, -3e38f})});
  torch::Tensor y = torch::empty_like(x);
  kernels::GeluRun(x.data_ptr<float>(), x.numel(), y.data_ptr<float>());
  const torch::Tensor want = ExactGelu(x);
  const torch::Tensor err =
      (y.to(torch::kFloat64) - want).abs() / (1 + x.to(torch::kFloat64).abs());
  const double worst = err.max().item<double>();
  const double aten =
      ((torch::gelu(x).to(torch::kFloat64) - want).abs() / (1 + x.to(torch::kFloat64).abs()))
          .max()
          .item<double>();
  std::printf("[ geglu ] largest |gelu error| / (1 + |x|): %.2e (LibTorch's f32 gelu: %.2e)\n",
              worst, aten);
  EXPECT_LT(worst, 2e-7);
  // Non-finite values stay non-finite.
  const float special[] = {std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::infinity()};
  float out[2];
  kernels::GeluRun(special, 2, out);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], std::numeric_limits<float>::infinity());
}

TEST(GegluTest, GatesRowsOfValuesThenGates) {
  torch::manual_seed(1);
  for (const int64_t width : {1, 7, 16, 37, 1280}) {
    for (const int threads : {1, 2, 3}) {
      const torch::Tensor in = torch::randn({5, 2 * width}).mul_(2);
      torch::Tensor out = torch::full({5, width}, -1.0f);
      kernels::Geglu(in.data_ptr<float>(), 5, width, out.data_ptr<float>(), threads);
      const torch::Tensor value = in.slice(1, 0, width).to(torch::kFloat64);
      const torch::Tensor gate = in.slice(1, width, 2 * width).to(torch::kFloat64);
      const torch::Tensor want = value * ExactGelu(gate);
      // The gelu's bound times the value, and the product's own rounding.
      const torch::Tensor bound = 2e-7 * value.abs() * (1 + gate.abs()) + 1e-7 * want.abs();
      EXPECT_TRUE(((out.to(torch::kFloat64) - want).abs() <= bound).all().item<bool>())
          << "width " << width << ", " << threads << " threads";
    }
  }
}

TEST(GegluTest, TheUNetGatesThisWayToTheSameResult) {
  c10::InferenceMode guard;
  testing::RandomTinyUNet unet;
  setenv("SD_CPU_GEGLU", "aten", 1);
  auto aten = unet.Predict();
  unsetenv("SD_CPU_GEGLU");
  auto fused = unet.Predict();
  ASSERT_TRUE(aten.ok() && fused.ok());
  const double rel = testing::RandomTinyUNet::RelativeDifference(*aten, *fused);
  std::printf("[ geglu ] tiny UNet: relative difference %.2e\n", rel);
  EXPECT_GT(rel, 0) << "the fused gate ran (its erf is not Sleef's, so the bits differ)";
  EXPECT_LT(rel, 1e-5);
}

}  // namespace
}  // namespace sd
