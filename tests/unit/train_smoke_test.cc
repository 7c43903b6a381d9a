// sd-train from scratch on the tiny configuration: the loss falls in both phases, a run stopped and
// resumed takes the same steps as one that never stopped, and the model it writes loads and runs
// through sd-graph at the native size it declares; and sd-train-controlnet and sd-train-inpaint
// likewise. (CI never
// trains the shipped models: that takes two hours.)
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/controlnet_layout.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/sd_config.h"
#include "tests/test_util.h"

namespace sd {
namespace {

const std::string kTrain = SD_TEST_SDTRAIN_BIN;
const std::string kTrainControlNet = SD_TEST_SDTRAIN_CONTROLNET_BIN;
const std::string kTrainInpaint = SD_TEST_SDTRAIN_INPAINT_BIN;
const std::string kTiny =
    " --config tiny --size 64 --vae-steps 40 --vae-batch 4 --diffusion-steps 60 --diffusion-batch 8"
    " --decoder-steps 10 --pool-size 64 --warmup-steps 5 --vae-lr 2e-3 --diffusion-lr 1e-3 "
    "--log-every 20 --threads 1 --caption-loss-weight 0.1 --decoder-edge-weight 1 "
    "--seed 3";

std::map<std::string, std::vector<double>> Losses(const std::string& path) {
  std::map<std::string, std::vector<double>> out;
  std::ifstream f(path);
  std::string phase;
  long step;
  double loss;
  while (f >> phase >> step >> loss) out[phase].push_back(loss);
  return out;
}

double MeanOf(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

// How many tensors of two safetensors files differ in name, size or bytes (all, when a file
// cannot be read or their counts differ).
size_t DifferingTensors(const std::string& a, const std::string& b) {
  auto x = ReadSafetensors(a);
  auto y = ReadSafetensors(b);
  if (!x.ok() || !y.ok() || x->tensors.size() != y->tensors.size()) {
    ADD_FAILURE() << a << " and " << b << " cannot be compared";
    return SIZE_MAX;
  }
  size_t differing = 0;
  for (size_t i = 0; i < x->tensors.size(); ++i) {
    const TensorView& u = x->tensors[i];
    const TensorView& v = y->tensors[i];
    differing += u.name != v.name || u.nbytes() != v.nbytes() ||
                 std::memcmp(u.data, v.data, u.nbytes()) != 0;
  }
  return differing;
}

TEST(TrainSmokeTest, LossFallsAndTheModelRunsThroughSdGraph) {
  testing::TempDir dir;
  const auto r = testing::RunCommand(kTrain + " --out " + dir.path() + kTiny);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ETA"), std::string::npos) << r.out;
  const auto losses = Losses(dir.File("losses.tsv"));
  ASSERT_EQ(losses.at("vae").size(), 40u);
  ASSERT_EQ(losses.at("unet").size(), 60u);
  ASSERT_EQ(losses.at("decoder").size(), 10u);
  ASSERT_EQ(losses.at("caption_heads").size(), 60u);
  for (const char* phase : {"vae", "unet", "caption_heads"}) {
    const std::vector<double>& v = losses.at(phase);
    const double first = MeanOf(v, 0, 10), last = MeanOf(v, v.size() - 10, v.size());
    std::printf("[ train ] %s loss: first 10 steps %.4f, last 10 %.4f\n", phase, first, last);
    EXPECT_LT(last, 0.9 * first) << phase;  // clearly down, not noise
  }
  auto ckpt = Checkpoint::Open(dir.File("model.safetensors"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(NativeSize((*ckpt)->metadata()), 64);
  EXPECT_EQ((*ckpt)->PredominantFloatDType(), DType::kF16);
  EXPECT_NE((*ckpt)->metadata().at("sdgraph.description").find("not Stable Diffusion"),
            std::string::npos);
  EXPECT_NE((*ckpt)->metadata().at("sdgraph.recipe").find("--seed 3"), std::string::npos);
  // No --width/--height: the model's native size.
  const auto gen = testing::RunCommand(
      std::string(SD_TEST_SDGRAPH_BIN) + " txt2img --model " + dir.File("model.safetensors") +
      " --prompt 'a red circle' --steps 3 -o " + dir.File("out.png"));
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  const std::string png = testing::ReadFile(dir.File("out.png"));
  ASSERT_GT(png.size(), 24u);
  const auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(png[at])) << 24) | (uint32_t(uint8_t(png[at + 1])) << 16) |
           (uint32_t(uint8_t(png[at + 2])) << 8) | uint32_t(uint8_t(png[at + 3]));
  };
  EXPECT_EQ(be32(16), 64u);  // IHDR width
  EXPECT_EQ(be32(20), 64u);  // IHDR height

  // Going on from the written model: only the diffusion and decoder phases run, from trained
  // weights (a loss near the end of the first run's, not the ~0.9 of a fresh UNet).
  testing::TempDir more;
  const auto c =
      testing::RunCommand(kTrain + " --out " + more.path() + kTiny +
                          " --diffusion-steps 5 --init-from " + dir.File("model.safetensors"));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const auto again = Losses(more.File("losses.tsv"));
  EXPECT_EQ(again.count("vae"), 0u);
  ASSERT_EQ(again.at("unet").size(), 5u);
  EXPECT_LT(MeanOf(again.at("unet"), 0, 5), 0.75 * MeanOf(losses.at("unet"), 0, 10));
  // Its recipe records the first run's, then its own; its training time includes the first run's.
  auto first = ReadSafetensors(dir.File("model.safetensors"));
  auto second = ReadSafetensors(more.File("model.safetensors"));
  ASSERT_TRUE(first.ok() && second.ok());
  const std::string recipe = second->metadata.at("sdgraph.recipe");
  EXPECT_EQ(
      recipe.rfind(first->metadata.at("sdgraph.recipe") + "; then (from that model's weights) ", 0),
      0u)
      << recipe;
  EXPECT_EQ(second->metadata.at("sdgraph.train_steps"),
            first->metadata.at("sdgraph.train_steps") + "; then diffusion 5, decoder 10");
  EXPECT_GE(std::stod(second->metadata.at("sdgraph.train_seconds")),
            std::stod(first->metadata.at("sdgraph.train_seconds")));
}

TEST(TrainSmokeTest, AResumedRunTakesTheSameSteps) {
  testing::TempDir straight, resumed;
  const auto a = testing::RunCommand(kTrain + " --out " + straight.path() + kTiny);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  // Stopped in the VAE phase, then in the diffusion phase, then in the decoder phase, then run to
  // the end.
  for (int stop : {25, 50, 30, 0}) {
    const auto b =
        testing::RunCommand(kTrain + " --out " + resumed.path() + kTiny +
                            (stop ? " --stop-after-steps " + std::to_string(stop) : std::string()));
    ASSERT_EQ(b.exit_code, 0) << b.err;
    if (stop) {
      EXPECT_NE(b.out.find("run the same command again to resume"), std::string::npos) << b.out;
    }
  }
  EXPECT_EQ(DifferingTensors(straight.File("model.safetensors"), resumed.File("model.safetensors")),
            0u)
      << "tensors differ between the straight and the resumed run";
}

TEST(TrainSmokeTest, BadFlagsAreRefusedWithUsage) {
  const auto r = testing::RunCommand(kTrain + " --out /tmp/x --config sd99");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown --config 'sd99'"), std::string::npos) << r.err;
  const auto n = testing::RunCommand(kTrain + " --out /tmp/x --vae-steps many");
  EXPECT_EQ(n.exit_code, 2);
  EXPECT_NE(n.err.find("--vae-steps: 'many' is not a number"), std::string::npos) << n.err;
  for (const char* flag : {" --x0-weight-cap 0.5", " --high-t-fraction 1.5",
                           " --caption-loss-weight -1", " --decoder-edge-weight -2"}) {
    const auto f = testing::RunCommand(kTrain + " --out /tmp/x" + flag);
    EXPECT_EQ(f.exit_code, 2) << flag;
  }
  const auto h = testing::RunCommand(kTrain + " --help");
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("resume"), std::string::npos);
}

// A fine-tuning trainer (`tool`) on a tiny base model it writes to dir/base.safetensors: `steps`
// steps straight into dir/a (progress with an ETA, one loss per step of `phase`), then into dir/b
// stopped after `stop` steps and resumed. *flags: the flags of both runs but --out.
void TrainStraightAndResumed(const testing::TempDir& dir, const std::string& tool,
                             const std::string& phase, int steps, int stop, std::string* flags) {
  const std::string base = dir.File("base.safetensors");
  auto r = testing::RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " make-test-checkpoint " + base +
                               " --tiny");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  *flags = " --model " + base + " --size 64 --steps " + std::to_string(steps) +
           " --batch 4 --pool-size 16 --warmup-steps 3 --lr 1e-3 --log-every 8 --threads 1 "
           "--seed 2";
  r = testing::RunCommand(tool + " --out " + dir.File("a") + *flags);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ETA"), std::string::npos) << r.out;
  ASSERT_EQ(Losses(dir.File("a/losses.tsv")).at(phase).size(), static_cast<size_t>(steps));
  for (int stop_after : {stop, 0}) {
    r = testing::RunCommand(
        tool + " --out " + dir.File("b") + *flags +
        (stop_after ? " --stop-after-steps " + std::to_string(stop_after) : ""));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
}

// sd-train-controlnet on a tiny base model: it trains, a resumed run takes the same steps, and the
// ControlNet it writes loads as one (unprefixed names, the base UNet's configuration) and steers
// sd-graph's txt2img.
TEST(TrainSmokeTest, AControlNetTrainsResumesAndSteersSdGraph) {
  testing::TempDir dir;
  const std::string base = dir.File("base.safetensors");
  std::string flags;
  ASSERT_NO_FATAL_FAILURE(
      TrainStraightAndResumed(dir, kTrainControlNet, "controlnet", 24, 10, &flags));
  testing::CommandResult r;
  // (The metadata differ: each records its own training time.)
  EXPECT_EQ(
      DifferingTensors(dir.File("a/controlnet.safetensors"), dir.File("b/controlnet.safetensors")),
      0u)
      << "the straight and the resumed run wrote different ControlNets";

  auto ckpt = Checkpoint::Open(dir.File("a/controlnet.safetensors"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto layout = ReadControlNetLayout(**ckpt);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->layout, ControlNetLayout::kUnprefixed);
  const UNetConfig want = SdConfig::Tiny().unet;
  EXPECT_EQ(layout->config.unet.model_channels, want.model_channels);
  EXPECT_EQ(layout->config.unet.channel_mult, want.channel_mult);
  EXPECT_EQ(layout->config.unet.context_dim, want.context_dim);
  EXPECT_EQ((*ckpt)->PredominantFloatDType(), DType::kF16);
  EXPECT_EQ((*ckpt)->metadata().at("sdgraph.base_model"), "base.safetensors");
  EXPECT_EQ((*ckpt)->metadata().at("sdgraph.train_steps"), "24");

  const std::string gen = std::string(SD_TEST_SDGRAPH_BIN) + " txt2img --model " + base +
                          " --prompt 'a red circle' --width 64 --height 64 --steps 2 --seed 1";
  r = testing::RunCommand(gen + " -o " + dir.File("plain.png"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testing::RunCommand(gen + " --controlnet " + dir.File("a/controlnet.safetensors") +
                          " --hint " + dir.File("plain.png") + " --hint-pass canny -o " +
                          dir.File("steered.png"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(testing::ReadFile(dir.File("plain.png")), testing::ReadFile(dir.File("steered.png")));

  r = testing::RunCommand(kTrainControlNet + " --out " + dir.File("c"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--model MODEL and --out DIR are required"), std::string::npos) << r.err;
  r = testing::RunCommand(kTrainControlNet + " --out " + dir.File("c") + flags +
                          " --canny-low 300 --canny-high 200");
  EXPECT_EQ(r.exit_code, 2);
}

// sd-train-inpaint on a tiny base model: it trains, a resumed run takes the same steps, and the
// model it writes is a 9-channel inpainting model that sd-graph inpaint runs (with inpaint9.pbtxt:
// --strength is refused as for any such model).
TEST(TrainSmokeTest, AnInpaintingModelTrainsResumesAndInpaintsThroughSdGraph) {
  testing::TempDir dir;
  const std::string base = dir.File("base.safetensors");
  std::string flags;
  ASSERT_NO_FATAL_FAILURE(TrainStraightAndResumed(dir, kTrainInpaint, "inpaint", 16, 6, &flags));
  testing::CommandResult r;
  const std::string model = dir.File("a/model.safetensors");
  EXPECT_EQ(DifferingTensors(model, dir.File("b/model.safetensors")), 0u)
      << "the straight and the resumed run wrote different models";

  auto ckpt = Checkpoint::Open(model);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto config = DetectConfig([&](const std::string& n) { return (*ckpt)->ShapeOf(n); });
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->unet.in_channels, 9);
  EXPECT_EQ(ConfigName(*config), "tiny-inpainting");
  EXPECT_EQ((*ckpt)->metadata().at("sdgraph.base_model"), "base.safetensors");
  EXPECT_EQ((*ckpt)->metadata().at("sdgraph.train_steps"), "16");
  EXPECT_EQ(NativeSize((*ckpt)->metadata()), 64);

  const std::string sdgraph = std::string(SD_TEST_SDGRAPH_BIN);
  r = testing::RunCommand(sdgraph + " txt2img --model " + base +
                          " --prompt 'a red circle' --width 64 --height 64 --steps 2 --seed 1 -o " +
                          dir.File("init.png"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string mask = "P6\n64 64\n255\n";
  for (int y = 0; y < 64; ++y) {
    for (int x = 0; x < 64; ++x) mask += std::string(3, x >= 32 ? '\xff' : '\0');
  }
  testing::WriteFile(dir.File("mask.ppm"), mask);
  const std::string inpaint = sdgraph + " inpaint --model " + model + " --init " +
                              dir.File("init.png") + " --mask " + dir.File("mask.ppm") +
                              " --prompt 'a blue square' --steps 2 --seed 1 -o " +
                              dir.File("inpainted.png");
  r = testing::RunCommand(inpaint);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testing::RunCommand(inpaint + " --strength 0.5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("9-channel inpainting models always start from noise"), std::string::npos)
      << r.err;

  r = testing::RunCommand(kTrainInpaint + " --out " + dir.File("c") + " --model " + model);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already an inpainting model"), std::string::npos) << r.err;
  r = testing::RunCommand(kTrainInpaint + " --out " + dir.File("c"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--model MODEL and --out DIR are required"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sd
