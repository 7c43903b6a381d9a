// The samplers beyond DDPM: conventions of diffusers / k-diffusion, x0 recovery with the true noise,
// determinism, and noise consumption of the ancestral ones.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nodes/schedulers/ddpm.h"
#include "nodes/schedulers/samplers.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

const NoiseSchedule& Schedule() {
  static const NoiseSchedule* s = new NoiseSchedule(NoiseSchedule::ScaledLinear());
  return *s;
}

SamplerSpec Spec(const std::string& name, bool karras = false, double eta = 0) { return SamplerSpec{name, karras, eta}; }

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(SamplersTest, TimestepConventions) {
  auto ddim = *SamplerTimesteps(Schedule(), Spec("ddim"), 50);
  EXPECT_EQ(ddim.size(), 50u);
  EXPECT_EQ(ddim.front(), 981);  // "leading" spacing, steps_offset 1
  EXPECT_EQ(ddim.back(), 1);
  auto euler = *SamplerTimesteps(Schedule(), Spec("euler"), 10);
  EXPECT_EQ(euler.size(), 10u);
  EXPECT_DOUBLE_EQ(euler.front(), 999);  // linspace(0, 999, N) reversed
  EXPECT_DOUBLE_EQ(euler[1], 888);
  EXPECT_DOUBLE_EQ(euler.back(), 0);
  auto karras = *SamplerTimesteps(Schedule(), Spec("dpmpp_2m", true), 10);
  EXPECT_NEAR(karras.front(), 999, 1e-6);  // sigma_max
  EXPECT_NEAR(karras.back(), 0, 1e-6);     // sigma_min
  EXPECT_GT(karras[1], euler[1]);          // Karras spends more steps at low noise
  auto ddpm = *SamplerTimesteps(Schedule(), Spec("ddpm"), 20);
  EXPECT_EQ(ddpm, std::vector<double>({950, 900, 850, 800, 750, 700, 650, 600, 550, 500, 450, 400, 350, 300, 250, 200,
                                       150, 100, 50, 0}));
  EXPECT_EQ(SamplerTimesteps(Schedule(), Spec("euler"), 50, 0.6)->size(), 30u);
}

TEST(SamplersTest, BadSpecsAreRefused) {
  EXPECT_THAT(std::string(SamplerTimesteps(Schedule(), Spec("plms"), 10).status().message()),
              HasSubstr("unknown sampler 'plms' (available: ddpm, ddim, euler, euler_a, dpmpp_2m)"));
  EXPECT_THAT(std::string(SamplerTimesteps(Schedule(), Spec("ddim", true), 10).status().message()), HasSubstr("Karras"));
  EXPECT_THAT(std::string(SamplerTimesteps(Schedule(), Spec("ddim", false, 2), 10).status().message()), HasSubstr("eta"));
  torch::Tensor x = torch::zeros({1, 4, 8, 8});
  EXPECT_THAT(std::string(SamplerStep(Schedule(), Spec("euler"), 10, 123.4, x, x, {}, {}).status().message()),
              HasSubstr("not one of the 10-step schedule's timesteps"));
  EXPECT_THAT(std::string(SamplerStep(Schedule(), Spec("euler_a"), 10, 999, x, x, {}, {}).status().message()),
              HasSubstr("needs noise"));
}

TEST(SamplersTest, DenoisedEstimateIsX0WhenEpsIsTheTrueNoise) {
  torch::manual_seed(1);
  const torch::Tensor x0 = torch::randn({1, 4, 8, 8}), n = torch::randn({1, 4, 8, 8});
  for (const SamplerSpec& spec : {Spec("ddpm"), Spec("ddim"), Spec("euler"), Spec("euler_a"), Spec("dpmpp_2m"),
                                  Spec("euler", true), Spec("dpmpp_2m", true)}) {
    const double t = (*SamplerTimesteps(Schedule(), spec, 10))[3];
    const torch::Tensor xt = *AddNoiseAt(Schedule(), x0, t, n);
    auto r = SamplerStep(Schedule(), spec, 10, t, xt, n, torch::randn({1, 4, 8, 8}), {});
    ASSERT_TRUE(r.ok()) << spec.name << ": " << r.status();
    EXPECT_LT(MaxAbs(r->denoised, x0), 1e-4) << spec.name << (spec.karras ? " karras" : "");
  }
}

TEST(SamplersTest, DeterministicSamplersRecoverX0OverAWholeRun) {
  torch::manual_seed(2);
  const torch::Tensor x0 = torch::randn({1, 4, 8, 8}), n = torch::randn({1, 4, 8, 8});
  for (const SamplerSpec& spec : {Spec("euler"), Spec("dpmpp_2m"), Spec("euler", true), Spec("dpmpp_2m", true), Spec("ddim")}) {
    const std::vector<double> ts = *SamplerTimesteps(Schedule(), spec, 12);
    torch::Tensor x = *AddNoiseAt(Schedule(), x0, ts.front(), n), history;
    for (double t : ts) {
      auto r = SamplerStep(Schedule(), spec, 12, t, x, n, {}, history);
      ASSERT_TRUE(r.ok()) << r.status();
      x = r->latents;
      history = r->denoised;
    }
    // DDIM ends at abar[0] (SD's set_alpha_to_one = false); the k-diffusion samplers at sigma 0.
    torch::Tensor want = x0;
    if (spec.name == "ddim") {
      const double a0 = Schedule().alphas_cumprod[0].item<double>();
      want = std::sqrt(a0) * x0 + std::sqrt(1 - a0) * n;
    }
    EXPECT_LT(MaxAbs(x, want), 1e-4) << spec.name << (spec.karras ? " karras" : "");
  }
}

TEST(SamplersTest, DeterministicSamplersGiveIdenticalOutputsAndAncestralOnesConsumeNoise) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({1, 4, 8, 8}), e = torch::randn({1, 4, 8, 8});
  const torch::Tensor n1 = torch::randn({1, 4, 8, 8}), n2 = torch::randn({1, 4, 8, 8});
  for (const SamplerSpec& spec : {Spec("ddim"), Spec("euler"), Spec("dpmpp_2m"), Spec("dpmpp_2m", true)}) {
    const double t = (*SamplerTimesteps(Schedule(), spec, 8))[2];
    EXPECT_FALSE(SamplerNeedsNoise(Schedule(), spec, 8, t)) << spec.name;
    auto a = SamplerStep(Schedule(), spec, 8, t, x, e, n1, e);
    auto b = SamplerStep(Schedule(), spec, 8, t, x, e, n2, e);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(torch::equal(a->latents, b->latents)) << spec.name;
  }
  for (const SamplerSpec& spec : {Spec("euler_a"), Spec("euler_a", true), Spec("ddim", false, 1.0), Spec("ddpm")}) {
    const double t = (*SamplerTimesteps(Schedule(), spec, 8))[2];
    EXPECT_TRUE(SamplerNeedsNoise(Schedule(), spec, 8, t)) << spec.name;
    auto a = SamplerStep(Schedule(), spec, 8, t, x, e, n1, {});
    auto b = SamplerStep(Schedule(), spec, 8, t, x, e, n2, {});
    ASSERT_TRUE(a.ok() && b.ok()) << spec.name;
    EXPECT_GT(MaxAbs(a->latents, b->latents), 1e-3) << spec.name;
  }
  // Euler a's last step goes to sigma 0 and adds nothing.
  const double last = SamplerTimesteps(Schedule(), Spec("euler_a"), 8)->back();
  EXPECT_FALSE(SamplerNeedsNoise(Schedule(), Spec("euler_a"), 8, last));
}

TEST(SamplersTest, MultistepHistoryChangesDpmpp2m) {
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({1, 4, 8, 8}), e = torch::randn({1, 4, 8, 8}), h = torch::randn({1, 4, 8, 8});
  const double t = (*SamplerTimesteps(Schedule(), Spec("dpmpp_2m"), 8))[3];
  auto with = SamplerStep(Schedule(), Spec("dpmpp_2m"), 8, t, x, e, {}, h);
  auto without = SamplerStep(Schedule(), Spec("dpmpp_2m"), 8, t, x, e, {}, {});
  EXPECT_GT(MaxAbs(with->latents, without->latents), 1e-3);
}

TEST(SamplersTest, AddNoiseAtIntegerTimestepsIsAddNoise) {
  torch::manual_seed(5);
  const torch::Tensor x0 = torch::randn({1, 4, 8, 8}), n = torch::randn({1, 4, 8, 8});
  EXPECT_TRUE(torch::equal(*AddNoiseAt(Schedule(), x0, 600, n), *AddNoise(Schedule(), x0, 600, n)));
  // Fractional timesteps interpolate: between the neighbours.
  const double a = (*AddNoiseAt(Schedule(), x0, 600.5, n) - *AddNoise(Schedule(), x0, 600, n)).abs().sum().item<double>();
  const double b = (*AddNoise(Schedule(), x0, 601, n) - *AddNoise(Schedule(), x0, 600, n)).abs().sum().item<double>();
  EXPECT_GT(a, 0);
  EXPECT_LT(a, b);
}

}  // namespace
}  // namespace sd
