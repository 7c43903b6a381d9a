// The three networks on full-size sdgold-v1 weights against the reference's answers in ../shared/golden:
// fp32 within 1e-4 max-abs on every stage tensor; bf16 errors reported in the log (never asserted loosely).
// The checkpoint is generated once per run, and also re-saved as a genuine torch.save .ckpt: both load to
// identical outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "nodes/models/clip_text.h"
#include "nodes/models/conv_layout.h"
#include "nodes/models/linear_cpu.h"
#include "nodes/models/model_util.h"
#include "nodes/models/unet.h"
#include "nodes/models/upsample_conv.h"
#include "nodes/models/vae.h"
#include "nodes/models/winograd_conv.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/test_weights.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/golden/golden_util.h"
#include "tests/lora_reference.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

constexpr double kTolerance = 1e-4;

class ModelParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const std::string st = dir_->File("sd15.safetensors"), ck = dir_->File("sd15.ckpt");
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(WriteTestCheckpoint(st, TestCheckpointOptions()).ok());
    auto r = testing::RunCommand(testing::PythonScript("safetensors_to_ckpt.py") + " " + testing::Quote(st) + " " +
                                 testing::Quote(ck));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::printf("[ info ] full-size checkpoint written as safetensors and .ckpt in %.1f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    auto a = Checkpoint::Open(st);
    auto b = Checkpoint::Open(ck);
    ASSERT_TRUE(a.ok() && b.ok());
    st_ = new std::shared_ptr<const Checkpoint>(*a);
    ck_ = new std::shared_ptr<const Checkpoint>(*b);
    auto c = DetectConfig([](const std::string& n) { return (*st_)->ShapeOf(n); });
    ASSERT_TRUE(c.ok());
    config_ = new SdConfig(*c);
  }
  static void TearDownTestSuite() {
    delete st_;
    delete ck_;
    delete config_;
    delete dir_;
  }
  template <typename M>
  static M Load(M model, const std::string& prefix, torch::ScalarType dtype, bool from_ckpt = false) {
    absl::Status s = LoadWeights(*model, from_ckpt ? **ck_ : **st_, prefix, dtype);
    EXPECT_TRUE(s.ok()) << s;
    return model;
  }
  static testing::TempDir* dir_;
  static std::shared_ptr<const Checkpoint>*st_, *ck_;
  static SdConfig* config_;
};
testing::TempDir* ModelParityTest::dir_;
std::shared_ptr<const Checkpoint>* ModelParityTest::st_;
std::shared_ptr<const Checkpoint>* ModelParityTest::ck_;
SdConfig* ModelParityTest::config_;

TEST_F(ModelParityTest, ClipTextEncoder) {
  auto g = testing::ReadGolden("clip.safetensors");
  auto clip = Load(ClipTextModel(config_->clip), kClipPrefix, torch::kFloat32);
  auto out = clip->Encode(g["tokens"]);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LE(testing::Report("clip context", "f32", *out, g["context"]).max_abs, kTolerance);
  auto from_ckpt = Load(ClipTextModel(config_->clip), kClipPrefix, torch::kFloat32, true)->Encode(g["tokens"]);
  EXPECT_TRUE(torch::equal(*out, *from_ckpt)) << ".ckpt and .safetensors differ";
  auto bf16 = Load(ClipTextModel(config_->clip), kClipPrefix, torch::kBFloat16)->Encode(g["tokens"]);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  testing::Report("clip context", "bf16", bf16->to(torch::kFloat32), g["context"]);
}

TEST_F(ModelParityTest, ClipRejectsBadTokens) {
  auto clip = Load(ClipTextModel(config_->clip), kClipPrefix, torch::kFloat32);
  auto s = clip->Encode(torch::full({1, 77}, 49408, torch::kInt64)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("token id 49408 is outside the vocabulary"));
  EXPECT_THAT(std::string(clip->Encode(torch::zeros({1, 78}, torch::kInt64)).status().message()), HasSubstr("78 tokens"));
  EXPECT_THAT(std::string(clip->Encode(torch::zeros({77}, torch::kInt64)).status().message()), HasSubstr("int64 [batch, length]"));
}

TEST_F(ModelParityTest, TimeEmbedding) {
  auto g = testing::ReadGolden("unet.safetensors");
  EXPECT_LE(testing::Report("time embedding", "f32", TimestepEmbedding(g["timesteps"], 320), g["time_embedding"]).max_abs,
            kTolerance);
}

TEST_F(ModelParityTest, UNetAllTimestepsAndNonSquare) {
  auto g = testing::ReadGolden("unet.safetensors");
  auto unet = Load(UNet(config_->unet), kUNetPrefix, torch::kFloat32);
  auto unet_ckpt = Load(UNet(config_->unet), kUNetPrefix, torch::kFloat32, true);
  auto unet_bf16 = Load(UNet(config_->unet), kUNetPrefix, torch::kBFloat16);
  std::vector<std::pair<std::string, int64_t>> cases;
  const torch::Tensor ts = g["timesteps"];
  for (int i = 0; i < ts.size(0); ++i) cases.emplace_back("t" + std::to_string(ts[i].item<int64_t>()), ts[i].item<int64_t>());
  cases.emplace_back("rect", g["rect.timestep"].item<int64_t>());
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& [p, t] : cases) {
    const torch::Tensor timestep = torch::tensor({t});
    auto eps = unet->Predict(g[p + ".latent"], timestep, g[p + ".context"]);
    ASSERT_TRUE(eps.ok()) << eps.status();
    EXPECT_LE(testing::Report("unet eps " + p, "f32", *eps, g[p + ".eps"]).max_abs, kTolerance) << p;
    EXPECT_TRUE(torch::equal(*eps, *unet_ckpt->Predict(g[p + ".latent"], timestep, g[p + ".context"])));
    auto bf16 = unet_bf16->Predict(g[p + ".latent"], timestep, g[p + ".context"]);
    ASSERT_TRUE(bf16.ok()) << bf16.status();
    testing::Report("unet eps " + p, "bf16", *bf16, g[p + ".eps"]);
  }
}

TEST_F(ModelParityTest, UNetRejectsBadInputs) {
  auto unet = Load(UNet(config_->unet), kUNetPrefix, torch::kFloat32);
  torch::Tensor ctx = torch::zeros({1, 77, 768}), t = torch::tensor({500});
  auto s = unet->Predict(torch::zeros({1, 4, 12, 8}), t, ctx).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("multiples of 8"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("halves them 3 times"));
  EXPECT_THAT(std::string(unet->Predict(torch::zeros({1, 4, 8, 8}), t, torch::zeros({1, 77, 1024})).status().message()),
              HasSubstr("context must be float [1 or 1, tokens, 768]"));
  EXPECT_THAT(std::string(unet->Predict(torch::zeros({1, 3, 8, 8}), t, ctx).status().message()),
              HasSubstr("latents must be float [batch, 4, h, w]"));
  torch::Tensor nan = torch::zeros({1, 4, 8, 8});
  nan[0][1][2][3] = std::nan("");
  EXPECT_THAT(std::string(unet->Predict(nan, t, ctx).status().message()), HasSubstr("UNet: latents contains NaN"));
}

TEST_F(ModelParityTest, VaeDecoderAndEncoder) {
  auto g = testing::ReadGolden("vae.safetensors");
  auto vae = Load(Vae(config_->vae), kVaePrefix, torch::kFloat32);
  auto image = vae->Decode(g["decoder.latent"]);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_LE(testing::Report("vae decoder image", "f32", *image, g["decoder.image"]).max_abs, kTolerance);
  auto latent = vae->Encode(g["encoder.image"], g["encoder.noise"]);
  ASSERT_TRUE(latent.ok()) << latent.status();
  EXPECT_LE(testing::Report("vae encoder latent", "f32", *latent, g["encoder.latent"]).max_abs, kTolerance);

  auto vae_ckpt = Load(Vae(config_->vae), kVaePrefix, torch::kFloat32, true);
  EXPECT_TRUE(torch::equal(*image, *vae_ckpt->Decode(g["decoder.latent"])));
  EXPECT_TRUE(torch::equal(*latent, *vae_ckpt->Encode(g["encoder.image"], g["encoder.noise"])));

  auto vae_bf16 = Load(Vae(config_->vae), kVaePrefix, torch::kBFloat16);
  testing::Report("vae decoder image", "bf16", *vae_bf16->Decode(g["decoder.latent"]), g["decoder.image"]);
  testing::Report("vae encoder latent", "bf16", *vae_bf16->Encode(g["encoder.image"], g["encoder.noise"]),
                  g["encoder.latent"]);

  EXPECT_THAT(std::string(vae->Encode(torch::zeros({1, 3, 60, 64}), torch::zeros({1, 4, 7, 8})).status().message()),
              HasSubstr("multiples of 8"));
  EXPECT_THAT(std::string(vae->Encode(g["encoder.image"], torch::zeros({1, 4, 8, 9})).status().message()),
              HasSubstr("noise must be float [1, 4, 8, 8]"));
  EXPECT_THAT(std::string(vae->Decode(torch::zeros({1, 3, 8, 8})).status().message()), HasSubstr("latents must be"));
}

// Every convolution path the VAE can take on a CPU keeps parity, whichever this CPU picks by
// measurement: Winograd F(4x4, 3x3) on every 3x3 layer, and LibTorch's direct convolution on every
// layer, in both memory layouts.
TEST_F(ModelParityTest, VaeParityByWinogradAndDirectConvolutions) {
  auto g = testing::ReadGolden("vae.safetensors");
  auto vae = Load(Vae(config_->vae), kVaePrefix, torch::kFloat32);
  const std::pair<nn::WinogradMode, nn::ConvLayout> paths[] = {
      {nn::WinogradMode::kOn, nn::ConvLayout::kNchw},
      {nn::WinogradMode::kOff, nn::ConvLayout::kNchw},
      {nn::WinogradMode::kOff, nn::ConvLayout::kNhwc}};
  for (const auto& [winograd, layout] : paths) {
    const std::string path = absl::StrCat(winograd == nn::WinogradMode::kOn ? "winograd" : "direct",
                                          "-", nn::ConvLayoutName(layout));
    nn::SetWinogradMode(winograd);
    nn::SetVaeConvLayout(layout);
    auto image = vae->Decode(g["decoder.latent"]);
    auto latent = vae->Encode(g["encoder.image"], g["encoder.noise"]);
    nn::SetWinogradMode(nn::WinogradMode::kAuto);
    nn::SetVaeConvLayout(nn::ConvLayout::kAuto);
    ASSERT_TRUE(image.ok() && latent.ok());
    EXPECT_LE(testing::Report("vae decoder image", path, *image, g["decoder.image"]).max_abs,
              kTolerance);
    EXPECT_LE(testing::Report("vae encoder latent", path, *latent, g["encoder.latent"]).max_abs,
              kTolerance);
  }
}

// The paths chosen by measurement besides the convolutions' keep parity too, whichever this CPU
// picks: linear layers and blocked attention products by the BLAS and by oneDNN (CLIP, one UNet
// case, the decoder), the decoder's upsampling upsampled-then-convolved and sub-pixel. On 2
// threads: on one, LibTorch runs 1x1 convolutions of small batches through the BLAS as well.
TEST_F(ModelParityTest, ParityByEachLinearAndUpsamplingPath) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  auto clip = Load(ClipTextModel(config_->clip), kClipPrefix, torch::kFloat32);
  auto unet = Load(UNet(config_->unet), kUNetPrefix, torch::kFloat32);
  auto vae = Load(Vae(config_->vae), kVaePrefix, torch::kFloat32);
  auto clip_golden = testing::ReadGolden("clip.safetensors");
  auto unet_golden = testing::ReadGolden("unet.safetensors");
  auto vae_golden = testing::ReadGolden("vae.safetensors");
  const torch::Tensor timestep = torch::tensor({unet_golden["rect.timestep"].item<int64_t>()});
  for (const auto& [linear, upsample] :
       {std::pair{nn::CpuLinear::kBlas, nn::UpsampleConv::kDirect},
        std::pair{nn::CpuLinear::kOneDnn, nn::UpsampleConv::kSubpixel}}) {
    const std::string path =
        absl::StrCat(nn::CpuLinearName(linear), "/",
                     upsample == nn::UpsampleConv::kSubpixel ? "subpixel" : "direct");
    nn::SetCpuLinear(linear);
    nn::SetUpsampleConv(upsample);
    auto context = clip->Encode(clip_golden["tokens"]);
    auto eps = unet->Predict(unet_golden["rect.latent"], timestep, unet_golden["rect.context"]);
    auto image = vae->Decode(vae_golden["decoder.latent"]);
    nn::SetCpuLinear(nn::CpuLinear::kAuto);
    nn::SetUpsampleConv(nn::UpsampleConv::kAuto);
    ASSERT_TRUE(context.ok() && eps.ok() && image.ok());
    EXPECT_LE(testing::Report("clip context", path, *context, clip_golden["context"]).max_abs,
              kTolerance);
    EXPECT_LE(testing::Report("unet eps rect", path, *eps, unet_golden["rect.eps"]).max_abs,
              kTolerance);
    EXPECT_LE(
        testing::Report("vae decoder image", path, *image, vae_golden["decoder.image"]).max_abs,
        kTolerance);
  }
  at::set_num_threads(threads);
}

TEST_F(ModelParityTest, LoadReportsMissingKeysAndShapeMismatches) {
  SdConfig wrong = *config_;
  wrong.unet.context_dim = 1024;  // every attn2.to_k/to_v shape differs
  UNet unet(wrong.unet);
  absl::Status s = LoadWeights(*unet, **st_, kUNetPrefix, torch::kFloat32);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("attn2.to_k.weight: expected [320, 1024], found [320, 768]"));
  ClipTextModel clip(config_->clip);
  s = LoadWeights(*clip, **st_, kClipPrefix, torch::kHalf);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("float16 compute is not supported on CPU"));
  s = LoadWeights(*clip, **st_, "no.such.prefix.", torch::kFloat32);
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing: no.such.prefix.embeddings.token_embedding.weight"));
}

// LoRA files in every key family on the full-size model (a sample of its layers: every 25th and the
// first of each kind, see lora_reference.py), merged as the reference merges them in float64.
TEST_F(ModelParityTest, LoraMergesOnTheFullSizeModelAsTheReference) {
  const std::string st = dir_->File("sd15.safetensors"), lora = dir_->File("lora");
  std::filesystem::create_directories(lora);
  testing::WriteFile(lora + "/cfg.json", testing::LoraConfigJson(*config_).dump());
  testing::RunLoraReference("make " + st + " " + lora + "/cfg.json " + lora + " 0.7 0.4 25");
  for (const char* family : {"kohya", "peft", "ldm"}) {
    SCOPED_TRACE(family);
    ModelCache models;
    const std::string ref = st + "|lora=" + lora + "/" + family + ".safetensors:0.7:0.4";
    auto unet = models.GetUnet(ref, torch::kFloat32, torch::kCPU);
    auto clip = models.GetClip(ref, torch::kFloat32, torch::kCPU);
    ASSERT_TRUE(unet.ok()) << unet.status();
    ASSERT_TRUE(clip.ok()) << clip.status();
    std::map<std::string, torch::Tensor> params;
    for (const auto& p : (*unet)->named_parameters()) params[kUNetPrefix + p.key()] = p.value();
    for (const auto& p : (*clip)->named_parameters()) params[kClipPrefix + p.key()] = p.value();
    auto merged = Checkpoint::Open(lora + "/merged_" + family + ".safetensors");
    ASSERT_TRUE(merged.ok()) << merged.status();
    int unet_layers = 0, text_layers = 0;
    for (const TensorView& t : (*merged)->tensors()) {
      auto want = LoadTensor(**merged, t.name, torch::kFloat32);
      ASSERT_TRUE(want.ok()) << want.status();
      ASSERT_TRUE(params.count(t.name)) << t.name;
      const double diff = (params.at(t.name) - *want).abs().max().item<double>();
      EXPECT_LT(diff, 1e-5) << t.name;
      (t.name.rfind(kUNetPrefix, 0) == 0 ? unet_layers : text_layers) += 1;
    }
    std::printf("[ lora ] %s: %d UNet and %d text-encoder layers as the reference merges them\n",
                family, unet_layers, text_layers);
    // PEFT files name linear layers only (no convolutions).
    EXPECT_GE(unet_layers, std::string(family) == "peft" ? 5 : 10);
    EXPECT_GE(text_layers, 2);
  }
}

}  // namespace
}  // namespace sd
