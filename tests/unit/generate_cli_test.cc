// sd-graph txt2img / img2img / run on a tiny checkpoint, as a user runs them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "host_plugin/cli/image_io.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/sd_config.h"
#include "tests/semantic/image_scorer.h"
#include "tests/test_util.h"
#include "tests/unit/generate_cli_fixture.h"

namespace sd {
namespace {

using cli_test::Bin;
using cli_test::GenerateCliTest;
using ::testing::HasSubstr;
using testing::Quote;
using testing::RunCommand;

TEST_F(GenerateCliTest, Txt2ImgWritesA512ImageWithItsParameters) {
  const std::string out = dir_->File("fox.png");
  auto r = RunCommand(Txt2Img("--seed 7 --negative blurry", out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("step 3/3"));
  auto px = ReadImageRgb8(out);
  ASSERT_TRUE(px.ok()) << px.status();
  EXPECT_EQ(px->sizes(), (std::vector<int64_t>{512, 512, 3}));
  EXPECT_GT(px->to(torch::kFloat32).std().item<double>(), 1.0) << "a single colour";
  auto params = ReadImageAttribute(out, "parameters");
  ASSERT_TRUE(params.ok());
  EXPECT_THAT(*params, HasSubstr("a red fox\nNegative prompt: blurry\nSteps: 3, Sampler: DDPM, CFG scale: 7.5, Seed: 7, Size: 512x512, Model hash: "));
  EXPECT_THAT(*params, HasSubstr("Model: tiny.safetensors"));
}

// --hires-scale runs graphs/hires_fix.pbtxt: the first pass at 64 x 64, the second at twice that,
// the settings recorded as AUTOMATIC1111 writes them; sizes that would not be multiples of 64 are
// refused.
TEST_F(GenerateCliTest, HiresFixDrawsLargerAndRecordsItsSettings) {
  const std::string out = dir_->File("hires.png");
  auto r = RunCommand(Txt2Img(
      "--width 64 --height 64 --hires-scale 2 --hires-denoise 0.6 --hires-upscaler bicubic", out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto px = ReadImageRgb8(out);
  ASSERT_TRUE(px.ok()) << px.status();
  EXPECT_EQ(px->sizes(), (std::vector<int64_t>{128, 128, 3}));
  auto params = ReadImageAttribute(out, "parameters");
  ASSERT_TRUE(params.ok());
  EXPECT_THAT(*params, HasSubstr("Denoising strength: 0.6, Hires upscale: 2, Hires steps: 3, Hires "
                                 "upscaler: Latent (bicubic)"));
  r = RunCommand(Txt2Img("--width 64 --height 64 --hires-scale 1.3", out));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--hires-scale 1.3: width 64 would become 80"));
  r = RunCommand(Txt2Img("--hires-steps 4", out));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--hires-steps applies with --hires-scale"));
}

// Clip skip, the weighting dialect and the embeddings used are recorded as other tools write them;
// an embedding for another text encoder is refused before anything runs, naming its file.
TEST_F(GenerateCliTest, PromptFeaturesAreRecordedAndBadEmbeddingsNamed) {
  const std::string emb = dir_->File("emb");
  std::filesystem::create_directories(emb);
  const std::vector<float> v(2 * 32 * 4, 0.25f);
  auto width = [&](int64_t w) {
    return TensorToWrite{
        "emb_params", DType::kF32, {2, w}, v.data(), static_cast<uint64_t>(2 * w * 4), {}};
  };
  ASSERT_TRUE(
      WriteSafetensors(emb + "/foxy.safetensors", {width(SdConfig::Tiny().clip.width)}).ok());
  ASSERT_TRUE(
      WriteSafetensors(emb + "/wide.safetensors", {width(SdConfig::Tiny().clip.width + 8)}).ok());
  const std::string out = dir_->File("features.png");
  auto r =
      RunCommand(Txt2Img("--width 64 --height 64 --clip-skip 2 --weighting comfy --embeddings " +
                             Quote(emb) + " --negative 'foxy, (dull:1.2)'",
                         out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto params = ReadImageAttribute(out, "parameters");
  ASSERT_TRUE(params.ok());
  EXPECT_THAT(*params, HasSubstr(", Clip skip: 2, Prompt weighting: comfy, TI hashes: \"foxy: "));
  r = RunCommand(Txt2Img(
      "--width 64 --height 64 --embeddings " + Quote(emb) + " --prompt 'a wide fox'", out + "2"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("wide.safetensors has vectors of width"));
  r = RunCommand(Txt2Img("--clip-skip 0", out + "3"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--clip-skip must be a positive integer"));
}

TEST_F(GenerateCliTest, SameSeedSameImageOtherSeedOtherImage) {
  const std::string a = dir_->File("a.png"), b = dir_->File("b.png"), c = dir_->File("c.png");
  for (const auto& [out, seed] : {std::pair{a, "1"}, {b, "1"}, {c, "2"}}) {
    auto r = RunCommand(Txt2Img(std::string("--width 64 --height 128 --seed ") + seed, out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  auto pa = *ReadImageRgb8(a), pb = *ReadImageRgb8(b), pc = *ReadImageRgb8(c);
  EXPECT_EQ(pa.sizes(), (std::vector<int64_t>{128, 64, 3}));
  EXPECT_TRUE(torch::equal(pa, pb));
  EXPECT_FALSE(torch::equal(pa, pc));
}

// --cfg-batch on: one batch-2 UNet call per step instead of two, the same picture (f32 rounding
// apart); a word other than auto/on/off is a usage error.
TEST_F(GenerateCliTest, CfgBatchOnDrawsTheSplitCallsImage) {
  const std::string a = dir_->File("split.png"), b = dir_->File("joined.png");
  for (const auto& [out, mode] : {std::pair{a, "off"}, {b, "on"}}) {
    auto r = RunCommand(
        Txt2Img(std::string("--width 64 --height 64 --seed 4 --cfg-batch ") + mode, out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  auto pa = *ReadImageRgb8(a), pb = *ReadImageRgb8(b);
  EXPECT_LE((pa.to(torch::kInt32) - pb.to(torch::kInt32)).abs().max().item<int>(), 1);
  auto r = RunCommand(Txt2Img("--cfg-batch sometimes", dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--cfg-batch 'sometimes': say auto, on or off"));
}

TEST_F(GenerateCliTest, BatchWritesNumberedImagesWithConsecutiveSeeds) {
  const std::string stats = dir_->File("batch-stats.json");
  auto r = RunCommand(Txt2Img("--width 64 --height 64 --seed 10 --batch 2 --stats " + Quote(stats), dir_->File("batch.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // --stats: what was made, in how long, and the process's peak memory (a tiny model: tens to hundreds of MB).
  const std::string json = testing::ReadFile(stats);
  EXPECT_THAT(json, HasSubstr("\"images\": 2"));
  EXPECT_THAT(json, HasSubstr("\"seconds\":"));
  const size_t at = json.find("\"peak_rss_bytes\": ");
  ASSERT_NE(at, std::string::npos) << json;
  const double peak = std::stod(json.substr(at + 18));
  EXPECT_GT(peak, 10e6);
  EXPECT_LT(peak, 4e9);
  EXPECT_THAT(*ReadImageAttribute(dir_->File("batch-1.png"), "parameters"), HasSubstr("Seed: 10,"));
  EXPECT_THAT(*ReadImageAttribute(dir_->File("batch-2.png"), "parameters"), HasSubstr("Seed: 11,"));
}

TEST_F(GenerateCliTest, Img2ImgKeepsTheInputSize) {
  const std::string init = dir_->File("init.png"), out = dir_->File("out.png");
  ASSERT_EQ(RunCommand(Txt2Img("--width 128 --height 64", init)).exit_code, 0);
  auto r = RunCommand(Bin() + " img2img --model " + Quote(model_) + " --init " + Quote(init) +
                      " --prompt 'a fox in snow' --steps 4 --strength 0.5 -o " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("step 2/2"));  // strength 0.5 keeps 2 of 4 steps
  EXPECT_EQ(ReadImageRgb8(out)->sizes(), (std::vector<int64_t>{64, 128, 3}));
  EXPECT_THAT(*ReadImageAttribute(out, "parameters"), HasSubstr("Denoising strength: 0.5"));
  // Same size given explicitly: no resize; another size: the input is resized to it.
  r = RunCommand(Bin() + " img2img --model " + Quote(model_) + " --init " + Quote(init) +
                 " --prompt fox --steps 2 --width 128 --height 64 -o " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("resizing")));
  r = RunCommand(Bin() + " img2img --model " + Quote(model_) + " --init " + Quote(init) +
                 " --prompt fox --steps 2 --width 64 --height 64 -o " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("resizing the init image from 128x64 to 64x64"));
  EXPECT_EQ(ReadImageRgb8(out)->sizes(), (std::vector<int64_t>{64, 64, 3}));
  r = RunCommand(Bin() + " img2img --model " + Quote(model_) + " --init " + Quote(init) + " --prompt fox --width 100 -o " +
                 Quote(out));
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(GenerateCliTest, InpaintPicksTheMethodFromTheCheckpoint) {
  const std::string init = dir_->File("inp_init.png"), mask = dir_->File("inp_mask.png"), out = dir_->File("inp.png");
  ASSERT_EQ(RunCommand(Txt2Img("--width 64 --height 64", init)).exit_code, 0);
  torch::Tensor m = torch::zeros({64, 64, 3}, torch::kUInt8);
  m.slice(1, 32, 64).fill_(255);
  ASSERT_TRUE(WriteImageRgb8(mask, m).ok());
  const std::string base = " inpaint --init " + Quote(init) + " --mask " + Quote(mask) + " --prompt pond --steps 2 -o " + Quote(out);
  auto r = RunCommand(Bin() + base + " --model " + Quote(model_));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(*ReadImageAttribute(out, "parameters"), HasSubstr("Denoising strength: 1"));
  r = RunCommand(Bin() + base + " --model " + Quote(dir_->File("tiny9.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadImageRgb8(out)->sizes(), (std::vector<int64_t>{64, 64, 3}));
  r = RunCommand(Bin() + base + " --model " + Quote(dir_->File("tiny9.safetensors")) + " --strength 0.5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--strength applies to ordinary checkpoints"));
  ASSERT_TRUE(WriteImageRgb8(mask, torch::zeros({128, 64, 3}, torch::kUInt8)).ok());
  r = RunCommand(Bin() + base + " --model " + Quote(model_));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("the mask is 64x128 but the image is 64x64"));
}

TEST_F(GenerateCliTest, EverySamplerRunsAndIsRecorded) {
  const std::vector<std::pair<std::string, std::string>> samplers = {
      {"ddim --eta 0.5", "Sampler: DDIM,"}, {"euler", "Sampler: Euler,"}, {"euler_a", "Sampler: Euler a,"},
      {"dpmpp_2m", "Sampler: DPM++ 2M,"}, {"dpmpp_2m --karras", "Sampler: DPM++ 2M Karras,"},
      {"euler_a --karras", "Sampler: Euler a Karras,"}};
  for (const auto& [flags, label] : samplers) {
    const std::string out = dir_->File("sampler.png");
    auto r = RunCommand(Txt2Img("--width 64 --height 64 --sampler " + flags, out));
    ASSERT_EQ(r.exit_code, 0) << flags << ": " << r.err;
    EXPECT_THAT(*ReadImageAttribute(out, "parameters"), HasSubstr(label)) << flags;
  }
  auto r = RunCommand(Txt2Img("--width 64 --height 64 --sampler ddim --karras", dir_->File("no.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("Karras spacing applies to euler, euler_a and dpmpp_2m"));
}

TEST_F(GenerateCliTest, GraphsReadAndWriteImageFiles) {
  const std::string in = dir_->File("rt_in.png"), out = dir_->File("rt_out.png"), copy = dir_->File("rt_copy.png");
  ASSERT_EQ(RunCommand(Txt2Img("--width 64 --height 64", in)).exit_code, 0);
  auto r = RunCommand(Bin() + " run " + Quote(std::string(SD_TEST_GRAPHS_DIR) + "/examples/vae_roundtrip.pbtxt") +
                      " --model " + Quote(model_) + " --set in=" + Quote(in) + " --set out=" + Quote(out) + " -o " + Quote(copy));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(torch::equal(*ReadImageRgb8(out), *ReadImageRgb8(copy)));
  r = RunCommand(Bin() + " run " + Quote(std::string(SD_TEST_GRAPHS_DIR) + "/examples/vae_roundtrip.pbtxt") + " --model " +
                 Quote(model_) + " --set in=/nonexistent.png --set out=" + Quote(out) + " -o " + Quote(copy));
  EXPECT_EQ(r.exit_code, 3) << "a missing input is permanent, as README says";
  EXPECT_THAT(r.err, HasSubstr("node 'load' (LoadImage): /nonexistent.png"));
}

TEST_F(GenerateCliTest, RunWithSetAndDump) {
  const std::string out = dir_->File("run.png"), lat = dir_->File("latents.safetensors");
  auto r = RunCommand(Bin() + " run " + Quote(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt") + " --model " +
                      Quote(model_) + " --set prompt=owl --set steps=2 --set width=64 --set height=64 --dump denoise.latents=" +
                      Quote(lat) + " -o " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto st = ReadSafetensors(lat);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->tensors.size(), 1u);
  EXPECT_EQ(st->tensors[0].name, "denoise.latents");
  EXPECT_EQ(st->tensors[0].shape, (std::vector<int64_t>{1, 4, 8, 8}));
}

// No --model: the shipped demo model, said so on stderr, at the native size it declares (64x64).
TEST_F(GenerateCliTest, NoModelMeansTheDemoModelAtItsNativeSize) {
  const std::string out = dir_->File("demo.png");
  auto r = RunCommand(
      Bin() + " txt2img --prompt 'a red circle on a blue background' --steps 4 -o " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("no --model given: using the demo model"));
  auto px = ReadImageRgb8(out);
  ASSERT_TRUE(px.ok()) << px.status();
  EXPECT_EQ(px->size(0), 64);
  EXPECT_EQ(px->size(1), 64);
}

// A noiseless 64x64 picture of one shape in the demo model's colours, centred at (cx, 0.5), written
// to `path`. Returns its pixels (uint8 [64, 64, 3]; undefined after reporting a failed write).
torch::Tensor WriteShapePicture(const std::string& path, demo::Shape shape, const char* fg,
                                const char* bg, demo::Size size, double cx) {
  demo::Scene s;
  s.shape = shape;
  s.foreground = demo::ColourIndex(fg);
  s.background = demo::ColourIndex(bg);
  s.radius = demo::NominalRadius(size);
  s.cx = cx;
  std::mt19937_64 rng(1);
  std::vector<uint8_t> rgb = demo::Render(s, 64, 0.0, rng);
  torch::Tensor px = torch::from_blob(rgb.data(), {64, 64, 3}, torch::kUInt8).clone();
  const absl::Status written = WriteImageRgb8(path, px, {});
  if (!written.ok()) {
    ADD_FAILURE() << written;
    return {};
  }
  return px;
}

// No --model for inpaint: the demo model's inpainting variant (9 channels, inpaint9.pbtxt), which
// draws the prompt's shape inside the mask; --strength is refused as for any such model.
TEST_F(GenerateCliTest, NoModelInpaintsWithTheDemoInpaintingModel) {
  const std::string init = dir_->File("demo_init.png"), mask = dir_->File("demo_mask.png"),
                    out = dir_->File("demo_inpaint.png");
  const torch::Tensor px =
      WriteShapePicture(init, demo::Shape::kCircle, "red", "blue", demo::Size::kSmall, 0.26);
  ASSERT_TRUE(px.defined());
  torch::Tensor m = torch::zeros({64, 64, 3}, torch::kUInt8);
  m.slice(1, 32, 64).fill_(255);
  ASSERT_TRUE(WriteImageRgb8(mask, m).ok());
  const std::string cmd = Bin() + " inpaint --init " + Quote(init) + " --mask " + Quote(mask) +
                          " --prompt 'a yellow square on the right on a blue background' --seed 1 "
                          "--sampler dpmpp_2m --karras --steps 20 -o " +
                          Quote(out);
  auto r = RunCommand(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("no --model given: using the demo inpainting model"));
  auto image = ReadImageRgb8(out);
  ASSERT_TRUE(image.ok()) << image.status();
  const torch::Tensor right = image->slice(1, 32).contiguous();
  const demo::ImageScore got = demo::ScoreImage(right.data_ptr<uint8_t>(), 32, 64);
  std::printf("[ demo ] the CLI's default inpainting, right half: %s\n", got.Describe().c_str());
  EXPECT_EQ(got.foreground, demo::ColourIndex("yellow"));
  EXPECT_EQ(got.background, demo::ColourIndex("blue"));
  // The kept half is the input's own pixels.
  EXPECT_TRUE(torch::equal(image->slice(1, 0, 32), px.slice(1, 0, 32)));
  r = RunCommand(cmd + " --strength 0.5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("9-channel inpainting models always start from noise"));
}

// The demo ControlNet, named by its file name as a user would (the shipped copy is found), draws
// the shape where the sketch has it, in the prompt's colours, and is recorded.
TEST_F(GenerateCliTest, TheDemoControlNetIsFoundByNameAndFollowsTheSketch) {
  const std::string sketch = dir_->File("sketch.png"), out = dir_->File("steered_demo.png");
  ASSERT_TRUE(
      WriteShapePicture(sketch, demo::Shape::kSquare, "black", "white", demo::Size::kMedium, 0.73)
          .defined());
  auto r = RunCommand(
      Bin() + " txt2img --prompt 'a red square on a yellow background' --controlnet " +
      kDemoControlNetFile + " --hint " + Quote(sketch) +
      " --hint-pass canny --sampler dpmpp_2m --karras --steps 20 --seed 4 -o " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto image = ReadImageRgb8(out);
  ASSERT_TRUE(image.ok()) << image.status();
  const demo::ImageScore got = demo::ScoreImage(image->contiguous().data_ptr<uint8_t>(), 64, 64);
  std::printf("[ demo ] the CLI with the demo ControlNet: %s\n", got.Describe().c_str());
  EXPECT_EQ(got.foreground, demo::ColourIndex("red"));
  EXPECT_EQ(got.background, demo::ColourIndex("yellow"));
  EXPECT_TRUE(demo::PositionMatches(demo::Position::kRight, got)) << got.Describe();
  auto params = ReadImageAttribute(out, "parameters");
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_THAT(*params,
              HasSubstr("ControlNet 0: \"module: canny (100, 200), model: sd-demo-shapes-canny ("));
}

TEST_F(GenerateCliTest, BadArgumentsAreRefusedWithReasons) {
  auto r = RunCommand(Txt2Img("--width 100", dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--width 100: SD v1.x needs a positive multiple of 64"));
  // No --model and no demo model installed.
  r = RunCommand("SDGRAPH_DEMO_MODEL=/nonexistent/demo.safetensors " + Bin() +
                 " txt2img --prompt x -o " + Quote(dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(
      r.err,
      HasSubstr(
          "--model is required: the demo model (sd-demo-shapes.safetensors) is not installed"));
  r = RunCommand(Bin() + " txt2img --model /nonexistent/sd.ckpt --prompt x -o " + Quote(dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 3);  // missing model: permanent
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/sd.ckpt"));
  r = RunCommand(Txt2Img("--sampler euler_x", dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown sampler 'euler_x' (available: ddpm, ddim, euler, euler_a, dpmpp_2m)"));
  r = RunCommand(Txt2Img("--steps many", dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("'many' is not an integer"));
  r = RunCommand(Bin() + " run " + Quote(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt") + " --model " + Quote(model_) +
                 " --set nosuch=1 -o " + Quote(dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("has no input 'nosuch'"));
  EXPECT_FALSE(std::filesystem::exists(dir_->File("x.png")));
}

// An allocation far beyond memory (the noise of a 1048576x1048576 image: 275 GB) ends the command
// with a message and exit code 1, not with std::terminate.
TEST_F(GenerateCliTest, AllocationFailureEndsWithAMessageNotACrash) {
  auto r =
      RunCommand("exec " + Txt2Img("--width 1048576 --height 1048576", dir_->File("huge.png")));
  EXPECT_EQ(r.signal, 0) << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_FALSE(std::filesystem::exists(dir_->File("huge.png")));
}

// --controlnet picks the ControlNet graph: two ControlNets (the second a depth pass from an EXR)
// are recorded in the parameters; strength 0 gives the image without; bad combinations are refused.
TEST_F(GenerateCliTest, ControlNetFlagsRunAndAreRecorded) {
  const std::string cn = dir_->File("cn.safetensors"), hint = dir_->File("hint.png"),
                    depth = dir_->File("depth.exr");
  auto r = RunCommand(Bin() + " make-test-checkpoint --tiny --controlnet " + Quote(cn));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WriteImageRgb8(hint, (torch::rand({64, 64, 3}) * 255).to(torch::kUInt8)).ok());
  ASSERT_TRUE(WriteImageRgb8(depth, (torch::rand({32, 48, 3}) * 255).to(torch::kUInt8)).ok());
  const std::string plain = dir_->File("plain.png"), zero = dir_->File("zero.png"),
                    two = dir_->File("two.png");
  r = RunCommand(Txt2Img("--seed 3 --width 64 --height 64", plain));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(Txt2Img("--seed 3 --width 64 --height 64 --controlnet " + Quote(cn) + " --hint " +
                             Quote(hint) + " --control-strength 0",
                         zero));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(torch::equal(*ReadImageRgb8(plain), *ReadImageRgb8(zero)));
  r = RunCommand(
      Txt2Img("--seed 3 --width 64 --height 64 --controlnet " + Quote(cn) + " --hint " +
                  Quote(hint) + " --controlnet " + Quote(cn) + " --hint " + Quote(depth) +
                  " --control-strength 0.8 --control-strength 0.4 --control-end 0.5 --guess-mode" +
                  " --hint-pass canny --canny-low 50 --canny-high 150",
              two));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(torch::equal(*ReadImageRgb8(plain), *ReadImageRgb8(two)));
  auto params = ReadImageAttribute(two, "parameters");
  ASSERT_TRUE(params.ok());
  EXPECT_THAT(*params, HasSubstr("ControlNet 0: \"module: canny (50, 150), model: cn ("));
  EXPECT_THAT(*params, HasSubstr("ControlNet 1: \"module: canny (50, 150), model: cn ("));
  EXPECT_THAT(
      *params,
      HasSubstr(
          "weight: 0.4, starting/ending: (0, 0.5), control mode: ControlNet is more important"));
  // A diffusers ControlNetModel folder, its hint a depth pass (an EXR read as float values).
  const std::string folder = dir_->File("cn-diffusers");
  std::filesystem::create_directories(folder);
  r = RunCommand(Bin() + " make-test-checkpoint --tiny --controlnet --layout diffusers " +
                 Quote(folder + "/diffusion_pytorch_model.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string depth_out = dir_->File("depth.png");
  r = RunCommand(Txt2Img("--seed 3 --width 64 --height 64 --controlnet " + Quote(folder) +
                             " --hint " + Quote(depth) + " --hint-pass depth",
                         depth_out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(torch::equal(*ReadImageRgb8(plain), *ReadImageRgb8(depth_out)));
  EXPECT_THAT(*ReadImageAttribute(depth_out, "parameters"),
              HasSubstr("ControlNet 0: \"module: depth, model: cn-diffusers ("));
  for (const auto& [extra, why] : std::vector<std::pair<std::string, std::string>>{
           {"--controlnet " + Quote(cn), "--controlnet needs its --hint IMAGE"},
           {"--controlnet " + Quote(cn) + " --controlnet " + Quote(cn) + " --hint x.png",
            "give one hint image per ControlNet"},
           {"--hint " + Quote(hint), "need --controlnet FILE"},
           {"--controlnet " + Quote(cn) + " --hint x.png --control-end 2",
            "--control-end 2: expected a number"},
           {"--controlnet " + Quote(cn) + " --hint x.png --control-start 0.6 --control-end 0.5",
            "is after"},
           {"--controlnet " + Quote(cn) + " --hint x.png --hint-pass fog", "--hint-pass fog"},
           {"--controlnet " + Quote(cn) + " --hint x.png --canny-low 300", "need 0 <= low <= high"},
           {"--controlnet nothing.safetensors --hint " + Quote(hint),
            "ControlNet nothing.safetensors: no such"},
           {"--controlnet " + Quote(cn) + " --hint " + Quote(dir_->File("none.png")),
            "none.png: no such image"},
           {"--controlnet " + Quote(cn) + " --hint " + Quote(hint) + " --hires-scale 2",
            "applies to txt2img"}}) {
    r = RunCommand(Txt2Img("--width 64 --height 64 " + extra, dir_->File("bad.png")));
    EXPECT_NE(r.exit_code, 0) << extra;
    EXPECT_THAT(r.err, HasSubstr(why)) << extra;
  }
  r = RunCommand(Bin() + " txt2img --prompt x --steps 1 --controlnet " + Quote(cn) + " --hint " +
                 Quote(hint) + " -o " + Quote(dir_->File("demo.png")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("was made for another model"));
}

TEST_F(GenerateCliTest, HelpDocumentsEveryFlag) {
  auto r = RunCommand(Bin() + " txt2img --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--model", "--tokenizer", "--dtype", "--threads", "--output", "--dump", "--prompt", "--negative",
                           "--steps", "--cfg", "--seed", "--sampler", "--batch", "--width", "--height", "--stats"}) {
    EXPECT_THAT(r.out, HasSubstr(flag)) << flag;
  }
  for (const char* flag :
       {"--controlnet", "--hint", "--hint-pass", "--control-strength", "--control-start",
        "--control-end", "--guess-mode", "--control-cond-only"}) {
    EXPECT_THAT(r.out, HasSubstr(flag)) << flag;
  }
  r = RunCommand(Bin() + " img2img --help");
  EXPECT_THAT(r.out, HasSubstr("--controlnet"));
  EXPECT_THAT(r.out, HasSubstr("--init"));
  EXPECT_THAT(r.out, HasSubstr("--strength"));
  r = RunCommand(Bin() + " run --help");
  EXPECT_THAT(r.out, HasSubstr("--set"));
}

}  // namespace
}  // namespace sd

namespace sd {
namespace {

TEST(ImageIoTest, PngJpegTiffExrRoundTrip) {
  testing::TempDir dir;
  torch::Tensor px = (torch::arange(64 * 48 * 3, torch::kInt64).reshape({48, 64, 3}) * 7 % 256).to(torch::kUInt8);
  px.slice(1, 0, 32).fill_(200);  // a flat region, so lossy JPEG has something to get right
  for (const char* ext : {".png", ".tif", ".exr", ".jpg"}) {
    const std::string path = dir.File(std::string("img") + ext);
    ASSERT_TRUE(WriteImageRgb8(path, px, {{"parameters", "p"}}).ok()) << ext;
    auto back = ReadImageRgb8(path);
    ASSERT_TRUE(back.ok()) << ext << ": " << back.status();
    ASSERT_EQ(back->sizes(), px.sizes()) << ext;
    if (std::string(ext) == ".jpg") {
      EXPECT_LT((back->slice(1, 0, 24).to(torch::kInt32) - 200).abs().max().item<int>(), 4);  // away from the edge
    } else {
      EXPECT_TRUE(torch::equal(*back, px)) << ext;
    }
  }
  EXPECT_EQ(*ReadImageAttribute(dir.File("img.png"), "parameters"), "p");
  EXPECT_EQ(ReadImageRgb8(dir.File("none.png")).status().code(), absl::StatusCode::kNotFound);
  testing::WriteFile(dir.File("junk.png"), "not an image");
  EXPECT_EQ(ReadImageRgb8(dir.File("junk.png")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(WriteImageRgb8(dir.File("x.png"), torch::zeros({4, 4}, torch::kUInt8)).ok());
}

}  // namespace
}  // namespace sd
