// bf16 weights on a CPU: CpuBf16Compute::kF32 keeps them bf16 in memory and computes in fp32, so
// its result is exactly that of an fp32 network whose weights were rounded to bf16; kNative
// computes in bf16 (oneDNN, or LibTorch's reference kernels) and lands near the fp32 result. On a
// tiny model.
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "nodes/models/conv_layout.h"
#include "nodes/models/layers.h"
#include "nodes/models/model_util.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"
#include "nodes/models/winograd_conv.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"
#include "tests/tiny_checkpoint.h"

namespace sd {
namespace {

class Bf16ComputeTest : public testing::TinyCheckpointTest {
 protected:
  static void SetUpTestSuite() { TinyCheckpointTest::SetUpTestSuite(); }
  void TearDown() override { nn::SetCpuBf16Compute(nn::CpuBf16Compute::kAuto); }

  template <typename M>
  static M Load(M model, const char* prefix, torch::ScalarType dtype) {
    auto ckpt = Checkpoint::Open(TinyPath());
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
};

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
  // Widened bf16 weights convolve directly; so does the fp32 network here (not by Winograd).
  nn::SetWinogradMode(nn::WinogradMode::kOff);
  auto x = vae16->Decode(z), y = vae_rounded->Decode(z);
  nn::SetWinogradMode(nn::WinogradMode::kAuto);
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_TRUE(torch::equal(*x, *y));
}

// kNative on the tiny UNet: relative L2 distance to the fp32 network's result (same weights before
// rounding) and to kF32 mode's (the same bf16 weights in fp32 arithmetic).
struct NativeErrors {
  double vs_fp32 = 0, vs_f32_mode = 0;
};

NativeErrors NativeUNetErrors(const std::string& ckpt_path) {
  const SdConfig c = SdConfig::Tiny();
  torch::manual_seed(5);
  const torch::Tensor latents = torch::randn({2, c.unet.in_channels, 8, 8});
  const torch::Tensor context = torch::randn({2, 77, c.unet.context_dim});
  const torch::Tensor t = torch::tensor({321});
  auto ckpt = Checkpoint::Open(ckpt_path);
  EXPECT_TRUE(ckpt.ok());
  auto run = [&](torch::ScalarType dtype, nn::CpuBf16Compute mode) {
    nn::SetCpuBf16Compute(mode);
    UNet unet(c.unet);
    EXPECT_TRUE(LoadWeights(*unet, **ckpt, kUNetPrefix, dtype, torch::kCPU).ok());
    auto out = unet->Predict(latents, t, context);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->to(torch::kFloat64) : torch::zeros({1}, torch::kFloat64);
  };
  const torch::Tensor fp32 = run(torch::kFloat32, nn::CpuBf16Compute::kF32);
  const torch::Tensor f32_mode = run(torch::kBFloat16, nn::CpuBf16Compute::kF32);
  const torch::Tensor native = run(torch::kBFloat16, nn::CpuBf16Compute::kNative);
  EXPECT_EQ(nn::ActivationDtype(torch::kBFloat16, torch::kCPU), torch::kBFloat16);
  NativeErrors e;
  e.vs_fp32 = ((native - fp32).norm() / fp32.norm()).item<double>();
  e.vs_f32_mode = ((native - f32_mode).norm() / f32_mode.norm()).item<double>();
  return e;
}

// LibTorch runs bf16 convolutions and matmuls through oneDNN where the CPU has AVX-512 BW/VL/DQ,
// and otherwise through its own reference kernels, which round the running sum to bf16 at every
// step. Each path is tested for what it guarantees, on every CPU that can run it: the reference
// kernels by switching oneDNN off (what an AVX2-only CPU always runs), oneDNN where it is used.
bool OneDnnRunsBf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
}

// bf16 arithmetic really happens (the result moves by far more than fp32 rounding, which kF32 mode
// shows to be exact) and stays near the fp32 result: oneDNN accumulates in fp32, so only the
// rounding of activations to 8 significant bits shows (1.6e-2 measured).
TEST_F(Bf16ComputeTest, NativeModeThroughOneDnnComputesInBf16NearTheFp32Result) {
  if (!OneDnnRunsBf16())
    GTEST_SKIP() << "no oneDNN bf16 on this CPU: the reference-kernel test covers it";
  const NativeErrors e = NativeUNetErrors(TinyPath());
  std::printf(
      "[ bf16 ] native bf16 (oneDNN) UNet vs fp32: relative error %.2e (vs fp32 math on bf16 "
      "weights %.2e)\n",
      e.vs_fp32, e.vs_f32_mode);
  EXPECT_GT(e.vs_f32_mode, 1e-3);
  EXPECT_LT(e.vs_fp32, 5e-2);
}

// The reference kernels' bf16 running sums lose more: the bound is that of bf16 accumulation over
// the tiny UNet's inner dimensions (a few hundred terms of 8 significant bits), not oneDNN's.
TEST_F(Bf16ComputeTest, NativeModeThroughReferenceKernelsComputesInBf16NearTheFp32Result) {
  const bool was_enabled = at::globalContext().userEnabledMkldnn();
  at::globalContext().setUserEnabledMkldnn(false);
  const NativeErrors e = NativeUNetErrors(TinyPath());
  at::globalContext().setUserEnabledMkldnn(was_enabled);
  std::printf(
      "[ bf16 ] native bf16 (reference kernels) UNet vs fp32: relative error %.2e (vs fp32 math on "
      "bf16 weights %.2e)\n",
      e.vs_fp32, e.vs_f32_mode);
  EXPECT_GT(e.vs_f32_mode, 1e-3);
  EXPECT_LT(e.vs_fp32, 0.25);
}

// kAuto picks native bf16 only where it measured it faster than fp32 arithmetic on bf16 weights.
TEST_F(Bf16ComputeTest, AutoPicksNativeOnlyWhereMeasuredFaster) {
  const double speedup = nn::MeasuredNativeBf16Speedup();
  std::printf("[ bf16 ] native bf16 runs %.2fx the speed of fp32 math on bf16 weights here\n",
              speedup);
  EXPECT_GT(speedup, 0.0);
  EXPECT_EQ(nn::ResolveCpuBf16Compute(nn::CpuBf16Compute::kAuto),
            speedup >= nn::kNativeBf16MinSpeedup ? nn::CpuBf16Compute::kNative
                                                 : nn::CpuBf16Compute::kF32);
  EXPECT_EQ(nn::ResolveCpuBf16Compute(nn::CpuBf16Compute::kNative), nn::CpuBf16Compute::kNative);
  EXPECT_EQ(nn::ResolveCpuBf16Compute(nn::CpuBf16Compute::kF32), nn::CpuBf16Compute::kF32);
}

// The VAE decoder's convolutions run channels-last or NCHW, whichever was measured faster on this
// CPU (conv_layout.h); both layouts decode to the same image within f32 rounding.
TEST_F(Bf16ComputeTest, VaeDecoderLayoutsAgreeAndAutoPicksTheFasterOne) {
  const double speedup = nn::MeasuredChannelsLastSpeedup();
  std::printf("[ layout ] channels-last convolutions run %.2fx the speed of NCHW here\n", speedup);
  EXPECT_GT(speedup, 0.0);
  nn::SetVaeConvLayout(nn::ConvLayout::kAuto);
  EXPECT_EQ(nn::ResolvedVaeConvLayout(),
            speedup > 1.0 ? nn::ConvLayout::kNhwc : nn::ConvLayout::kNchw);

  const SdConfig c = SdConfig::Tiny();
  Vae vae = Load(Vae(c.vae), kVaePrefix, torch::kFloat32);
  torch::manual_seed(6);
  const torch::Tensor z = torch::randn({2, c.vae.embed_dim, 8, 12});
  nn::SetVaeConvLayout(nn::ConvLayout::kNchw);
  auto nchw = vae->Decode(z);
  nn::SetVaeConvLayout(nn::ConvLayout::kNhwc);
  auto nhwc = vae->Decode(z);
  nn::SetVaeConvLayout(nn::ConvLayout::kAuto);
  ASSERT_TRUE(nchw.ok() && nhwc.ok());
  EXPECT_TRUE(nchw->is_contiguous() && nhwc->is_contiguous());  // the usual layout either way
  EXPECT_LE((*nchw - *nhwc).abs().max().item<double>(),
            1e-5 * (1 + nchw->abs().max().item<double>()));
}

}  // namespace
}  // namespace sd
