// ComfyUI's conventions: sampling through the node kinds SigmaSchedule, SigmaStart, SigmaStep and
// SigmaEnd, against tests/python/comfy_reference.py (ComfyUI's schedulers and k-diffusion's
// samplers written as they write them, on variance-exploding latents): the sigmas of every
// scheduler, with denoise and KSamplerAdvanced ranges, and whole sampling runs of every sampler
// with a toy model.
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "tests/node_runner.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;
using testing::OutTensor;
using testing::RunNode;

struct Case {
  std::string name, scheduler, sampler;
  int64_t steps;
  double denoise = 1.0;
  int64_t start = 0, end = 10000;
  bool full = false, add_noise = true;
  int64_t seed = 1;
};

std::vector<Case> Cases() {
  return {
      {"normal_euler", "normal", "euler", 10},
      {"karras_dpmpp", "karras", "dpmpp_2m", 12},
      {"exp_ancestral", "exponential", "euler_ancestral", 8, 1.0, 0, 10000, false, true, 5},
      {"simple_ddpm", "simple", "ddpm", 10, 1.0, 0, 10000, false, true, 3},
      {"ddim_uniform_ddim", "ddim_uniform", "ddim", 7},  // ComfyUI's stride gives 8 steps here
      {"sgm_euler", "sgm_uniform", "euler", 6},
      {"denoise", "normal", "euler", 10, 0.6},
      {"denoise_karras_dpmpp", "karras", "dpmpp_2m", 9, 0.45},
      {"leftover", "karras", "dpmpp_2m", 12, 1.0, 4, 9, false},
      {"first_half", "karras", "euler_ancestral", 12, 1.0, 0, 6, true, true, 9},
      {"no_added_noise", "simple", "euler", 10, 1.0, 3, 10000, false, false},
  };
}

nlohmann::json CasesJson() {
  nlohmann::json j = nlohmann::json::array();
  for (const Case& c : Cases()) {
    nlohmann::json o{{"name", c.name},           {"scheduler", c.scheduler},
                     {"sampler", c.sampler},     {"steps", c.steps},
                     {"denoise", c.denoise},     {"full", c.full},
                     {"add_noise", c.add_noise}, {"seed", c.seed}};
    if (c.start) o["start"] = c.start;
    if (c.end != 10000) o["end"] = c.end;
    j.push_back(o);
  }
  return j;
}

class ComfySamplingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir;
    testing::WriteFile(dir_->File("cases.json"), CasesJson().dump());
    const std::string cmd = testing::PythonScript("comfy_reference.py") + " " +
                            dir_->File("cases.json") + " " + dir_->File("ref.safetensors");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() { delete dir_; }
  static torch::Tensor Ref(const std::string& name) {
    return testing::ReadTensor(dir_->File("ref.safetensors"), name);
  }
  static absl::StatusOr<NodeOutputs> Schedule(const Case& c) {
    RunContext ctx;
    return RunNode("SigmaSchedule", ctx,
                   {{"steps", c.steps},
                    {"scheduler", c.scheduler},
                    {"denoise", c.denoise},
                    {"start", c.start},
                    {"end", c.end},
                    {"full_denoise", int64_t{c.full ? 1 : 0}}});
  }
  static testing::TempDir* dir_;
};
testing::TempDir* ComfySamplingTest::dir_;

TEST_F(ComfySamplingTest, SigmasOfEverySchedulerDenoiseAndRange) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    auto s = Schedule(c);
    ASSERT_TRUE(s.ok()) << s.status();
    const torch::Tensor ours = OutTensor(*s, "sigmas"), ref = Ref(c.name + ".sigmas");
    ASSERT_EQ(ours.sizes(), ref.sizes());
    EXPECT_TRUE(torch::allclose(ours, ref, 1e-5, 1e-7)) << ours << ref;
    EXPECT_EQ(OutTensor(*s, "timesteps").size(0), ours.size(0) - 1);
  }
}

// A whole run per case with the toy model eps(x, t) = 0.5 x + t / 1000 on the latents the UNet
// takes, at the timesteps SigmaSchedule gives; ancestral noise drawn in order from the seed, as
// ComfyUI's noise sampler does.
TEST_F(ComfySamplingTest, SamplingRunsMatchTheReference) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    RunContext ctx;
    auto s = Schedule(c);
    ASSERT_TRUE(s.ok()) << s.status();
    const torch::Tensor sigmas = OutTensor(*s, "sigmas"), ts = OutTensor(*s, "timesteps");
    const bool partial = c.start > 0 || c.denoise <= 0.9999;
    torch::Tensor x0 =
        partial ? torch::linspace(-1, 1, 256).reshape({1, 4, 8, 8}) : torch::zeros({1, 4, 8, 8});
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(c.seed));
    std::map<std::string, Value> start_in{{"latents", x0}, {"sigmas", sigmas}};
    if (c.add_noise) start_in["noise"] = at::randn({1, 4, 8, 8}, gen, torch::kFloat32);
    auto start = RunNode("SigmaStart", ctx, start_in);
    ASSERT_TRUE(start.ok()) << start.status();
    torch::Tensor x = OutTensor(*start, "latents"), history = x;
    auto step_gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(c.seed));
    for (int64_t i = 0; i < ts.size(0); ++i) {
      torch::Tensor eps = 0.5 * x + ts[i].item<float>() / 1000.0f;
      std::map<std::string, Value> in{{"latents", x}, {"eps", eps},           {"sigmas", sigmas},
                                      {"index", i},   {"sampler", c.sampler}, {"history", history}};
      if ((c.sampler == "euler_ancestral" || c.sampler == "ddpm") &&
          sigmas[i + 1].item<float>() > 0) {
        in["noise"] = at::randn({1, 4, 8, 8}, step_gen, torch::kFloat32);
      }
      auto step = RunNode("SigmaStep", ctx, in);
      ASSERT_TRUE(step.ok()) << step.status();
      x = OutTensor(*step, "latents");
      history = OutTensor(*step, "denoised");
    }
    auto end = RunNode("SigmaEnd", ctx, {{"latents", x}, {"sigmas", sigmas}});
    ASSERT_TRUE(end.ok()) << end.status();
    const torch::Tensor ours = OutTensor(*end, "latents"), ref = Ref(c.name + ".x");
    // float32 rounding of a run (the reference keeps scalars in float32 tensors, we in double).
    const double scale = ref.abs().max().item<double>();
    EXPECT_LT((ours - ref).abs().max().item<double>(), 1e-4 * (1 + scale)) << "of " << scale;
  }
}

TEST_F(ComfySamplingTest, RefusalsNameWhatIsWrong) {
  auto msg = [](const Case& c) { return std::string(Schedule(c).status().message()); };
  EXPECT_THAT(msg({"x", "beta", "euler", 10}),
              HasSubstr("unknown scheduler 'beta' (available: normal, karras"));
  EXPECT_THAT(msg({"x", "normal", "euler", 10, 1.0, 10}),
              HasSubstr("start at step 10 leaves none of the 10 steps"));
  EXPECT_THAT(msg({"x", "normal", "euler", 10, 1.5}), HasSubstr("denoise 1.5 is not in (0, 1]"));
  RunContext ctx;
  auto sigmas = OutTensor(*Schedule({"x", "normal", "euler", 4}), "sigmas");
  auto step = RunNode("SigmaStep", ctx,
                      {{"latents", torch::zeros({1, 4, 8, 8})},
                       {"eps", torch::zeros({1, 4, 8, 8})},
                       {"sigmas", sigmas},
                       {"index", int64_t{0}},
                       {"sampler", std::string("heun")}});
  EXPECT_THAT(std::string(step.status().message()),
              HasSubstr("unknown sampler 'heun' (available: euler"));
  step = RunNode("SigmaStep", ctx,
                 {{"latents", torch::zeros({1, 4, 8, 8})},
                  {"eps", torch::zeros({1, 4, 8, 8})},
                  {"sigmas", sigmas},
                  {"index", int64_t{4}}});
  EXPECT_THAT(std::string(step.status().message()),
              HasSubstr("step 4 is outside the schedule's 4 steps"));
}

// LatentUpscale and ImageScale take ComfyUI's sizes: pixels (latents: at least 64, then / 8), 0
// keeps the aspect ratio, a scale rounds half to even; a centre crop to the target's aspect ratio
// first.
TEST(ComfyResizeTest, SizesFollowComfyUI) {
  RunContext ctx;
  auto size = [&](const std::string& kind, const torch::Tensor& x,
                  std::map<std::string, Value> in) {
    in[kind == "LatentUpscale" ? "latents" : "image"] = x;
    auto out = RunNode(kind, ctx, in);
    EXPECT_TRUE(out.ok()) << kind << ": " << out.status();
    if (!out.ok()) return std::vector<int64_t>{};
    const torch::Tensor t = OutTensor(*out, kind == "LatentUpscale" ? "latents" : "image");
    return std::vector<int64_t>{t.size(2), t.size(3)};
  };
  const torch::Tensor lat = torch::randn({1, 4, 8, 12});  // a 96 x 64 image's latents
  EXPECT_EQ(size("LatentUpscale", lat, {{"width", int64_t{192}}, {"height", int64_t{0}}}),
            (std::vector<int64_t>{16, 24}));
  EXPECT_EQ(size("LatentUpscale", lat, {{"width", int64_t{8}}, {"height", int64_t{8}}}),
            (std::vector<int64_t>{8, 8}));  // at least 64 pixels
  EXPECT_EQ(size("LatentUpscale", lat, {{"scale", 1.25}}), (std::vector<int64_t>{10, 15}));
  EXPECT_EQ(size("LatentUpscale", torch::randn({1, 4, 2, 6}), {{"scale", 1.25}}),
            (std::vector<int64_t>{2, 8}));  // 2.5 -> 2, 7.5 -> 8: half to even
  EXPECT_EQ(size("LatentUpscale", lat, {}), (std::vector<int64_t>{8, 12}));
  const torch::Tensor img = torch::rand({1, 3, 40, 60});
  EXPECT_EQ(size("ImageScale", img, {{"height", int64_t{20}}, {"width", int64_t{0}}}),
            (std::vector<int64_t>{20, 30}));
  EXPECT_EQ(size("ImageScale", img, {{"scale", 0.5}, {"method", std::string("area")}}),
            (std::vector<int64_t>{20, 30}));
  // Centre crop: 60 x 40 to a square keeps the middle 40 columns.
  auto cropped = RunNode("ImageScale", ctx,
                         {{"image", img},
                          {"width", int64_t{40}},
                          {"height", int64_t{40}},
                          {"crop", std::string("center")},
                          {"method", std::string("bilinear")}});
  ASSERT_TRUE(cropped.ok()) << cropped.status();
  EXPECT_TRUE(torch::allclose(OutTensor(*cropped, "image"), img.narrow(3, 10, 40)));
  auto bad = RunNode("ImageScale", ctx,
                     {{"image", img}, {"scale", 2.0}, {"method", std::string("lanczos")}});
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("unknown method 'lanczos' (available: nearest-exact"));
  auto inverted = RunNode("ImageInvert", ctx, {{"image", img}});
  ASSERT_TRUE(inverted.ok());
  EXPECT_TRUE(torch::equal(OutTensor(*inverted, "image"), -img));
}

}  // namespace
}  // namespace sd
