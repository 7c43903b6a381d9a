// bf16 weights on a CPU: CpuBf16Compute::kF32 keeps them bf16 in memory and computes in fp32, so
// its result is exactly that of an fp32 network whose weights were rounded to bf16; kNative
// computes in bf16 (oneDNN) and lands near the fp32 result. On a tiny model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nodes/models/layers.h"
#include "nodes/models/model_util.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"

namespace sd {
namespace {

class Bf16ComputeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    TestCheckpointOptions o;
    o.config = SdConfig::Tiny();
    ASSERT_TRUE(WriteTestCheckpoint(dir_->File("tiny.safetensors"), o).ok());
  }
  static void TearDownTestSuite() { delete dir_; }
  void TearDown() override { nn::SetCpuBf16Compute(nn::CpuBf16Compute::kAuto); }

  template <typename M>
  static M Load(M model, const char* prefix, torch::ScalarType dtype) {
    auto ckpt = Checkpoint::Open(dir_->File("tiny.safetensors"));
    EXPECT_TRUE(ckpt.ok());
    EXPECT_TRUE(LoadWeights(*model, **ckpt, prefix, dtype, torch::kCPU).ok());
    return model;
  }
  // An fp32 network with every weight that bf16 loading rounds rounded the same way.
  template <typename M>
  static M LoadRounded(M model, const char* prefix) {
    M m = Load(model, prefix, torch::kFloat32);
    M b = Load(M(model->config()), prefix, torch::kBFloat16);
    auto theirs = b->named_parameters();
    torch::NoGradGuard no_grad;
    for (auto& p : m->named_parameters()) p.value().set_data(theirs[p.key()].to(torch::kFloat32));
    return m;
  }
  static testing::TempDir* dir_;
};
testing::TempDir* Bf16ComputeTest::dir_;

TEST_F(Bf16ComputeTest, F32ModeIsExactlyFp32OnBf16RoundedWeights) {
  const SdConfig c = SdConfig::Tiny();
  torch::manual_seed(4);
  const torch::Tensor latents = torch::randn({2, c.unet.in_channels, 8, 8});
  const torch::Tensor context = torch::randn({2, 77, c.unet.context_dim});
  const torch::Tensor t = torch::tensor({321});

  nn::SetCpuBf16Compute(nn::CpuBf16Compute::kF32);
  EXPECT_EQ(nn::ActivationDtype(torch::kBFloat16, torch::kCPU), torch::kFloat32);
  UNet bf16 = Load(UNet(c.unet), kUNetPrefix, torch::kBFloat16);
  UNet rounded = LoadRounded(UNet(c.unet), kUNetPrefix);
  auto a = bf16->Predict(latents, t, context), b = rounded->Predict(latents, t, context);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal(*a, *b));
  for (const auto& p : bf16->parameters()) {
    if (p.dim() > 1) {
      EXPECT_EQ(p.scalar_type(), torch::kBFloat16);  // the weights stay bf16 in memory
    }
  }

  Vae vae16 = Load(Vae(c.vae), kVaePrefix, torch::kBFloat16);
  Vae vae_rounded = LoadRounded(Vae(c.vae), kVaePrefix);
  const torch::Tensor z = torch::randn({1, c.vae.embed_dim, 8, 8});
  auto x = vae16->Decode(z), y = vae_rounded->Decode(z);
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_TRUE(torch::equal(*x, *y));
}

TEST_F(Bf16ComputeTest, NativeModeComputesInBf16NearTheFp32Result) {
  const SdConfig c = SdConfig::Tiny();
  torch::manual_seed(5);
  const torch::Tensor latents = torch::randn({2, c.unet.in_channels, 8, 8});
  const torch::Tensor context = torch::randn({2, 77, c.unet.context_dim});
  const torch::Tensor t = torch::tensor({321});
  nn::SetCpuBf16Compute(nn::CpuBf16Compute::kNative);
  EXPECT_EQ(nn::ActivationDtype(torch::kBFloat16, torch::kCPU), torch::kBFloat16);
  auto native = Load(UNet(c.unet), kUNetPrefix, torch::kBFloat16)->Predict(latents, t, context);
  auto f32 = Load(UNet(c.unet), kUNetPrefix, torch::kFloat32)->Predict(latents, t, context);
  ASSERT_TRUE(native.ok() && f32.ok());
  const double rel = ((*native - *f32).norm() / f32->norm()).item<double>();
  std::printf("[ bf16 ] native bf16 UNet vs fp32: relative error %.2e\n", rel);
  EXPECT_GT(rel, 0.0);  // bf16 arithmetic did happen
  EXPECT_LT(rel, 5e-2);
}

}  // namespace
}  // namespace sd
