// Every stock node kind, driven alone by NodeRunner from the text it has in a graph: no worker, no
// graph file; the model kinds on the tiny checkpoint. Each test checks what the kind promises (a
// value, a shape, an identity), and NodeRunner checks every input and output against the contract.
// EveryStockKindIsDrivenHere keeps the list complete: a new kind fails it until it has a test here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "absl/strings/str_replace.h"
#include "nodes/ops/image_resize.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/controlnet_layout.h"
#include "nodes/weights/test_weights.h"
#include "tests/node_runner.h"
#include "tests/test_util.h"
#include "tests/tiny_checkpoint.h"

namespace sd {
namespace {

using testing::NodeRunner;
using testing::OutTensor;

class NodeKindsTest : public testing::TinyCheckpointTest {
 protected:
  static void SetUpTestSuite() {
    TinyCheckpointTest::SetUpTestSuite();
    TestControlNetOptions c;
    c.config = ControlNetConfig::For(SdConfig::Tiny().unet);
    ASSERT_TRUE(WriteTestControlNet(dir_->File("cn.safetensors"), c).ok());
  }
  static RunContext Context() {
    RunContext ctx;
    ctx.checkpoint = TinyPath() + "|control=" + dir_->File("cn.safetensors");
    ctx.tokenizer_dir = testing::TokenizerDir();
    ctx.models = std::make_shared<ModelCache>();
    return ctx;
  }
  // Runs `text` on `values`; fails the test on an error.
  static NodeOutputs Run(const std::string& text, const std::map<std::string, Value>& values = {}) {
    auto runner = NodeRunner::FromText(text);
    EXPECT_TRUE(runner.ok()) << runner.status();
    if (!runner.ok()) return {};
    RunContext ctx = Context();
    auto out = runner->Run(values, ctx);
    EXPECT_TRUE(out.ok()) << text << ": " << out.status();
    return out.ok() ? *std::move(out) : NodeOutputs();
  }
  static double Max(const torch::Tensor& t) { return t.abs().max().item<double>(); }
};

TEST_F(NodeKindsTest, NoiseAndScheduleAndSampling) {
  const auto a = Run(R"(kind: "Noise" input: "seed=#7" input: "height=#32" input: "width=#16")");
  const auto b = Run(
      R"(kind: "Noise" input: "seed=#7" input: "height=#32" input: "width=#16" input: "index=#1")");
  EXPECT_EQ(OutTensor(a, "noise").sizes(), (std::vector<int64_t>{1, 4, 4, 2}));
  EXPECT_FALSE(torch::equal(OutTensor(a, "noise"), OutTensor(b, "noise")));
  const auto zero =
      Run(R"(kind: "Noise" input: "seed=#7" input: "height=#32" input: "width=#16" input: "t=#0")");
  EXPECT_EQ(Max(OutTensor(zero, "noise")), 0);

  const auto s = Run(R"(kind: "Schedule" input: "steps=#5")");
  EXPECT_TRUE(
      torch::equal(OutTensor(s, "timesteps"), torch::tensor({800.f, 600.f, 400.f, 200.f, 0.f})));
  EXPECT_EQ(std::get<double>(s.at("first")), 800);

  // x_t = AddNoise(x0, t, n); a sampler step given eps = n recovers x0 as its estimate (x0 inside
  // [-1, 1], where the reference's DDPM clips its estimate).
  torch::manual_seed(1);
  const torch::Tensor x0 = torch::rand({1, 4, 4, 4}) * 1.8 - 0.9, n = torch::randn({1, 4, 4, 4});
  const auto noised =
      Run(R"(kind: "AddNoise" input: "latents=@x0" input: "t=#600" input: "noise=@n")",
          {{"x0", x0}, {"n", n}});
  const torch::Tensor xt = OutTensor(noised, "latents");
  EXPECT_GT(Max(xt - x0), 0.1);
  const auto step = Run(R"(kind: "SamplerStep" input: "latents=@x" input: "eps=@n" input: "t=#600"
                           input: "steps=#5" input: "noise=@z")",
                        {{"x", xt}, {"n", n}, {"z", torch::zeros_like(n)}});
  EXPECT_LT(Max(OutTensor(step, "denoised") - x0), 1e-4);

  // MaskBlend with everything to repaint passes the sampler's latents through.
  const auto blend =
      Run(R"(kind: "MaskBlend" input: "latents=@x" input: "original=@x0" input: "mask=@m"
                            input: "t=#600" input: "steps=#5" input: "noise=@n")",
          {{"x", xt}, {"x0", x0}, {"m", torch::ones({1, 1, 4, 4})}, {"n", n}});
  EXPECT_TRUE(torch::allclose(OutTensor(blend, "latents"), xt));
}

TEST_F(NodeKindsTest, ComfySigmas) {
  // Half the denoising: the first sigma is below the largest (where ComfyUI scales the noise).
  const auto s = Run(
      R"(kind: "SigmaSchedule" input: "steps=#4" input: "scheduler=#karras" input: "denoise=#0.5")");
  const torch::Tensor sigmas = OutTensor(s, "sigmas");
  ASSERT_EQ(sigmas.numel(), 5);
  EXPECT_EQ(sigmas[4].item<float>(), 0);
  EXPECT_TRUE((sigmas.slice(0, 0, 4) > sigmas.slice(0, 1, 5)).all().item<bool>());
  EXPECT_EQ(OutTensor(s, "timesteps").numel(), 4);

  torch::manual_seed(2);
  const torch::Tensor x0 = torch::randn({1, 4, 4, 4}), n = torch::randn({1, 4, 4, 4});
  const auto start =
      Run(R"(kind: "SigmaStart" input: "latents=@x0" input: "noise=@n" input: "sigmas=@s")",
          {{"x0", x0}, {"n", n}, {"s", sigmas}});
  const float s0 = sigmas[0].item<float>();
  const torch::Tensor vp = OutTensor(start, "latents");
  EXPECT_LT(Max(vp - (x0 + s0 * n) / std::sqrt(1 + s0 * s0)), 1e-4);
  // Given the true noise, a step's x0 estimate is x0.
  const auto step = Run(R"(kind: "SigmaStep" input: "latents=@x" input: "eps=@n" input: "sigmas=@s"
                           input: "index=#0")",
                        {{"x", vp}, {"n", n}, {"s", sigmas}});
  EXPECT_LT(Max(OutTensor(step, "denoised") - x0), 1e-3);
  // With the last sigma 0, SigmaEnd hands the latents on unchanged.
  const auto end =
      Run(R"(kind: "SigmaEnd" input: "latents=@x" input: "sigmas=@s")", {{"x", x0}, {"s", sigmas}});
  EXPECT_TRUE(torch::allclose(OutTensor(end, "latents"), x0));

  // NoiseMaskIn / Out with everything to repaint: the model sees the loop's latents, eps unchanged.
  const torch::Tensor ones = torch::ones({1, 1, 4, 4});
  const auto in =
      Run(R"(kind: "NoiseMaskIn" input: "latents=@x" input: "original=@o" input: "mask=@m"
                         input: "sigmas=@s" input: "index=#0")",
          {{"x", vp}, {"o", x0}, {"m", ones}, {"s", sigmas}});
  EXPECT_TRUE(torch::allclose(OutTensor(in, "latents"), vp));
  const auto out =
      Run(R"(kind: "NoiseMaskOut" input: "latents=@x" input: "original=@o" input: "mask=@m"
                          input: "sigmas=@s" input: "index=#0" input: "model_latents=@x" input: "eps=@n")",
          {{"x", vp}, {"o", x0}, {"m", ones}, {"s", sigmas}, {"n", n}});
  EXPECT_TRUE(torch::allclose(OutTensor(out, "eps"), n, 1e-5, 1e-5));
}

TEST_F(NodeKindsTest, GuidanceAndBatches) {
  const torch::Tensor c = torch::full({2, 4, 2, 2}, 3.0), u = torch::full({2, 4, 2, 2}, 1.0);
  const auto cfg =
      Run(R"(kind: "CfgCombine" input: "cond=@c" input: "uncond=@u" input: "scale=#7.5")",
          {{"c", c}, {"u", u}});
  EXPECT_TRUE(torch::allclose(OutTensor(cfg, "eps"), torch::full({2, 4, 2, 2}, 16.0)));

  const torch::Tensor batch = torch::arange(4.0).reshape({4, 1, 1, 1});
  const auto sel =
      Run(R"(kind: "BatchSelect" input: "tensor=@b" input: "index=#1" input: "length=#2")",
          {{"b", batch}});
  EXPECT_TRUE(torch::equal(OutTensor(sel, "tensor").flatten(),
                           torch::tensor({1.0, 2.0}).to(torch::kFloat)));
  const auto rep =
      Run(R"(kind: "BatchRepeat" input: "tensor=@b" input: "amount=#3")", {{"b", batch}});
  EXPECT_EQ(OutTensor(rep, "tensor").size(0), 12);
  const auto empty =
      Run(R"(kind: "EmptyLatent" input: "width=#64" input: "height=#32" input: "batch=#2")");
  EXPECT_EQ(OutTensor(empty, "latents").sizes(), (std::vector<int64_t>{2, 4, 4, 8}));
  EXPECT_EQ(Max(OutTensor(empty, "latents")), 0);
}

TEST_F(NodeKindsTest, ImagesAndResizing) {
  torch::Tensor px = torch::zeros({16, 16, 3}, torch::kUInt8);
  px.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, 8)}, 255);  // left half white
  const auto img = Run(R"(kind: "ImageToTensor" input: "pixels=@p")", {{"p", px}});
  const torch::Tensor image = OutTensor(img, "image");
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));
  EXPECT_EQ(image[0][0][0][0].item<float>(), 1);
  EXPECT_EQ(image[0][0][0][15].item<float>(), -1);
  const auto back = Run(R"(kind: "TensorToImage" input: "image=@i")", {{"i", image}});
  EXPECT_TRUE(torch::equal(std::get<torch::Tensor>(back.at("pixels")), px));
  const auto many =
      Run(R"(kind: "TensorToImages" input: "image=@i")", {{"i", torch::cat({image, image})}});
  EXPECT_EQ(OutTensor(many, "pixels").sizes(), (std::vector<int64_t>{2, 16, 16, 3}));
  const auto inv = Run(R"(kind: "ImageInvert" input: "image=@i")", {{"i", image}});
  EXPECT_TRUE(torch::equal(OutTensor(inv, "image"), -image));
  const auto big = Run(R"(kind: "ImageScale" input: "image=@i" input: "scale=#2")", {{"i", image}});
  EXPECT_EQ(OutTensor(big, "image").sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  const auto lat =
      Run(R"(kind: "LatentUpscale" input: "latents=@l" input: "width=#128" input: "height=#64")",
          {{"l", torch::randn({1, 4, 4, 4})}});
  EXPECT_EQ(OutTensor(lat, "latents").sizes(), (std::vector<int64_t>{1, 4, 8, 16}));

  // Canny: the edge between the halves, nothing inside either.
  const auto edges = Run(R"(kind: "Canny" input: "pixels=@p")", {{"p", px}});
  const torch::Tensor e = OutTensor(edges, "pixels");
  EXPECT_EQ(e[8][2][0].item<uint8_t>(), 0);
  EXPECT_EQ(e[8][12][0].item<uint8_t>(), 0);
  EXPECT_GT(e.index({8, torch::indexing::Slice(6, 10), 0}).max().item<uint8_t>(), 0);
  const auto hint = Run(R"(kind: "ControlHint" input: "pixels=@p" input: "latents=@l")",
                        {{"p", px}, {"l", torch::zeros({1, 4, 4, 4})}});
  const torch::Tensor h = OutTensor(hint, "hint");
  EXPECT_EQ(h.sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  EXPECT_EQ(h[0][0][0][0].item<float>(), 1);
  EXPECT_EQ(h[0][0][0][31].item<float>(), 0);
}

TEST_F(NodeKindsTest, Masks) {
  torch::Tensor white_left = torch::zeros({16, 16, 3}, torch::kUInt8);
  white_left.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, 8)}, 255);
  const auto m = Run(R"(kind: "MaskToLatent" input: "mask=@m")", {{"m", white_left}});
  const torch::Tensor mask = OutTensor(m, "pixels");
  EXPECT_EQ(OutTensor(m, "latent").sizes(), (std::vector<int64_t>{1, 1, 2, 2}));
  EXPECT_EQ(mask[0][0][0][0].item<float>(), 1);
  EXPECT_EQ(mask[0][0][0][15].item<float>(), 0);
  const auto inv = Run(R"(kind: "MaskInvert" input: "mask=@m")", {{"m", mask}});
  EXPECT_TRUE(torch::equal(OutTensor(inv, "mask"), 1 - mask));
  const torch::Tensor image = torch::ones({1, 3, 16, 16});
  const auto masked =
      Run(R"(kind: "MaskImage" input: "image=@i" input: "mask=@m")", {{"i", image}, {"m", mask}});
  EXPECT_EQ(OutTensor(masked, "image")[0][0][0][0].item<float>(), 0);
  EXPECT_EQ(OutTensor(masked, "image")[0][0][0][15].item<float>(), 1);
  const auto prep =
      Run(R"(kind: "InpaintPrepare" input: "image=@i" input: "mask=@m" input: "grow=#0")",
          {{"i", image}, {"m", mask}});
  EXPECT_EQ(OutTensor(prep, "image")[0][0][0][0].item<float>(), 0);  // grey in [-1, 1]
  EXPECT_EQ(OutTensor(prep, "image")[0][0][0][15].item<float>(), 1);
  const torch::Tensor generated = torch::full({16, 16, 3}, 100, torch::kUInt8);
  const torch::Tensor original = torch::full({16, 16, 3}, 7, torch::kUInt8);
  const auto comp =
      Run(R"(kind: "MaskComposite" input: "pixels=@g" input: "original=@o" input: "mask=@m")",
          {{"g", generated}, {"o", original}, {"m", mask}});
  const torch::Tensor c = OutTensor(comp, "pixels");
  EXPECT_EQ(c[0][0][0].item<uint8_t>(), 100);
  EXPECT_EQ(c[0][15][0].item<uint8_t>(), 7);
}

TEST_F(NodeKindsTest, TextAndModels) {
  const auto tok = Run(R"(kind: "Tokenize" input: "text=#a red circle")");
  const torch::Tensor t = OutTensor(tok, "tokens");
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{1, 77}));
  EXPECT_EQ(t[0][0].item<int64_t>(), 49406);
  EXPECT_EQ(t[0][4].item<int64_t>(), 49407);
  const auto prompt = Run(R"(kind: "TokenizePrompt" input: "text=#a (red:1.5) circle")");
  EXPECT_TRUE(torch::equal(OutTensor(prompt, "tokens"), t));
  EXPECT_FLOAT_EQ(OutTensor(prompt, "weights")[0][2].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(OutTensor(prompt, "weights")[0][3].item<float>(), 1.0f);

  const auto clip = Run(R"(kind: "ClipEncode" input: "tokens=@t")", {{"t", t}});
  const torch::Tensor context = OutTensor(clip, "context");
  EXPECT_EQ(context.sizes(), (std::vector<int64_t>{1, 77, 64}));
  const auto skip =
      Run(R"(kind: "ClipEncode" input: "tokens=@t" input: "clip_skip=#2")", {{"t", t}});
  EXPECT_FALSE(torch::allclose(OutTensor(skip, "context"), context));
  const auto weighted = Run(R"(kind: "ApplyPromptWeights" input: "context=@c" input: "weights=@w")",
                            {{"c", context}, {"w", torch::ones({1, 77})}});
  EXPECT_TRUE(torch::allclose(OutTensor(weighted, "context"), context));

  torch::manual_seed(3);
  const torch::Tensor latents = torch::randn({1, 4, 8, 8});
  const std::map<std::string, Value> in = {{"x", latents}, {"c", context}};
  const auto e1 =
      Run(R"(kind: "UNetStep" input: "latents=@x" input: "t=#500" input: "context=@c")", in);
  const auto e2 =
      Run(R"(kind: "UNetStep" input: "latents=@x" input: "t=#100" input: "context=@c")", in);
  EXPECT_EQ(OutTensor(e1, "eps").sizes(), latents.sizes());
  EXPECT_FALSE(torch::allclose(OutTensor(e1, "eps"), OutTensor(e2, "eps")));
  // A ControlNet at strength 0 steers nothing; at 1 it does.
  const std::map<std::string, Value> cn_in = {
      {"h", torch::rand({1, 3, 64, 64})}, {"x", latents}, {"c", context}};
  const auto r0 = Run(R"(kind: "ControlNet" input: "hint=@h" input: "latents=@x" input: "t=#500"
                         input: "context=@c" input: "strength=#0")",
                      cn_in);
  const auto r1 = Run(R"(kind: "ControlNet" input: "hint=@h" input: "latents=@x" input: "t=#500"
                         input: "context=@c")",
                      cn_in);
  EXPECT_EQ(Max(OutTensor(r0, "residuals")), 0);
  EXPECT_GT(Max(OutTensor(r1, "residuals")), 0);

  const auto dec = Run(R"(kind: "VaeDecode" input: "latents=@x")", {{"x", latents}});
  const torch::Tensor image = OutTensor(dec, "image");
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{1, 3, 64, 64}));
  const auto enc = Run(R"(kind: "VaeEncode" input: "image=@i")", {{"i", image.clamp(-1, 1)}});
  EXPECT_EQ(OutTensor(enc, "latents").sizes(), latents.sizes());
}

// ApplyLora: the run's model (or its `model` input) with one more LoRA; none: the model as it is.
TEST_F(NodeKindsTest, ApplyLoraAndApplyVae) {
  const std::string run_model = Context().checkpoint;  // TINY|control=CN
  auto model = [](const NodeOutputs& out) { return std::get<std::string>(out.at("model")); };
  EXPECT_EQ(
      model(Run(R"(kind: "ApplyLora" input: "lora=@l" input: "unet=@u")",
                {{"l", std::string("style.safetensors:0.5")}, {"u", 0.25}})),
      absl::StrReplaceAll(run_model, {{"|control=", "|lora=style.safetensors:0.25:0.5|control="}}));
  EXPECT_EQ(
      model(Run(
          R"(kind: "ApplyLora" input: "model=@m" input: "lora=@l" input: "text=@t")",
          {{"m", std::string("a.safetensors|lora=b:1:1")}, {"l", std::string("c")}, {"t", 0.0}})),
      "a.safetensors|lora=b:1:1|lora=c:1:0");
  EXPECT_EQ(model(Run(R"(kind: "ApplyLora")")), run_model);
  // ApplyVae: the model's VAE replaced (a second one replaces the first).
  EXPECT_EQ(model(Run(R"(kind: "ApplyVae" input: "model=@m" input: "vae=@v")",
                      {{"m", std::string("a.safetensors|vae=x|lora=b:1:1")},
                       {"v", std::string("ft.safetensors")}})),
            "a.safetensors|vae=ft.safetensors|lora=b:1:1");
  EXPECT_EQ(model(Run(R"(kind: "ApplyVae" input: "vae=@v")", {{"v", std::string()}})), run_model);
}

// The kinds the tests above drive, against the registry's stock kinds.
TEST_F(NodeKindsTest, EveryStockKindIsDrivenHere) {
  const std::vector<std::string> stock = StockNodeKinds();
  const std::set<std::string> expected = {"AddNoise",       "ApplyLora",      "ApplyPromptWeights",
                                          "ApplyVae",       "BatchRepeat",    "BatchSelect",
                                          "Canny",          "CfgCombine",     "ClipEncode",
                                          "ControlHint",    "ControlNet",     "EmptyLatent",
                                          "ImageInvert",    "ImageScale",     "ImageToTensor",
                                          "InpaintPrepare", "LatentUpscale",  "MaskBlend",
                                          "MaskComposite",  "MaskImage",      "MaskInvert",
                                          "MaskToLatent",   "Noise",          "NoiseMaskIn",
                                          "NoiseMaskOut",   "SamplerStep",    "Schedule",
                                          "SigmaEnd",       "SigmaSchedule",  "SigmaStart",
                                          "SigmaStep",      "TensorToImage",  "TensorToImages",
                                          "Tokenize",       "TokenizePrompt", "UNetStep",
                                          "VaeDecode",      "VaeEncode"};
  EXPECT_EQ(std::set<std::string>(stock.begin(), stock.end()), expected)
      << "a stock kind was added or removed: give it a NodeRunner test in this file";
}

// Every kind's ports are declared typed, once: each tensor port says the size of each of its axes
// (dims that parse, one per axis of its rank), scalars say none, and no port name repeats on a
// side.
TEST(NodeContractTest, EveryKindDeclaresItsTensorPortsDims) {
  StockNodeKinds();
  for (const std::string& kind : NodeRegistry::Get().Names()) {
    const NodeContract c = (*NodeRegistry::Get().Find(kind))->contract();
    EXPECT_TRUE(CheckContract(kind, c).ok()) << CheckContract(kind, c);
    for (const auto* ports : {&c.inputs, &c.outputs}) {
      std::set<std::string> names;
      for (const PortSpec& p : *ports) {
        EXPECT_TRUE(names.insert(p.name).second) << kind << " port '" << p.name << "' twice";
        if (p.type.kind() == v1::TENSOR && p.type.rank() >= 0) {
          EXPECT_FALSE(p.dims.empty()) << kind << " port '" << p.name << "' has no dims";
        }
      }
    }
  }
}

TEST(NodeRunnerTest, RefusesWhatAGraphWouldRefuse) {
  StockNodeKinds();
  EXPECT_FALSE(NodeRunner::FromText(R"(kind: "NoSuchKind")").ok());
  EXPECT_FALSE(NodeRunner::FromText(R"(kind: "CfgCombine" input: "cond=@c")").ok());  // not wired
  EXPECT_FALSE(NodeRunner::FromText(R"(kind: "CfgCombine" input: "cond=@c" input: "uncond=@u"
                                        input: "scale=#high")")
                   .ok());  // not a float
  auto r = NodeRunner::FromText(
      R"(kind: "CfgCombine" input: "cond=@c" input: "uncond=@u" input: "scale=#1")");
  ASSERT_TRUE(r.ok()) << r.status();
  // A value of the wrong type on a port is refused before the kernel sees it.
  auto out = r->Run({{"c", torch::zeros({1, 4, 2, 2})}, {"u", std::string("text")}});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  // And tensors that do not fit the ports' dims (cond and uncond must be one shape).
  auto sizes = r->Run({{"c", torch::zeros({1, 4, 2, 2})}, {"u", torch::zeros({1, 4, 2, 3})}});
  EXPECT_EQ(sizes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(sizes.status().message()),
              ::testing::HasSubstr("input 'uncond' [1, 4, 2, 3]: axis 3 is 3, expected w = 2"));
}

// The front ends' one resizer (init images, masks, results): antialiased, so a fine checkerboard
// halves to grey rather than to one of its colours.
TEST(ResizePixelsTest, AntialiasedAnySizeAnyChannels) {
  const torch::Tensor board =
      (torch::arange(64).reshape({8, 8}) % 2 + torch::arange(8).reshape({8, 1}) % 2) % 2 * 255;
  const torch::Tensor px = board.to(torch::kUInt8).unsqueeze(2).expand({8, 8, 3}).contiguous();
  auto half = ResizePixels(px, 4, 4);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(half->sizes(), (std::vector<int64_t>{4, 4, 3}));
  EXPECT_NEAR(half->to(torch::kFloat).mean().item<float>(), 127.5, 3);
  EXPECT_LT((half->to(torch::kFloat) - 127.5).abs().max().item<float>(), 40);
  auto same = ResizePixels(px, 8, 8);
  EXPECT_TRUE(torch::equal(*same, px));
  auto mask = ResizePixels(torch::full({6, 10, 1}, 255, torch::kUInt8), 20, 12);
  ASSERT_TRUE(mask.ok()) << mask.status();
  EXPECT_TRUE(torch::equal(*mask, torch::full({12, 20, 1}, 255, torch::kUInt8)));
  EXPECT_EQ(ResizePixels(torch::zeros({8, 8, 3}), 4, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ResizePixels(px, 0, 4).ok());
}

}  // namespace
}  // namespace sd
