// The GEGL plugin through the `gegl` command line (Debian's gegl package), as a user would drive
// it: the operations exist, a GEGL XML graph renders txt2img, the chain syntax runs img2img and
// inpaint (mask on the aux pad), bad properties become GEGL warnings and no crash. And the bridge's
// cancellation, called as the operations call it.
#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <thread>

#include "host_plugin/gegl/sd_gegl_bridge.h"
#include "tests/integration/image_util.h"
#include "tests/semantic/image_scorer.h"
#include "tests/test_util.h"

namespace sd::testing {
namespace {

class GeglPluginTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    model_ = dir_->File("tiny.safetensors");
    auto r = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " make-test-checkpoint " +
                        Quote(model_) + " --tiny");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    controlnet_ = dir_->File("cn.safetensors");  // for the tiny model
    r = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " make-test-checkpoint --tiny --controlnet " +
                   Quote(controlnet_));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // A gradient input and a mask whose right half is white (repaint).
    Rgb8 in{128, 64, std::vector<uint8_t>(128 * 64 * 3)},
        mask{128, 64, std::vector<uint8_t>(128 * 64 * 3, 0)};
    for (int y = 0; y < 64; ++y) {
      for (int x = 0; x < 128; ++x) {
        uint8_t* p = &in.pixels[(y * 128 + x) * 3];
        p[0] = static_cast<uint8_t>(2 * x);
        p[1] = static_cast<uint8_t>(4 * y);
        p[2] = static_cast<uint8_t>(128 + x / 2);
        if (x >= 64)
          std::fill(&mask.pixels[(y * 128 + x) * 3], &mask.pixels[(y * 128 + x) * 3] + 3, 255);
      }
    }
    ASSERT_TRUE(WriteRgb8(dir_->File("in.png"), in));
    ASSERT_TRUE(WriteRgb8(dir_->File("mask.png"), mask));
  }
  static void TearDownTestSuite() { delete dir_; }

  // Runs the gegl CLI with our plugin folder ahead of GEGL's own operations.
  static CommandResult Gegl(const std::string& args) {
    return RunCommand(
        "GEGL_PATH=" + Quote(std::string(SD_TEST_GEGL_OPS_DIR) + ":" + SD_TEST_GEGL_SYSTEM_OPS) +
        " timeout 300 gegl " + args);
  }
  static bool OneColour(const Rgb8& img) {
    for (size_t i = 3; i < img.pixels.size(); ++i) {
      if (img.pixels[i] != img.pixels[i % 3]) return false;
    }
    return true;
  }
  // Mean absolute difference over columns [x0, x1).
  static double MeanDiff(const Rgb8& a, const Rgb8& b, int x0, int x1) {
    double sum = 0;
    int n = 0;
    for (int y = 0; y < a.height; ++y) {
      for (int x = x0; x < x1; ++x) {
        for (int c = 0; c < 3; ++c)
          sum += std::abs(int(a.pixels[(y * a.width + x) * 3 + c]) -
                          int(b.pixels[(y * b.width + x) * 3 + c]));
        n += 3;
      }
    }
    return sum / n;
  }
  static TempDir* dir_;
  static std::string model_, controlnet_;
};
TempDir* GeglPluginTest::dir_;
std::string GeglPluginTest::model_;
std::string GeglPluginTest::controlnet_;

TEST_F(GeglPluginTest, OperationsExist) {
  for (const char* op : {"sd:txt2img", "sd:img2img", "sd:inpaint"})
    EXPECT_EQ(Gegl(std::string("--exists ") + op).exit_code, 0) << op;
  EXPECT_NE(Gegl("--exists sd:nothing").exit_code, 0);
}

TEST_F(GeglPluginTest, Txt2ImgFromAGeglXmlGraph) {
  WriteFile(dir_->File("txt2img.xml"),
            "<?xml version='1.0' encoding='UTF-8'?>\n<gegl>\n  <node operation='sd:txt2img'>\n    "
            "<params>\n"
            "      <param name='prompt'>a lighthouse at dusk</param>\n      <param name='model'>" +
                model_ +
                "</param>\n"
                "      <param name='width'>128</param>\n      <param name='height'>64</param>\n"
                "      <param name='steps'>4</param>\n      <param name='seed'>7</param>\n    "
                "</params>\n  </node>\n</gegl>\n");
  auto r = Gegl(Quote(dir_->File("txt2img.xml")) + " -o " + Quote(dir_->File("xml.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 img = ReadRgb8(dir_->File("xml.png"));
  EXPECT_EQ(img.width, 128);
  EXPECT_EQ(img.height, 64);
  EXPECT_FALSE(OneColour(img));
  // The same settings through sd-graph: the same picture (GEGL stores it as 16-bit; 8-bit values
  // compare).
  r = RunCommand(
      std::string(SD_TEST_SDGRAPH_BIN) + " txt2img --model " + Quote(model_) +
      " --prompt 'a lighthouse at dusk' --width 128 --height 64 --steps 4 --seed 7 --cfg 7.5 -o " +
      Quote(dir_->File("cli.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(MaxDiff(img, ReadRgb8(dir_->File("cli.png"))), 1);
}

// The prompt properties (weighting, clip skip, embeddings) and a standalone VAE mean what
// sd-graph's flags mean: the same picture.
TEST_F(GeglPluginTest, PromptPropertiesAndVaeMatchTheCli) {
  const std::string emb = dir_->File("emb");
  std::filesystem::create_directories(emb);
  ASSERT_EQ(std::system((testing::PythonScript("make_vae_variants.py") + " " + Quote(model_) + " " +
                         Quote(dir_->path()))
                            .c_str()),
            0);
  WriteFile(dir_->File("lora-cfg.json"),
            "{\"num_res_blocks\": 1, \"attention\": [], \"keys\": []}");
  ASSERT_EQ(
      std::system((testing::PythonScript("lora_reference.py") + " make " + Quote(model_) + " " +
                   Quote(dir_->File("lora-cfg.json")) + " " + Quote(dir_->path()) + " 1 1")
                      .c_str()),
      0);
  const std::string lora = dir_->File("ldm.safetensors");
  const std::string prompt = "a (red:1.3) lighthouse BREAK [dusk], ((sea)) <lora:kohya:0.3>";
  auto r = Gegl("-o " + Quote(dir_->File("props.png")) + " -- sd:txt2img prompt=" + Quote(prompt) +
                " model=" + Quote(model_) +
                " width=64 height=64 steps=3 seed=5 weighting=comfy "
                "clip-skip=2 vae=" +
                Quote(dir_->File("vae.safetensors")) + " embeddings=" + Quote(emb) +
                " lora=" + Quote(lora + ":0.5:0.8"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("sd:txt2img:"), std::string::npos) << r.err;
  r = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " txt2img --model " + Quote(model_) +
                 " --prompt " + Quote(prompt) +
                 " --width 64 --height 64 --steps 3 --seed 5 --cfg 7.5 --weighting comfy "
                 "--clip-skip 2 --vae " +
                 Quote(dir_->File("vae.safetensors")) + " --lora " + Quote(lora + ":0.5:0.8") +
                 " -o " + Quote(dir_->File("props-cli.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(MaxDiff(ReadRgb8(dir_->File("props.png")), ReadRgb8(dir_->File("props-cli.png"))), 1);
  r = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " txt2img --model " + Quote(model_) +
                 " --prompt " + Quote(prompt) +
                 " --width 64 --height 64 --steps 3 --seed 5 --cfg 7.5 -o " +
                 Quote(dir_->File("plain-cli.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(MaxDiff(ReadRgb8(dir_->File("props.png")), ReadRgb8(dir_->File("plain-cli.png"))), 1)
      << "the properties must change the picture";
}

// No model and no size: the demo model at its native 64x64, drawing what the prompt asks for.
TEST_F(GeglPluginTest, DemoModelByDefaultAtItsNativeSize) {
  auto r = Gegl("-o " + Quote(dir_->File("demo.png")) +
                " -- sd:txt2img prompt='a yellow circle on a purple background' steps=30 seed=2 "
                "sampler=euler");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 img = ReadRgb8(dir_->File("demo.png"));
  ASSERT_EQ(img.width, 64);
  ASSERT_EQ(img.height, 64);
  const demo::ImageScore s = demo::ScoreImage(img.pixels, img.width, img.height);
  EXPECT_EQ(s.foreground, demo::ColourIndex("yellow")) << s.Describe();
  EXPECT_EQ(s.background, demo::ColourIndex("purple")) << s.Describe();
}

// A ComfyUI workflow as sd:txt2img's graph: its settings stand but for prompt, seed and size, and
// the picture is sd-graph run's; the demo model draws what the prompt asks.
TEST_F(GeglPluginTest, ComfyWorkflowAsTheGraph) {
  const std::string workflow = std::string(SD_TEST_GRAPHS_DIR) + "/examples/comfy_txt2img.json";
  auto r = Gegl("-o " + Quote(dir_->File("comfy.png")) + " -- sd:txt2img graph=" + Quote(workflow) +
                " prompt='a green square on a yellow background' seed=3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 img = ReadRgb8(dir_->File("comfy.png"));
  ASSERT_EQ(img.width, 64);
  const demo::ImageScore s = demo::ScoreImage(img.pixels, img.width, img.height);
  EXPECT_EQ(s.foreground, demo::ColourIndex("green")) << s.Describe();
  EXPECT_EQ(s.background, demo::ColourIndex("yellow")) << s.Describe();
  r = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " run " + Quote(workflow) +
                 " --set prompt='a green square on a yellow background' --seed 3 -o " +
                 Quote(dir_->File("comfy_cli.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(MaxDiff(img, ReadRgb8(dir_->File("comfy_cli.png"))), 1);
  r = Gegl(Quote(dir_->File("in.png")) + " -o " + Quote(dir_->File("x.png")) +
           " -- sd:img2img graph=" + Quote(workflow) + " model=" + Quote(model_));
  EXPECT_THAT(r.err, ::testing::HasSubstr("ComfyUI workflows run in sd:txt2img"));
}

TEST_F(GeglPluginTest, Img2ImgThroughTheChainSyntax) {
  auto r = Gegl(Quote(dir_->File("in.png")) + " -o " + Quote(dir_->File("i2i.png")) +
                " -- sd:img2img prompt='a red fox' model=" + Quote(model_) +
                " strength=0.5 steps=4 seed=3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 img = ReadRgb8(dir_->File("i2i.png"));
  EXPECT_EQ(img.width, 128);
  EXPECT_EQ(img.height, 64);
  EXPECT_FALSE(OneColour(img));
}

// A ControlNet steers sd:img2img with the picture on its aux pad (of another size than the input):
// the image `sd-graph img2img --controlnet --hint` makes, and not the unsteered one.
TEST_F(GeglPluginTest, Img2ImgSteeredByAControlNetHintOnTheAuxPad) {
  const std::string& cn = controlnet_;
  const std::string common =
      " prompt='a red fox' model=" + Quote(model_) + " strength=0.5 steps=4 seed=3";
  auto r = Gegl(Quote(dir_->File("in.png")) + " -o " + Quote(dir_->File("cn_gegl.png")) +
                " -- sd:img2img aux=[ gegl:load path=" + Quote(dir_->File("mask.png")) +
                " ] controlnet=" + Quote(cn) + " control-strength=0.8" + common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " img2img --init " +
                 Quote(dir_->File("in.png")) + " --prompt 'a red fox' --model " + Quote(model_) +
                 " --strength 0.5 --steps 4 --seed 3 --controlnet " + Quote(cn) + " --hint " +
                 Quote(dir_->File("mask.png")) + " --control-strength 0.8 -o " +
                 Quote(dir_->File("cn_cli.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 gegl = ReadRgb8(dir_->File("cn_gegl.png"));
  EXPECT_LE(MaxDiff(gegl, ReadRgb8(dir_->File("cn_cli.png"))), 1);
  r = Gegl(Quote(dir_->File("in.png")) + " -o " + Quote(dir_->File("cn_plain.png")) +
           " -- sd:img2img" + common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(MaxDiff(gegl, ReadRgb8(dir_->File("cn_plain.png"))), 1);
  r = Gegl(Quote(dir_->File("in.png")) + " -o " + Quote(dir_->File("cn_bad.png")) +
           " -- sd:img2img controlnet=" + Quote(cn) + common);
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find("connect a picture to the aux pad"), std::string::npos) << r.err;
}

// sd:txt2img, a source, takes the hint on an aux pad of its own: the image `sd-graph txt2img
// --controlnet --hint` makes, and not the unsteered one; a hint without a ControlNet is refused.
TEST_F(GeglPluginTest, Txt2ImgSteeredByAControlNetHintOnItsAuxPad) {
  const std::string& cn = controlnet_;
  const std::string common =
      " prompt='a red fox' model=" + Quote(model_) + " width=128 height=64 steps=4 seed=5";
  const std::string hint = " aux=[ gegl:load path=" + Quote(dir_->File("in.png")) + " ]";
  auto r = Gegl("-o " + Quote(dir_->File("t2i_cn_gegl.png")) + " -- sd:txt2img" + hint +
                " controlnet=" + Quote(cn) + " control-strength=0.7" + common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " txt2img --prompt 'a red fox' --model " +
                 Quote(model_) + " --width 128 --height 64 --steps 4 --seed 5 --cfg 7.5" +
                 " --controlnet " + Quote(cn) + " --hint " + Quote(dir_->File("in.png")) +
                 " --control-strength 0.7 -o " + Quote(dir_->File("t2i_cn_cli.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 gegl = ReadRgb8(dir_->File("t2i_cn_gegl.png"));
  ASSERT_EQ(gegl.width, 128);
  ASSERT_EQ(gegl.height, 64);
  EXPECT_LE(MaxDiff(gegl, ReadRgb8(dir_->File("t2i_cn_cli.png"))), 1);
  r = Gegl("-o " + Quote(dir_->File("t2i_plain.png")) + " -- sd:txt2img" + common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(MaxDiff(gegl, ReadRgb8(dir_->File("t2i_plain.png"))), 1);
  r = Gegl("-o " + Quote(dir_->File("t2i_bad.png")) + " -- sd:txt2img" + hint + common);
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find("no ControlNet is set"), std::string::npos) << r.err;
}

TEST_F(GeglPluginTest, InpaintWithTheMaskOnTheAuxPad) {
  auto r = Gegl(Quote(dir_->File("in.png")) + " -o " + Quote(dir_->File("inpaint.png")) +
                " -- sd:inpaint aux=[ gegl:load path=" + Quote(dir_->File("mask.png")) +
                " ] prompt='a red fox' model=" + Quote(model_) + " steps=4 seed=3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 in = ReadRgb8(dir_->File("in.png")), out = ReadRgb8(dir_->File("inpaint.png"));
  ASSERT_EQ(out.width, 128);
  ASSERT_EQ(out.height, 64);
  EXPECT_FALSE(OneColour(out));
  // Unmasked (left) pixels stay much nearer the input than repainted (right) ones. (The tiny test
  // VAE is untrained and not local, so "near" is relative; see the inpaint tests of the runtime.)
  const double kept = MeanDiff(in, out, 0, 64), repainted = MeanDiff(in, out, 64, 128);
  std::printf("[ gegl inpaint ] mean |diff| kept %.1f, repainted %.1f levels\n", kept, repainted);
  EXPECT_LT(kept, repainted);
}

TEST_F(GeglPluginTest, BadPropertiesAreGeglWarningsNotCrashes) {
  auto r = Gegl("-o " + Quote(dir_->File("bad.png")) +
                " -- sd:txt2img prompt=x width=64 height=64 model=" +
                Quote(dir_->File("missing.safetensors")));
  EXPECT_GE(r.exit_code, 0) << "crashed";
  EXPECT_LT(r.exit_code, 128) << "crashed";
  EXPECT_NE(r.err.find("sd:txt2img: NOT_FOUND"), std::string::npos) << r.err;
  r = Gegl("-o " + Quote(dir_->File("bad2.png")) +
           " -- sd:txt2img prompt=x width=100 height=64 model=" + Quote(model_));
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find("multiples of 64"), std::string::npos) << r.err;
  r = Gegl(Quote(dir_->File("in.png")) + " -o " + Quote(dir_->File("bad3.png")) +
           " -- sd:inpaint prompt=x model=" + Quote(model_));
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find("connect a mask"), std::string::npos) << r.err;
  // The TLS properties reach the worker pool: require-tls without a CA refuses plaintext workers,
  // and a client certificate without a CA is refused as by sd-graph.
  r = Gegl(
      "-o " + Quote(dir_->File("bad4.png")) +
      " -- sd:txt2img prompt=x width=64 height=64 model=tiny workers=127.0.0.1:1 require-tls=true");
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find("--require-tls"), std::string::npos) << r.err;
  r = Gegl("-o " + Quote(dir_->File("bad5.png")) +
           " -- sd:txt2img prompt=x width=64 height=64 model=tiny workers=127.0.0.1:1 tls-cert=" +
           Quote(dir_->File("in.png")) + " tls-key=" + Quote(dir_->File("in.png")));
  EXPECT_LT(r.exit_code, 128);
  EXPECT_NE(r.err.find("need --tls-ca"), std::string::npos) << r.err;
}

TEST_F(GeglPluginTest, ARunCanBeCancelled) {
  void* so = ::dlopen((std::string(SD_TEST_GEGL_OPS_DIR) + "/sdgraph-gegl.so").c_str(),
                      RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(so, nullptr) << ::dlerror();
  auto run = reinterpret_cast<decltype(&sd_gegl_run)>(::dlsym(so, "sd_gegl_run"));
  auto release = reinterpret_cast<decltype(&sd_gegl_free)>(::dlsym(so, "sd_gegl_free"));
  ASSERT_TRUE(run && release);
  volatile int cancel = 0;
  std::atomic<int> progress_calls{0};
  SdGeglRequest r{};
  r.mode = "txt2img";
  r.prompt = "a long render";
  r.model = model_.c_str();
  r.steps = 500;
  r.width = r.height = 256;
  r.cfg = 7.5;
  r.cancel = &cancel;
  r.progress = [](void* user, double, const char*) { ++*static_cast<std::atomic<int>*>(user); };
  r.progress_user = &progress_calls;
  float* rgba = nullptr;
  char* error = nullptr;
  int w = 0, h = 0, rc = -1;
  std::thread t([&] { rc = run(&r, &rgba, &w, &h, &error); });
  while (progress_calls.load() < 10) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  cancel = 1;
  t.join();
  EXPECT_NE(rc, 0);
  ASSERT_NE(error, nullptr);
  EXPECT_NE(std::string(error).find("CANCELLED"), std::string::npos) << error;
  EXPECT_EQ(rgba, nullptr);
  release(error);
}

}  // namespace
}  // namespace sd::testing
