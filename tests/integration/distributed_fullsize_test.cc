// The distributed runtime once on the full-size sdgold-v1 model (SD v1.5 shapes, 1.07 B
// parameters): txt2img, img2img and inpaint on two workers give the in-process images, byte for
// byte (f32, CPU, one thread everywhere), with the loop's calls spread over both workers and with
// the whole loop on one (--placement worker). Small images and few steps: the point is the
// full-size networks and payloads.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/integration/image_util.h"
#include "tests/integration/worker_harness.h"

namespace sd::testing {
namespace {

TEST(DistributedFullSizeTest, ImagesEqualInProcess) {
  TempDir dir;
  std::filesystem::create_directories(dir.File("models"));
  const std::string model = dir.File("models/sd15.safetensors");
  auto r = RunCommand(SdGraphBin() + " make-test-checkpoint " + Quote(model));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WorkerProcess a, b;
  ASSERT_TRUE(a.Start(dir.File("models"), dir.File("a.log"), {"--preload", "sd15"}));
  ASSERT_TRUE(b.Start(dir.File("models"), dir.File("b.log"), {"--preload", "sd15"}));
  const std::string pool = a.target() + "," + b.target();
  auto gen = [&](const std::string& mode, const std::string& extra, const std::string& out,
                 bool remote) {
    std::string cmd = SdGraphBin() + " " + mode +
                      " --prompt 'a lighthouse at dusk' --steps 2 --seed 3 --threads 1 -o " +
                      Quote(out) + " " + extra;
    return remote ? cmd + " --model sd15 --workers " + pool : cmd + " --model " + Quote(model);
  };
  r = RunCommand(gen("txt2img", "--width 64 --height 64", dir.File("init.png"), false));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Rgb8 mask{64, 64, std::vector<uint8_t>(64 * 64 * 3, 0)};
  for (int i = 0; i < 64 * 32 * 3; ++i) mask.pixels[i] = 255;  // top half: repaint
  ASSERT_TRUE(WriteRgb8(dir.File("mask.png"), mask));
  const std::string init = "--init " + Quote(dir.File("init.png"));
  for (const auto& [mode, extra] : std::vector<std::pair<std::string, std::string>>{
           {"txt2img", "--width 64 --height 64"},
           {"img2img", init + " --strength 0.75"},
           {"inpaint", init + " --mask " + Quote(dir.File("mask.png"))}}) {
    SCOPED_TRACE(mode);
    const size_t from_a = a.LogSize(), from_b = b.LogSize();
    r = RunCommand(gen(mode, extra, dir.File("local.png"), false));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = RunCommand(gen(mode, extra, dir.File("remote.png"), true));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const int diff = MaxDiff(ReadRgb8(dir.File("local.png")), ReadRgb8(dir.File("remote.png")));
    std::printf("[ distributed full-size ] %s: max |diff| vs in-process = %d levels\n",
                mode.c_str(), diff);
    EXPECT_EQ(diff, 0);
    EXPECT_FALSE(a.Events("infer", from_a).empty());
    EXPECT_FALSE(b.Events("infer", from_b).empty());
    // The whole loop on one worker (--placement worker): the same bytes again.
    const size_t runs_a = a.LogSize(), runs_b = b.LogSize();
    r = RunCommand(gen(mode, extra + " --placement worker", dir.File("placed.png"), true));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(MaxDiff(ReadRgb8(dir.File("local.png")), ReadRgb8(dir.File("placed.png"))), 0);
    EXPECT_EQ(a.Events("graph_run", runs_a).size() + b.Events("graph_run", runs_b).size(), 1u);
  }
}

}  // namespace
}  // namespace sd::testing
