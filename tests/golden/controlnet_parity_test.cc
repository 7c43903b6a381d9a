// ControlNet on full-size sdgold-v1 weights against the original ControlNet code's answers
// (../shared/golden/controlnet.safetensors): the residuals for a hint, and the UNet's eps with the
// residuals x strength added, fp32 within 1e-4; eps without control unchanged. Cases, shapes,
// timesteps and strengths are read from the file, so another file of other sizes can stand in for
// it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "absl/strings/str_format.h"
#include "nodes/models/controlnet.h"
#include "nodes/models/unet.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/test_weights.h"
#include "tests/golden/golden_util.h"

namespace sd {
namespace {

constexpr double kTolerance = 1e-4;

class ControlNetParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ASSERT_TRUE(WriteTestControlNet(Path(), TestControlNetOptions()).ok());
    // The UNet's weights straight into the module: loading SD checkpoints is the model parity
    // test's.
    unet_ = new UNet(SdConfig::Sd15().unet);
    torch::NoGradGuard no_grad;
    for (auto& p : (*unet_)->named_parameters()) {
      FillSdgold(kUNetPrefix + p.key(), p.value().sizes().vec(), p.value().data_ptr<float>());
    }
    (*unet_)->eval();
    golden_ =
        new std::map<std::string, torch::Tensor>(testing::ReadGolden("controlnet.safetensors"));
  }
  static void TearDownTestSuite() {
    delete unet_;
    delete golden_;
    delete dir_;
  }
  static std::string Path() { return dir_->File("control_sd15.safetensors"); }
  static torch::Tensor G(const std::string& name) {
    auto it = golden_->find(name);
    if (it == golden_->end()) throw std::runtime_error("golden file lacks " + name);
    return it->second;
  }
  static std::vector<std::string> Cases() {
    std::vector<std::string> cases;
    for (const auto& [name, t] : *golden_) {
      if (name.size() > 2 && name.compare(name.size() - 2, 2, ".x") == 0)
        cases.push_back(name.substr(0, name.size() - 2));
    }
    return cases;
  }
  static size_t ResidualCount(const std::string& c) {
    size_t n = 0;
    while (golden_->count(absl::StrFormat("%s.control.%02d", c, n))) ++n;
    return n;
  }
  static testing::TempDir* dir_;
  static UNet* unet_;
  static std::map<std::string, torch::Tensor>* golden_;
};
testing::TempDir* ControlNetParityTest::dir_;
UNet* ControlNetParityTest::unet_;
std::map<std::string, torch::Tensor>* ControlNetParityTest::golden_;

TEST_F(ControlNetParityTest, ResidualsAndControlledEpsMatchTheReference) {
  ModelCache cache;
  auto net = cache.GetControlNet(Path(), torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(net.ok()) << net.status();
  const std::vector<std::string> cases = Cases();
  ASSERT_FALSE(cases.empty());
  for (const std::string& c : cases) {
    SCOPED_TRACE(c);
    const torch::Tensor x = G(c + ".x"), hint = G(c + ".hint"), context = G(c + ".context"),
                        t = G(c + ".timestep");
    const double strength = G(c + ".strength").item<double>();
    auto residuals = (*net)->Predict(x, hint, t, context);
    ASSERT_TRUE(residuals.ok()) << residuals.status();
    ASSERT_EQ(residuals->size(), ResidualCount(c));
    for (size_t i = 0; i < residuals->size(); ++i) {
      const std::string name = absl::StrFormat("%s.control.%02d", c, i);
      EXPECT_LE(testing::Report(name, "f32", (*residuals)[i], G(name)).max_abs, kTolerance);
    }
    auto plain = (*unet_)->Predict(x, t, context);
    ASSERT_TRUE(plain.ok()) << plain.status();
    EXPECT_LE(testing::Report(c + ".eps_plain", "f32", *plain, G(c + ".eps_plain")).max_abs,
              kTolerance);
    // As the UNetStep node gets them: scaled, packed into one tensor, unpacked.
    std::vector<torch::Tensor> scaled;
    for (const torch::Tensor& r : *residuals) scaled.push_back(r * strength);
    auto unpacked =
        UnpackControl(PackControl(scaled), unet_->get()->config(), x.size(2), x.size(3));
    ASSERT_TRUE(unpacked.ok()) << unpacked.status();
    auto controlled = (*unet_)->Predict(x, t, context, *unpacked);
    ASSERT_TRUE(controlled.ok()) << controlled.status();
    EXPECT_LE(testing::Report(c + ".eps_controlled", "f32", *controlled, G(c + ".eps_controlled"))
                  .max_abs,
              kTolerance);
  }
}

TEST_F(ControlNetParityTest, Bf16ErrorsAreOnRecord) {
  ModelCache cache;
  auto net = cache.GetControlNet(Path(), torch::kBFloat16, torch::kCPU);
  ASSERT_TRUE(net.ok()) << net.status();
  const std::string c = Cases().front();
  auto residuals =
      (*net)->Predict(G(c + ".x"), G(c + ".hint"), G(c + ".timestep"), G(c + ".context"));
  ASSERT_TRUE(residuals.ok()) << residuals.status();
  for (size_t i : {size_t{0}, residuals->size() - 1}) {
    const std::string name = absl::StrFormat("%s.control.%02d", c, i);
    const testing::ErrorStats e = testing::Report(name, "bf16", (*residuals)[i], G(name));
    EXPECT_LT(e.rel, 0.1) << "bf16 residuals are not those of the network at all";
  }
}

TEST_F(ControlNetParityTest, BadInputIsRefusedByName) {
  ModelCache cache;
  auto net = cache.GetControlNet(Path(), torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(net.ok()) << net.status();
  const torch::Tensor x = torch::zeros({1, 4, 8, 8}), ctx = torch::zeros({1, 77, 768}),
                      t = torch::tensor({10});
  auto r = (*net)->Predict(x, torch::zeros({1, 3, 64, 72}), t, ctx);
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("hint must be float [1 or 1, 3, 64, 64]"));
  auto e =
      (*unet_)->Predict(x, t, ctx, std::vector<torch::Tensor>(13, torch::zeros({1, 320, 8, 8})));
  EXPECT_THAT(e.status().message(),
              ::testing::HasSubstr("ControlNet residual 3 must be float [1 or 1, 320, 4, 4]"));
  auto u = UnpackControl(torch::zeros({1, 100}), unet_->get()->config(), 8, 8);
  EXPECT_THAT(u.status().message(),
              ::testing::HasSubstr("residuals for latents of 8x8 must be float"));
}

}  // namespace
}  // namespace sd
