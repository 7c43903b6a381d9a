// The noise schedule and DDPM sampler against ../shared/golden/ddpm.safetensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nodes/schedulers/ddpm.h"
#include "tests/golden/golden_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

class DdpmGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { golden_ = new std::map<std::string, torch::Tensor>(testing::ReadGolden("ddpm.safetensors")); }
  static void TearDownTestSuite() { delete golden_; }
  static const torch::Tensor& G(const std::string& k) { return golden_->at(k); }
  static std::map<std::string, torch::Tensor>* golden_;
};
std::map<std::string, torch::Tensor>* DdpmGoldenTest::golden_;

std::vector<int64_t> Vec(const torch::Tensor& t) {
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

TEST_F(DdpmGoldenTest, AlphasCumprod) {
  NoiseSchedule s = NoiseSchedule::ScaledLinear();
  EXPECT_LE(testing::Compare(s.alphas_cumprod, G("alphas_cumprod")).max_abs, 1e-7);
}

TEST_F(DdpmGoldenTest, TimestepsAndStrength) {
  int checked = 0;
  for (int n : {50, 20, 7}) {
    EXPECT_EQ(DdpmTimesteps(n), Vec(G("timesteps.n" + std::to_string(n)))) << n;
    for (int s : {80, 60, 30}) {
      const std::string key = "timesteps.n" + std::to_string(n) + ".strength" + std::to_string(s);
      EXPECT_EQ(KeepForStrength(DdpmTimesteps(n), s / 100.0), Vec(G(key))) << key;
      auto sampler = DdpmSampler::Create(NoiseSchedule::ScaledLinear(), n, s / 100.0);
      ASSERT_TRUE(sampler.ok());
      EXPECT_EQ((*sampler)->timesteps(), Vec(G(key)));
      ++checked;
    }
  }
  EXPECT_EQ(checked, 9);
}

TEST_F(DdpmGoldenTest, StepsWithGivenNoise) {
  auto sampler = DdpmSampler::Create(NoiseSchedule::ScaledLinear(), 50);
  ASSERT_TRUE(sampler.ok());
  for (int t : {980, 780, 20, 0}) {
    const std::string p = "step.n50.t" + std::to_string(t) + ".";
    auto out = (*sampler)->Step(G(p + "latent"), G(p + "eps"), t, G(p + "noise"));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_LE(testing::Report("ddpm step t=" + std::to_string(t), "f32", *out, G(p + "out")).max_abs, 1e-4);
    EXPECT_EQ((*sampler)->NeedsNoise(t), t > 0);
  }
  // No noise at t = 0: an undefined noise tensor is fine there.
  EXPECT_TRUE((*sampler)->Step(G("step.n50.t0.latent"), G("step.n50.t0.eps"), 0, torch::Tensor()).ok());
}

TEST_F(DdpmGoldenTest, AddNoise) {
  NoiseSchedule s = NoiseSchedule::ScaledLinear();
  for (int t : {0, 600, 999}) {
    const std::string p = "add_noise.t" + std::to_string(t) + ".";
    auto out = AddNoise(s, G(p + "x0"), t, G(p + "noise"));
    ASSERT_TRUE(out.ok());
    EXPECT_LE(testing::Report("add_noise t=" + std::to_string(t), "f32", *out, G(p + "out")).max_abs, 1e-4);
  }
}

TEST(DdpmTest, BadArgumentsAreClearErrors) {
  NoiseSchedule s = NoiseSchedule::ScaledLinear();
  EXPECT_THAT(std::string(DdpmSampler::Create(s, 0).status().message()), HasSubstr("steps must be between 1 and 1000"));
  EXPECT_THAT(std::string(DdpmSampler::Create(s, 10, 1.5).status().message()), HasSubstr("strength must be in (0, 1]"));
  EXPECT_THAT(std::string(DdpmSampler::Create(s, 3, 0.1).status().message()), HasSubstr("keeps none"));
  auto sampler = *DdpmSampler::Create(s, 10);
  torch::Tensor x = torch::zeros({1, 4, 8, 8});
  EXPECT_THAT(std::string(sampler->Step(x, torch::zeros({1, 4, 8, 9}), 900, x).status().message()),
              HasSubstr("one shape"));
  EXPECT_THAT(std::string(sampler->Step(x, x, 900, torch::Tensor()).status().message()), HasSubstr("noise"));
  EXPECT_THAT(std::string(sampler->Step(x, x, 1000, x).status().message()), HasSubstr("outside [0, 1000)"));
  torch::Tensor nan = x.clone();
  nan[0][0][0][0] = std::nan("");
  EXPECT_THAT(std::string(sampler->Step(nan, x, 900, x).status().message()), HasSubstr("NaN"));
  EXPECT_EQ(AddNoise(s, x, -1, x).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sd
