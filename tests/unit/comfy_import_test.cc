// ComfyUI workflows translated and run on a tiny checkpoint: the graph a workflow becomes computes
// what the equivalent hand-written graph computes; KSamplerAdvanced's halves equal one KSampler;
// inpainting keeps the known latents; the model a workflow names; and the command line (run,
// import-comfy, PNGs).
#include "host_plugin/runtime/comfy_import.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "absl/strings/str_replace.h"
#include "host_plugin/cli/image_io.h"
#include "host_plugin/runtime/comfy_export.h"
#include "host_plugin/runtime/graph.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;
using testing::Quote;
using testing::RunCommand;

// txt2img as a ComfyUI user builds it, on the tiny checkpoint.
constexpr char kTxt2Img[] = R"({
  "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 4, "cfg": 6.5, "sampler_name": "dpmpp_2m",
        "scheduler": "karras", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}},
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
  "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.2) fox", "clip": ["4", 1]}},
  "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
  "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
  "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}
})";

// The same, written by hand with our node kinds.
constexpr char kTxt2ImgByHand[] = R"(
input { name: "seed" type { kind: INT } default_value { i: 5 } }
input { name: "prompt" type { kind: STRING } default_value { s: "a (red:1.2) fox" } }
input { name: "negative" type { kind: STRING } default_value { s: "blurry" } }
input { name: "w" type { kind: STRING } default_value { s: "comfy" } }
input { name: "steps" type { kind: INT } default_value { i: 4 } }
input { name: "scheduler" type { kind: STRING } default_value { s: "karras" } }
input { name: "sampler" type { kind: STRING } default_value { s: "dpmpp_2m" } }
input { name: "cfg" type { kind: FLOAT } default_value { f: 6.5 } }
input { name: "size" type { kind: INT } default_value { i: 64 } }
node { kind: "TokenizePrompt" name: "tp" input: "text=@prompt" input: "weighting=@w" }
node { kind: "ClipEncode" name: "cp" input: "tokens=tp.tokens" input: "vectors=tp.vectors" }
node { kind: "ApplyPromptWeights" name: "pos" input: "context=cp.context" input: "weights=tp.weights" input: "weighting=@w" }
node { kind: "TokenizePrompt" name: "tn" input: "text=@negative" input: "weighting=@w" }
node { kind: "ClipEncode" name: "cn" input: "tokens=tn.tokens" input: "vectors=tn.vectors" }
node { kind: "ApplyPromptWeights" name: "neg" input: "context=cn.context" input: "weights=tn.weights" input: "weighting=@w" }
node { kind: "EmptyLatent" name: "empty" input: "width=@size" input: "height=@size" }
node { kind: "SigmaSchedule" name: "sigmas" input: "steps=@steps" input: "scheduler=@scheduler" }
node { kind: "Noise" name: "noise" input: "seed=@seed" input: "latents=empty.latents" }
node { kind: "SigmaStart" name: "start" input: "latents=empty.latents" input: "noise=noise.noise" input: "sigmas=sigmas.sigmas" }
loop {
  name: "denoise" timesteps: "sigmas.timesteps"
  carry { name: "x" init: "start.latents" next: "step.latents" }
  carry { name: "h" init: "start.latents" next: "step.denoised" }
  node { kind: "UNetStep" name: "c" input: "latents=@loop.x" input: "t=@loop.t" input: "context=pos.context" }
  node { kind: "UNetStep" name: "u" input: "latents=@loop.x" input: "t=@loop.t" input: "context=neg.context" }
  node { kind: "CfgCombine" name: "cfg" input: "cond=c.eps" input: "uncond=u.eps" input: "scale=@cfg" }
  node { kind: "SigmaStep" name: "step" input: "latents=@loop.x" input: "eps=cfg.eps" input: "sigmas=sigmas.sigmas"
         input: "index=@loop.index" input: "sampler=@sampler" input: "history=@loop.h" }
}
node { kind: "SigmaEnd" name: "end" input: "latents=denoise.x" input: "sigmas=sigmas.sigmas" }
node { kind: "VaeDecode" name: "decode" input: "latents=end.latents" }
node { kind: "TensorToImages" name: "px" input: "image=decode.image" }
output { name: "image" source: "px.pixels" }
)";

std::string Edit(std::string json, const std::vector<std::pair<std::string, std::string>>& edits) {
  for (const auto& [from, to] : edits) {
    const std::string before = json;
    json = absl::StrReplaceAll(json, {{from, to}});
    EXPECT_NE(json, before) << from;
  }
  return json;
}

class ComfyImportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    std::filesystem::create_directories(dir_->File("models/checkpoints"));
    TestCheckpointOptions o;
    o.config = SdConfig::Tiny();
    ASSERT_TRUE(WriteTestCheckpoint(dir_->File("models/checkpoints/tiny.safetensors"), o).ok());
    o.config.unet.in_channels = 9;  // an inpainting checkpoint
    ASSERT_TRUE(WriteTestCheckpoint(dir_->File("models/checkpoints/tiny9.safetensors"), o).ok());
    torch::Tensor init =
        torch::arange(64 * 64 * 3).reshape({64, 64, 3}).remainder(251).to(torch::kUInt8);
    ASSERT_TRUE(WriteImageRgb8(dir_->File("init.png"), init).ok());
    torch::Tensor mask = torch::zeros({64, 64, 3}, torch::kUInt8);
    mask.slice(1, 32, 64).fill_(255);  // the right half: repaint
    ASSERT_TRUE(WriteImageRgb8(dir_->File("mask.png"), mask).ok());
    StockNodeKinds();
    ImageNodeKinds();
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string Model() { return dir_->File("models/checkpoints/tiny.safetensors"); }
  static absl::StatusOr<ComfyGraph> Translate(const std::string& json) {
    auto w = ParseComfyWorkflow(json, "w.json");
    if (!w.ok()) return w.status();
    return TranslateComfyWorkflow(*w, {dir_->path()});
  }
  // Runs graph text on the tiny checkpoint; the outputs plus `capture`.
  static std::map<std::string, Value> Run(const std::string& text,
                                          const std::vector<std::string>& capture = {},
                                          const std::map<std::string, Value>& inputs = {},
                                          const std::string& model = Model()) {
    auto g = Graph::FromText(text, "graph");
    EXPECT_TRUE(g.ok()) << g.status() << "\n" << text;
    if (!g.ok()) return {};
    RunContext ctx;
    ctx.checkpoint = model;
    ctx.models = std::make_shared<ModelCache>();
    RunOptions options;
    options.capture = capture;
    auto out = g->Run(inputs, ctx, options);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : std::map<std::string, Value>{};
  }
  static torch::Tensor T(const std::map<std::string, Value>& out, const std::string& key) {
    auto it = out.find(key);
    return it == out.end() ? torch::Tensor() : std::get<torch::Tensor>(it->second);
  }
  static testing::TempDir* dir_;
};
testing::TempDir* ComfyImportTest::dir_;

TEST_F(ComfyImportTest, Txt2ImgComputesWhatTheHandWrittenGraphDoes) {
  auto g = Translate(kTxt2Img);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->model.checkpoint, "tiny.safetensors");
  for (const char* line : {R"(name: "seed" type { kind: INT } default_value { i: 5 })",
                           R"(node { kind: "SigmaSchedule" name: "3_sigmas")", R"(loop {
  name: "3_loop")",
                           R"(output { name: "image" source: "9.pixels" })"}) {
    EXPECT_THAT(g->text, HasSubstr(line));
  }
  for (int64_t seed : {5, 11}) {
    const torch::Tensor ours = T(Run(g->text, {}, {{"seed", seed}}), "image");
    const torch::Tensor by_hand = T(Run(kTxt2ImgByHand, {}, {{"seed", seed}}), "image");
    ASSERT_TRUE(ours.defined() && by_hand.defined());
    EXPECT_TRUE(torch::equal(ours, by_hand)) << "seed " << seed;
  }
}

// img2img as ComfyUI builds it (LoadImage, VAEEncode, KSampler at denoise 0.6) and by hand.
TEST_F(ComfyImportTest, Img2ImgComputesWhatTheHandWrittenGraphDoes) {
  const std::string json = Edit(
      kTxt2Img,
      {{R"("latent_image": ["5", 0])", R"("latent_image": ["12", 0])"},
       {R"("denoise": 1,)", R"("denoise": 0.6,)"},
       {R"("5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},)",
        R"("10": {"class_type": "LoadImage", "inputs": {"image": "init.png"}},
      "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},)"}});
  const std::string by_hand = Edit(
      kTxt2ImgByHand,
      {{R"(node { kind: "EmptyLatent" name: "empty" input: "width=@size" input: "height=@size" })",
        R"(input { name: "image" type { kind: STRING } default_value { s: "IMAGE" } }
input { name: "denoise" type { kind: FLOAT } default_value { f: 0.6 } }
node { kind: "LoadImage" name: "file" input: "path=@image" }
node { kind: "ImageToTensor" name: "pixels" input: "pixels=file.pixels" }
node { kind: "VaeEncode" name: "empty" input: "image=pixels.image" })"},
       {R"(input: "scheduler=@scheduler" })",
        R"(input: "scheduler=@scheduler" input: "denoise=@denoise" })"},
       {"IMAGE", dir_->File("init.png")}});
  auto g = Translate(json);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->text,
              HasSubstr(R"(node { kind: "VaeEncode" name: "12" input: "image=10.image" })"));
  EXPECT_THAT(g->text,
              HasSubstr(R"(name: "denoise" type { kind: FLOAT } default_value { f: 0.6 })"));
  const torch::Tensor ours = T(Run(g->text), "image"), hand = T(Run(by_hand), "image");
  ASSERT_TRUE(ours.defined() && hand.defined());
  EXPECT_TRUE(torch::equal(ours, hand));
}

// Steps 0-4 with leftover noise, then 4-8 without adding noise, are one 8-step run.
TEST_F(ComfyImportTest, KSamplerAdvancedHalvesEqualOneSampler) {
  const std::string whole =
      Edit(kTxt2Img, {{R"("steps": 4)", R"("steps": 8)"}, {"dpmpp_2m", "euler"}});
  const std::string advanced =
      R"("class_type": "KSamplerAdvanced", "inputs": {"noise_seed": 5, "steps": 8, "cfg": 6.5,
      "sampler_name": "euler", "scheduler": "karras", "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],)";
  const std::string halves = Edit(
      kTxt2Img,
      {{R"("3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 4, "cfg": 6.5, "sampler_name": "dpmpp_2m",
        "scheduler": "karras", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}},)",
        std::string(R"("3": {)") + advanced +
            R"( "latent_image": ["10", 0], "add_noise": "disable", "start_at_step": 4,
          "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
      "10": {)" +
            advanced +
            R"( "latent_image": ["5", 0], "add_noise": "enable", "start_at_step": 0, "end_at_step": 4,
          "return_with_leftover_noise": "enable"}},)"}});
  auto a = Translate(whole), b = Translate(halves);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(b->text,
              HasSubstr(R"(name: "start_at_step_3" type { kind: INT } default_value { i: 4 })"));
  EXPECT_THAT(b->text, ::testing::Not(HasSubstr(R"(name: "3_noise")")));  // add_noise: disable
  const torch::Tensor one = T(Run(a->text, {"3.latents"}), "3.latents");
  const torch::Tensor two = T(Run(b->text, {"3.latents", "10.latents"}), "3.latents");
  ASSERT_TRUE(one.defined() && two.defined());
  EXPECT_LT((one - two).abs().max().item<double>(), 1e-4);
}

TEST_F(ComfyImportTest, HiresFixWorkflowNamesItsTwoSeeds) {
  const std::string json =
      Edit(kTxt2Img, {{R"("samples": ["3", 0])", R"("samples": ["12", 0])"},
                      {R"("9": {)", R"("11": {"class_type": "LatentUpscaleBy", "inputs":
      {"samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 2}},
      "12": {"class_type": "KSampler", "inputs": {"seed": 6, "steps": 4, "cfg": 6.5, "sampler_name": "euler_ancestral",
        "scheduler": "normal", "denoise": 0.5, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["11", 0]}},
      "9": {)"}});
  auto g = Translate(json);
  ASSERT_TRUE(g.ok()) << g.status();
  for (const char* line :
       {R"(name: "seed_3" type { kind: INT } default_value { i: 5 })",
        R"(name: "seed_12" type { kind: INT } default_value { i: 6 })",
        R"(name: "steps" type { kind: INT } default_value { i: 4 })",
        R"(node { kind: "LatentUpscale" name: "11" input: "latents=3.latents")"}) {
    EXPECT_THAT(g->text, HasSubstr(line));
  }
  const torch::Tensor image = T(Run(g->text), "image");
  ASSERT_TRUE(image.defined());
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{1, 128, 128, 3}));
}

// With a noise mask, the sampler hands back the given latents where the mask is 0 (ComfyUI's
// blend).
TEST_F(ComfyImportTest, InpaintingKeepsTheKnownLatents) {
  for (const std::string& encode :
       {std::string(R"("13": {"class_type": "SetLatentNoiseMask", "inputs":
          {"samples": ["12", 0], "mask": ["11", 0]}},
      "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},)"),
        std::string(R"("13": {"class_type": "VAEEncodeForInpaint", "inputs":
          {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["11", 0], "grow_mask_by": 0}},)")}) {
    const std::string json =
        Edit(kTxt2Img,
             {{R"("latent_image": ["5", 0])", R"("latent_image": ["13", 0])"},
              {R"("9": {)", R"("10": {"class_type": "LoadImage", "inputs": {"image": "init.png"}},
      "11": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
      )" + encode + R"(
      "9": {)"}});
    auto g = Translate(json);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_THAT(g->text, HasSubstr(R"(node { kind: "NoiseMaskIn" name: "3_masked")"));
    // ComfyUI's ddim re-noises the known region from the seed + 1 stream.
    auto ddim = Translate(Edit(json, {{"dpmpp_2m", "ddim"}}));
    ASSERT_TRUE(ddim.ok()) << ddim.status();
    EXPECT_THAT(ddim->text, HasSubstr(R"(name: "3_mask_noise" input: "seed=@seed")"));
    EXPECT_THAT(ddim->text, HasSubstr("seed_offset: 1"));
    EXPECT_THAT(ddim->text, HasSubstr(R"(input: "noise=3_mask_noise.noise")"));
    EXPECT_TRUE(T(Run(ddim->text), "image").defined());
    const std::string known =
        encode.find("ForInpaint") != std::string::npos ? "13.latents" : "12.latents";
    // An ordinary checkpoint, and an inpainting one (9 UNet channels: the mask and the given
    // latents go in beside the latents, as ComfyUI concatenates them).
    for (const char* model : {"tiny.safetensors", "tiny9.safetensors"}) {
      auto out = Run(g->text, {"3.latents", known}, {},
                     dir_->File(std::string("models/checkpoints/") + model));
      const torch::Tensor result = T(out, "3.latents"), original = T(out, known);
      ASSERT_TRUE(result.defined() && original.defined()) << model;
      using torch::indexing::Slice;
      const torch::Tensor diff = (result - original).abs();
      EXPECT_LT(diff.index({Slice(), Slice(), Slice(), Slice(0, 4)}).max().item<double>(), 1e-5)
          << model;
      EXPECT_GT(diff.index({Slice(), Slice(), Slice(), Slice(4, 8)}).max().item<double>(), 1e-2)
          << model;
    }
  }
}

// A batch of two draws both images from one noise tensor, as ComfyUI; LatentFromBatch's slice 1 of
// it draws the second image alone (ComfyUI's batch_index noise), so it equals the batch's second
// image; RepeatLatentBatch of an encoded image makes variations of it. The command line writes
// OUT-1, OUT-2.
TEST_F(ComfyImportTest, BatchesAndTheirSlices) {
  const std::string batch = Edit(kTxt2Img, {{R"("batch_size": 1)", R"("batch_size": 2)"}});
  const std::string slice =
      Edit(batch, {{R"("latent_image": ["5", 0])", R"("latent_image": ["10", 0])"},
                   {R"("9": {)", R"("10": {"class_type": "LatentFromBatch", "inputs":
      {"samples": ["5", 0], "batch_index": 1, "length": 1}},
      "9": {)"}});
  auto b = Translate(batch), s = Translate(slice);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->text, HasSubstr(R"(input: "batch_index=@batch_index")"));
  const auto batch_out = Run(b->text, {"3.latents"}), slice_out = Run(s->text, {"3.latents"});
  const torch::Tensor two = T(batch_out, "image"), second = T(slice_out, "image");
  ASSERT_EQ(two.sizes(), (std::vector<int64_t>{2, 64, 64, 3}));
  ASSERT_EQ(second.sizes(), (std::vector<int64_t>{1, 64, 64, 3}));
  EXPECT_FALSE(torch::equal(two[0], two[1]));
  // The same noise; a UNet batch of 2 rounds differently from a batch of 1 (other GEMM shapes).
  const torch::Tensor x2 = T(batch_out, "3.latents"), x1 = T(slice_out, "3.latents");
  EXPECT_LT((x2[1] - x1[0]).abs().max().item<double>(), 1e-4 * (1 + x1.abs().max().item<double>()));
  EXPECT_GT((x2[0] - x1[0]).abs().max().item<double>(), 0.1);
  const std::string repeat =
      Edit(kTxt2Img,
           {{R"("latent_image": ["5", 0])", R"("latent_image": ["13", 0])"},
            {R"("denoise": 1,)", R"("denoise": 0.6,)"},
            {R"("9": {)", R"("10": {"class_type": "LoadImage", "inputs": {"image": "init.png"}},
      "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
      "13": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["12", 0], "amount": 3}},
      "9": {)"}});
  auto r = Translate(repeat);
  ASSERT_TRUE(r.ok()) << r.status();
  const torch::Tensor three = T(Run(r->text), "image");
  ASSERT_EQ(three.sizes(), (std::vector<int64_t>{3, 64, 64, 3}));
  EXPECT_FALSE(torch::equal(three[0], three[2]));
  const std::string json = dir_->File("batch.json"), out = dir_->File("batch.png");
  testing::WriteFile(json, batch);
  auto cli = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " run " + Quote(json) +
                        " --comfy-models " + Quote(dir_->File("models")) + " -o " + Quote(out));
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  for (const char* file : {"batch-1.png", "batch-2.png"}) {
    auto px = ReadImageRgb8(dir_->File(file));
    ASSERT_TRUE(px.ok()) << px.status();
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

// ControlNetLoader + ControlNetApplyAdvanced (both halves) and a ControlNetApply chained on the
// positive: the loaders' files join the model in order, the sampler runs a chain of ControlNet
// nodes per half before its UNet steps; at strength 0 the image is the workflow's without them, and
// `sd-graph run` finds the files in --comfy-models DIR/controlnet.
TEST_F(ComfyImportTest, ControlNetsSteerTheHalvesTheyAreAppliedTo) {
  std::filesystem::create_directories(dir_->File("models/controlnet"));
  TestControlNetOptions o;
  o.config = ControlNetConfig::For(SdConfig::Tiny().unet);
  ASSERT_TRUE(WriteTestControlNet(dir_->File("models/controlnet/canny.safetensors"), o).ok());
  o.layout = ControlNetLayout::kDiffusers;
  ASSERT_TRUE(WriteTestControlNet(dir_->File("models/controlnet/depth.safetensors"), o).ok());
  const std::string json = Edit(
      kTxt2Img,
      {{R"("positive": ["6", 0], "negative": ["7", 0])",
        R"("positive": ["22", 0], "negative": ["21", 1])"},
       {R"("9": {)",
        R"("20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}},
  "23": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "depth.safetensors"}},
  "24": {"class_type": "LoadImage", "inputs": {"image": "init.png"}},
  "21": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["6", 0], "negative": ["7", 0],
        "control_net": ["20", 0], "image": ["24", 0], "strength": 0.9, "start_percent": 0, "end_percent": 0.7}},
  "22": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["21", 0], "control_net": ["23", 0],
        "image": ["24", 0], "strength": 0.5}},
  "9": {)"}});
  auto g = Translate(json);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->model.controlnets,
            (std::vector<std::string>{"canny.safetensors", "depth.safetensors"}));
  for (const char* line : {R"(name: "3_cond_control1")", R"(name: "3_uncond_control0")",
                           R"(input: "residuals=3_cond_control0.residuals")", "index: 1"}) {
    EXPECT_THAT(g->text, HasSubstr(line));
  }
  EXPECT_THAT(g->text, ::testing::Not(HasSubstr("3_uncond_control1")));
  const std::string model = Model() +
                            "|control=" + dir_->File("models/controlnet/canny.safetensors") +
                            "|control=" + dir_->File("models/controlnet/depth.safetensors");
  auto without = Translate(kTxt2Img);
  ASSERT_TRUE(without.ok()) << without.status();
  const torch::Tensor plain = T(Run(without->text), "image");
  const torch::Tensor off =
      T(Run(g->text, {}, {{"control_strength_21", 0.0}, {"control_strength_22", 0.0}}, model),
        "image");
  const torch::Tensor on = T(Run(g->text, {}, {}, model), "image");
  ASSERT_TRUE(plain.defined() && off.defined() && on.defined());
  EXPECT_TRUE(torch::equal(off, plain));
  EXPECT_FALSE(torch::equal(on, plain));
  const std::string file = dir_->File("cn.json"), out = dir_->File("cn.png");
  testing::WriteFile(file, json);
  auto cli = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " run " + Quote(file) +
                        " --comfy-models " + Quote(dir_->File("models")) + " -o " + Quote(out));
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  auto px = ReadImageRgb8(out);
  ASSERT_TRUE(px.ok()) << px.status();
  // The command line's threads may round differently: within a level.
  EXPECT_LE((px->to(torch::kInt32) - on[0].to(torch::kInt32)).abs().max().item<int>(), 1);
  EXPECT_GT((px->to(torch::kInt32) - plain[0].to(torch::kInt32)).abs().max().item<int>(), 1);
  // Imported as a graph file, it runs with the model and ControlNets named on the command line, in
  // the order its header lists them.
  const std::string graph = dir_->File("cn.pbtxt");
  cli = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " import-comfy " + Quote(file) + " -o " +
                   Quote(graph));
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(testing::ReadFile(graph),
              HasSubstr("ControlNet 0 'canny.safetensors', ControlNet 1 'depth.safetensors'"));
  cli = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " run " + Quote(graph) + " --model " +
                   Quote(Model()) + " --controlnet " +
                   Quote(dir_->File("models/controlnet/canny.safetensors")) + " --controlnet " +
                   Quote(dir_->File("models/controlnet/depth.safetensors")) + " -o " +
                   Quote(dir_->File("cn2.png")));
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_LE((ReadImageRgb8(dir_->File("cn2.png"))->to(torch::kInt32) - on[0].to(torch::kInt32))
                .abs()
                .max()
                .item<int>(),
            1);
  // Exported back (ControlNetLoader + ControlNetApplyAdvanced per ControlNet and half), it imports
  // to the same image; the PNG run wrote carries it as its ComfyUI workflow.
  auto planned = Graph::FromText(g->text, "cn.pbtxt");
  ASSERT_TRUE(planned.ok()) << planned.status();
  ComfyExportOptions eo;
  eo.checkpoint = "tiny.safetensors";
  eo.controlnets = g->model.controlnets;
  auto exported = ExportComfyWorkflow(planned->config(), "cn.pbtxt", eo);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_THAT(*exported, HasSubstr("ControlNetApplyAdvanced"));
  auto back = Translate(*exported);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << *exported;
  EXPECT_EQ(back->model.controlnets, g->model.controlnets);
  EXPECT_TRUE(torch::equal(T(Run(back->text, {}, {}, model), "image"), on));
  auto chunk = ReadImageAttribute(out, "prompt");
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  EXPECT_THAT(*chunk, HasSubstr("\"control_net_name\": \"depth.safetensors\""));
}

TEST_F(ComfyImportTest, TheModelAWorkflowNames) {
  const std::string json = Edit(
      kTxt2Img, {{R"("model": ["4", 0])", R"("model": ["20", 0])"},
                 {R"("clip": ["4", 1])", R"("clip": ["21", 0])"},
                 {R"("vae": ["4", 2])", R"("vae": ["22", 0])"},
                 {R"("9": {)", R"("20": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0],
        "clip": ["4", 1], "lora_name": "style.safetensors", "strength_model": 0.8, "strength_clip": 0.6}},
      "21": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["20", 1], "stop_at_clip_layer": -2}},
      "22": {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse.safetensors"}},
      "9": {)"}});
  auto g = Translate(json);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->model.vae, "vae-ft-mse.safetensors");
  ASSERT_EQ(g->model.loras.size(), 1u);
  EXPECT_EQ(g->model.loras[0].name, "style.safetensors");
  EXPECT_EQ(g->model.loras[0].unet, 0.8);
  EXPECT_EQ(g->model.loras[0].text, 0.6);
  EXPECT_THAT(g->text, HasSubstr(R"(name: "clip_skip" type { kind: INT } default_value { i: 2 })"));
  // The negative prompt's CLIP without the LoRA: no one model for the run, so the sampler and the
  // prompt's encoder read theirs from ApplyLora nodes (run: model_files_cli_test.cc).
  auto mixed = Translate(Edit(
      json, {{R"("text": "blurry", "clip": ["21", 0])", R"("text": "blurry", "clip": ["4", 1])"}}));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_TRUE(mixed->model.loras.empty());
  EXPECT_THAT(mixed->text, HasSubstr(R"(name: "20_text" input: "lora=@lora")"));
  EXPECT_THAT(mixed->text, HasSubstr(R"(input: "model=20_unet.model")"));
  // Another checkpoint for the negative prompt: refused.
  auto other = Translate(Edit(
      json, {{R"("text": "blurry", "clip": ["21", 0])", R"("text": "blurry", "clip": ["30", 1])"},
             {R"("9": {)", R"("30": {"class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "other.safetensors"}}, "9": {)"}}));
  EXPECT_THAT(std::string(other.status().message()),
              HasSubstr("node 7 uses a different CLIP (checkpoint 'other.safetensors') than node 6 "
                        "(checkpoint 'tiny.safetensors' + LoRA 'style.safetensors' at 0.6); one "
                        "checkpoint per workflow"));
}

TEST_F(ComfyImportTest, WhatIsNotSupportedIsRefusedNamingTheNode) {
  auto heun = Translate(Edit(kTxt2Img, {{"dpmpp_2m", "heun"}}));
  EXPECT_THAT(std::string(heun.status().message()),
              HasSubstr("workflow w.json: node 3 (KSampler): sampler_name 'heun' is not supported "
                        "(supported: euler, "));
  auto beta = Translate(Edit(kTxt2Img, {{R"("scheduler": "karras")", R"("scheduler": "beta")"}}));
  EXPECT_THAT(std::string(beta.status().message()),
              HasSubstr("node 3 (KSampler): scheduler 'beta' is not supported"));
  const std::string sliced =
      Edit(kTxt2Img, {{R"("latent_image": ["5", 0])", R"("latent_image": ["11", 0])"},
                      {R"("9": {)", R"("10": {"class_type": "LatentFromBatch", "inputs":
      {"samples": ["5", 0], "batch_index": 1, "length": 1}},
      "11": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["10", 0], "amount": 2}},
      "9": {)"}});
  EXPECT_THAT(
      std::string(Translate(sliced).status().message()),
      HasSubstr(
          "node 11 (RepeatLatentBatch): a batch of a LatentFromBatch slice is not supported yet"));
}

// The sorted class_types of a workflow.
std::vector<std::string> Classes(const std::string& json) {
  auto w = ParseComfyWorkflow(json, "classes");
  EXPECT_TRUE(w.ok()) << w.status();
  std::vector<std::string> c;
  if (w.ok()) {
    for (const auto& [id, n] : w->nodes) c.push_back(n.class_type);
  }
  std::sort(c.begin(), c.end());
  return c;
}

// export-comfy of an imported workflow is the same workflow: the same node classes, and imported
// again it computes the same image.
TEST_F(ComfyImportTest, ExportThenImportIsTheSameWorkflow) {
  const std::string hires =
      Edit(kTxt2Img,
           {{R"("samples": ["3", 0])", R"("samples": ["12", 0])"},
            {R"("9": {)", R"("11": {"class_type": "LatentUpscaleBy", "inputs":
      {"samples": ["3", 0], "upscale_method": "bilinear", "scale_by": 2}},
      "12": {"class_type": "KSamplerAdvanced", "inputs": {"noise_seed": 6, "steps": 6, "cfg": 6.5, "sampler_name": "euler",
        "scheduler": "simple", "add_noise": "enable", "start_at_step": 3, "end_at_step": 10000,
        "return_with_leftover_noise": "disable", "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["11", 0]}},
      "13": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}},
      "9": {)"},
            {R"("text": "blurry", "clip": ["4", 1])", R"("text": "blurry", "clip": ["13", 0])"}});
  const std::string inpaint = Edit(
      kTxt2Img,
      {{R"("latent_image": ["5", 0])", R"("latent_image": ["13", 0])"},
       {R"("5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},)",
        ""},
       {R"("9": {)", R"("10": {"class_type": "LoadImage", "inputs": {"image": "init.png"}},
      "11": {"class_type": "InvertMask", "inputs": {"mask": ["14", 0]}},
      "14": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "green"}},
      "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
      "13": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["12", 0], "mask": ["11", 0]}},
      "9": {)"}});
  for (const std::string& json : {std::string(kTxt2Img), hires, inpaint}) {
    auto first = Translate(json);
    ASSERT_TRUE(first.ok()) << first.status();
    auto graph = Graph::FromText(first->text, "first");
    ASSERT_TRUE(graph.ok()) << graph.status();
    auto exported = ExportComfyWorkflow(graph->config(), "first", {"tiny.safetensors", "x"});
    ASSERT_TRUE(exported.ok()) << exported.status();
    EXPECT_EQ(Classes(*exported), Classes(json)) << *exported;
    auto second = Translate(*exported);
    ASSERT_TRUE(second.ok()) << second.status() << "\n" << *exported;
    EXPECT_TRUE(torch::equal(T(Run(first->text), "image"), T(Run(second->text), "image")))
        << *exported;
  }
  // The stock graphs use the reference's samplers: refused, naming every node without an
  // equivalent.
  auto stock = Graph::Load(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt");
  ASSERT_TRUE(stock.ok()) << stock.status();
  auto refused = ExportComfyWorkflow(stock->config(), "txt2img.pbtxt");
  EXPECT_THAT(
      std::string(refused.status().message()),
      HasSubstr(
          "graph txt2img.pbtxt: no ComfyUI equivalent for 'prompts/cond' (ApplyPromptWeights with "
          "weighting \"a1111\"; ComfyUI's is comfy), 'prompts/uncond' (ApplyPromptWeights with "
          "weighting \"a1111\"; ComfyUI's is comfy), 'schedule' (Schedule), 'denoise/loop' "
          "(loop)"));
}

TEST_F(ComfyImportTest, CommandLineRunsWorkflowsAndTheirPngs) {
  const std::string bin = SD_TEST_SDGRAPH_BIN;
  const std::string json = dir_->File("t2i.json"), out = dir_->File("t2i.png");
  testing::WriteFile(json, kTxt2Img);
  auto r = RunCommand(bin + " run " + Quote(json) + " --comfy-models " +
                      Quote(dir_->File("models")) + " -o " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto px = ReadImageRgb8(out);
  ASSERT_TRUE(px.ok()) << px.status();
  // The command line may pick other BLAS kernels than this process (EnsureFastBlasKernels): within
  // a level, as the end-to-end goldens.
  auto levels = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kInt) - b.to(torch::kInt)).abs().max().item<int>();
  };
  EXPECT_LE(levels(*px, T(Run(kTxt2ImgByHand), "image")[0]), 1);
  // The PNG carries the workflow as ComfyUI's `prompt` chunk (with the run's values), so ComfyUI,
  // and sd-graph, open it as its workflow; the parameters name the workflow's sampler.
  auto embedded = ReadImageAttribute(out, "prompt");
  ASSERT_TRUE(embedded.ok()) << embedded.status();
  EXPECT_THAT(*embedded, HasSubstr(R"("ckpt_name": "tiny.safetensors")"));
  EXPECT_THAT(*ReadImageAttribute(out, "parameters"),
              HasSubstr("Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 5"));
  r = RunCommand(bin + " run " + Quote(out) + " --comfy-models " + Quote(dir_->File("models")) +
                 " -o " + Quote(dir_->File("again.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(torch::equal(*ReadImageRgb8(dir_->File("again.png")), *px));
  // A PNG that carries the workflow, as ComfyUI saves them.
  const std::string png = dir_->File("comfy.png");
  ASSERT_TRUE(WriteImageRgb8(png, *px, {{"prompt", kTxt2Img}, {"workflow", "{}"}}).ok());
  r = RunCommand(bin + " run " + Quote(png) + " --model " + Quote(Model()) + " --seed 11 -o " +
                 Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto px11 = ReadImageRgb8(out);
  ASSERT_TRUE(px11.ok()) << px11.status();
  EXPECT_LE(levels(*px11, T(Run(kTxt2ImgByHand, {}, {{"seed", int64_t{11}}}), "image")[0]), 1);
  EXPECT_GT(levels(*px11, *px), 1);  // the seed took
  // import-comfy writes the graph; the workflow's checkpoint not found is a clear error.
  r = RunCommand(bin + " import-comfy " + Quote(png) + " -o " + Quote(dir_->File("g.pbtxt")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(testing::ReadFile(dir_->File("g.pbtxt")), HasSubstr("# ComfyUI node 3: KSampler"));
  // Farm mode: frames are seeds SEED + frame.
  r = RunCommand(bin + " run " + Quote(json) + " --comfy-models " + Quote(dir_->File("models")) +
                 " --frames 1-2 --seed 10 -o " + Quote(dir_->File("frame_%02d.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("openjd_progress: 100"));
  auto f1 = ReadImageRgb8(dir_->File("frame_01.png"));
  ASSERT_TRUE(f1.ok()) << f1.status();
  EXPECT_LE(levels(*f1, T(Run(kTxt2ImgByHand, {}, {{"seed", int64_t{11}}}), "image")[0]), 1);
  // ... and export-comfy writes it back as a workflow that runs to the same image.
  r = RunCommand(bin + " export-comfy " + Quote(dir_->File("g.pbtxt")) +
                 " --checkpoint tiny.safetensors -o " + Quote(dir_->File("back.json")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(bin + " run " + Quote(dir_->File("back.json")) + " --comfy-models " +
                 Quote(dir_->File("models")) + " -o " + Quote(dir_->File("back.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(torch::equal(*ReadImageRgb8(dir_->File("back.png")), *px));
  r = RunCommand(bin + " export-comfy " +
                 Quote(std::string(SD_TEST_GRAPHS_DIR) + "/img2img.pbtxt") + " -o " +
                 Quote(dir_->File("stock.json")));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("'schedule' (Schedule)"));
  r = RunCommand(bin + " run " + Quote(json) + " -o " + Quote(out));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the workflow's checkpoint 'tiny.safetensors' was not found"));
  testing::WriteFile(json, Edit(kTxt2Img, {{"KSampler", "KSamplerEfficient"}}));
  r = RunCommand(bin + " run " + Quote(json) + " --model " + Quote(Model()) + " -o " + Quote(out));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("unsupported node types: KSamplerEfficient (node 3)"));
}

}  // namespace
}  // namespace sd
