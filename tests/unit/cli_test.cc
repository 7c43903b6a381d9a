// sd-graph's subcommands, run as a user would run them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nodes/weights/safetensors.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;
using testing::Quote;
using testing::RunCommand;

std::string Bin() { return SD_TEST_SDGRAPH_BIN; }

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    for (const char* variant : {"", "--inpaint"}) {
      const std::string out = dir_->File(std::string("tiny") + (*variant ? "9" : "") + ".safetensors");
      auto r = RunCommand(Bin() + " make-test-checkpoint --tiny " + variant + " " + Quote(out));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_THAT(r.err, HasSubstr("images are noise"));
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static testing::TempDir* dir_;
};
testing::TempDir* CliTest::dir_;

TEST_F(CliTest, TokenizePrintsOneJsonArrayPerText) {
  auto r = RunCommand(Bin() + " tokenize --tokenizer " + Quote(testing::TokenizerDir()) +
               " 'a photograph of an astronaut riding a horse' 'a dog with glasses'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string l1, l2;
  std::getline(lines, l1);
  std::getline(lines, l2);
  auto a = nlohmann::json::parse(l1).get<std::vector<int64_t>>();
  auto b = nlohmann::json::parse(l2).get<std::vector<int64_t>>();
  ASSERT_EQ(a.size(), 77u);
  EXPECT_EQ(std::vector<int64_t>(a.begin(), a.begin() + 10),
            (std::vector<int64_t>{49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407}));
  EXPECT_EQ(std::vector<int64_t>(b.begin(), b.begin() + 6), (std::vector<int64_t>{49406, 320, 1929, 593, 6116, 49407}));
}

TEST_F(CliTest, KindsListsPortsAndWritesTheCatalog) {
  auto r = RunCommand(Bin() + " kinds UNetStep Noise");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("UNetStep  [computes with the model]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("in  latents: float32 tensor of rank 4 [B,C,h,w]"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("out eps: float32 tensor of rank 4 [B,C,h,w]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("options: sd.v1.NoiseOptions"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("VaeDecode"), std::string::npos) << "only the kinds asked for";
  r = RunCommand(Bin() + " kinds --textproto");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("name: \"VaeDecode\""), std::string::npos);
  EXPECT_NE(r.out.find("dims: \"B,3,h*f,w*f\""), std::string::npos)
      << "the dims travel in the catalog";
  EXPECT_NE(r.out.find("needs_model: true"), std::string::npos);
  r = RunCommand(Bin() + " kinds NoSuchKind");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown node kind 'NoSuchKind'"), std::string::npos) << r.err;
}

TEST_F(CliTest, TokenizeWarnsAboutTruncation) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "dog ";
  auto r = RunCommand(Bin() + " tokenize " + Quote(text));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the last 25 were cut"));
  EXPECT_THAT(r.err, HasSubstr("see --chunks"));
  // --chunks: what the stock graphs encode, two chunks here, weights parsed, tags removed.
  r = RunCommand(Bin() + " tokenize --chunks " + Quote("(red) " + text + "<lora:x:1>") + " " +
                 Quote("(red:2) fox") + " --weighting comfy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string l1, l2;
  std::getline(lines, l1);
  std::getline(lines, l2);
  const nlohmann::json a = nlohmann::json::parse(l1), b = nlohmann::json::parse(l2);
  ASSERT_EQ(a["ids"].size(), 2u);
  EXPECT_EQ(a["ids"][0].size(), 77u);
  EXPECT_EQ(a["ids"][0][1], 736);  // "red"
  EXPECT_NEAR(a["weights"][0][1].get<double>(), 1.1, 1e-6);
  // 101 one-token words: 75 in the first chunk, 26 in the second, then <end>.
  EXPECT_EQ(a["ids"][1][26], 1929);  // "dog"
  EXPECT_EQ(a["ids"][1][27], 49407);
  EXPECT_NEAR(b["weights"][0][1].get<double>(), 2.0, 1e-6);
  EXPECT_EQ(RunCommand(Bin() + " tokenize --weighting comfy x").exit_code, 2);
}

TEST_F(CliTest, InspectReportsTinyAndInpaintingConfigs) {
  auto r = RunCommand(Bin() + " inspect " + Quote(dir_->File("tiny.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("format:      safetensors"));
  EXPECT_THAT(r.out, HasSubstr("dtype:       F32"));
  EXPECT_THAT(r.out, HasSubstr("model_channels=32"));
  EXPECT_THAT(r.out, HasSubstr("0 missing, 0 shape mismatches, 5 extra"));
  EXPECT_THAT(r.out, HasSubstr("sha256:"));

  auto j = RunCommand(Bin() + " inspect --json " + Quote(dir_->File("tiny9.safetensors")));
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto json = nlohmann::json::parse(j.out);
  EXPECT_EQ(json["config"]["unet"]["in_channels"], 9);
  EXPECT_EQ(json["config"]["unet"]["inpainting"], true);
  EXPECT_EQ(json["keys"]["missing"].size(), 0u);
  EXPECT_EQ(json["ok"], true);
  EXPECT_EQ(json["sha256"].get<std::string>().size(), 64u);
}

// A ControlNet is recognised as one: its layout and the UNet it copies; a broken one says why.
TEST_F(CliTest, InspectReportsControlNets) {
  const std::string cn = dir_->File("cn.safetensors");
  auto r = RunCommand(Bin() + " make-test-checkpoint --tiny --controlnet --layout diffusers " +
                      Quote(cn));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(Bin() + " inspect " + Quote(cn));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("ControlNet for Stable Diffusion v1.x, diffusers ControlNetModel "
                               "layout, 3 hint channels"));
  EXPECT_THAT(
      r.out, HasSubstr("model_channels=32 channel_mult=[1,2,4,4] num_res_blocks=1 context_dim=64"));
  auto j = RunCommand(Bin() + " inspect --json " + Quote(cn));
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto json = nlohmann::json::parse(j.out);
  EXPECT_EQ(json["kind"], "controlnet");
  EXPECT_EQ(json["ok"], true);
  // A hint block alone: recognised as a ControlNet, and said why it cannot be used.
  std::vector<float> zeros(16 * 3 * 3 * 3, 0.0f);
  ASSERT_TRUE(WriteSafetensors(dir_->File("broken_cn.safetensors"), {{"input_hint_block.0.weight",
                                                                      DType::kF32,
                                                                      {16, 3, 3, 3},
                                                                      zeros.data(),
                                                                      zeros.size() * sizeof(float),
                                                                      nullptr}})
                  .ok());
  r = RunCommand(Bin() + " inspect " + Quote(dir_->File("broken_cn.safetensors")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("config:      a ControlNet that cannot be used:"));
  EXPECT_THAT(r.err, HasSubstr("broken_cn.safetensors"));
  r = RunCommand(Bin() + " inspect " + Quote(dir_->File("tiny.safetensors")));
  EXPECT_EQ(r.exit_code, 0) << "an SD checkpoint is still inspected as one";
}

// IEEE half -> float, for comparing values without LibTorch.
float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    f = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    f = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits |= sign;
  std::memcpy(&f, &bits, 4);
  return f;
}

TEST_F(CliTest, ConvertToHalfAndBackKeepsKeysAndHalvesTheSize) {
  const std::string in = dir_->File("tiny.safetensors"), half = dir_->File("half.safetensors");
  const std::string back = dir_->File("back.safetensors");
  auto r = RunCommand(Bin() + " convert " + Quote(in) + " " + Quote(half) + " --dtype f16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = RunCommand(Bin() + " inspect --json " + Quote(half));
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto json = nlohmann::json::parse(j.out);
  EXPECT_EQ(json["dtype"], "F16");
  EXPECT_EQ(json["ok"], true);
  const auto in_size = std::filesystem::file_size(in), half_size = std::filesystem::file_size(half);
  EXPECT_LT(half_size, in_size * 6 / 10);
  EXPECT_GT(half_size, in_size * 4 / 10);

  // And back to f32: the same keys, shapes and integer buffers; every float is the half value of
  // the original (round to nearest: within half a unit of f16's last place).
  r = RunCommand(Bin() + " convert " + Quote(half) + " " + Quote(back) + " --dtype f32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = ReadSafetensors(in), h = ReadSafetensors(half), b = ReadSafetensors(back);
  ASSERT_TRUE(a.ok() && h.ok() && b.ok());
  ASSERT_EQ(a->tensors.size(), b->tensors.size());
  size_t compared = 0;
  for (size_t i = 0; i < a->tensors.size(); ++i) {
    const TensorView &x = a->tensors[i], &y = b->tensors[i], &z = h->tensors[i];
    ASSERT_EQ(x.name, y.name);
    ASSERT_EQ(x.name, z.name);
    ASSERT_EQ(x.shape, y.shape) << x.name;
    ASSERT_EQ(x.dtype, y.dtype) << x.name;
    if (x.dtype != DType::kF32) {
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << x.name << " (integers are kept)";
      continue;
    }
    ASSERT_EQ(z.dtype, DType::kF16) << x.name;
    const float* xs = reinterpret_cast<const float*>(x.data);
    const float* ys = reinterpret_cast<const float*>(y.data);
    const uint16_t* zs = reinterpret_cast<const uint16_t*>(z.data);
    for (uint64_t k = 0; k < x.numel; ++k, ++compared) {
      ASSERT_EQ(ys[k], HalfToFloat(zs[k])) << x.name << "[" << k << "]";
      ASSERT_LE(std::abs(ys[k] - xs[k]), std::max(std::abs(xs[k]) * 0x1p-11f, 0x1p-25f))
          << x.name << "[" << k << "]: " << xs[k] << " -> " << ys[k];
    }
  }
  EXPECT_GT(compared, 100000u);
}

// The hostile corpus (tests/python/write_hostile_ckpts.py) through the commands a user runs on a
// downloaded file: each ends with exit code 1 and a message naming the file, never a signal, and
// refusing any of them peaks at 256 MB of resident memory at most (the light sd-graph front refuses
// them without loading LibTorch, which alone takes ~230 MB).
TEST_F(CliTest, HostileCheckpointsEndWithCleanErrorsInInspectAndConvert) {
  auto w = RunCommand(testing::PythonScript("write_hostile_ckpts.py") + " " +
                      Quote(dir_->File("hostile")) + " " + Quote(dir_->File("canary")));
  ASSERT_EQ(w.exit_code, 0) << w.err;
  nlohmann::json expected =
      nlohmann::json::parse(testing::ReadFile(dir_->File("hostile/expected.json")));
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    const std::string path = dir_->File("hostile/" + it.key() + ".ckpt");
    for (const std::string& cmd : {"exec " + Bin() + " inspect " + Quote(path),
                                   "exec " + Bin() + " convert " + Quote(path) + " " +
                                       Quote(dir_->File("hostile/out.safetensors"))}) {
      auto r = RunCommand(cmd);
      EXPECT_EQ(r.signal, 0) << cmd;
      EXPECT_EQ(r.exit_code, 1) << cmd << "\n" << r.err;
      EXPECT_THAT(r.err, HasSubstr(path)) << cmd;
      EXPECT_THAT(r.err, HasSubstr(it.value()["error"].get<std::string>())) << cmd;
      EXPECT_GT(r.peak_rss_kb, 0) << cmd;
      EXPECT_LE(r.peak_rss_kb, 256 * 1024) << cmd;
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir_->File("hostile/out.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(dir_->File("canary")));
}

TEST_F(CliTest, BadInputsGiveClearErrorsAndExitCodes) {
  auto r = RunCommand(Bin() + " inspect /nonexistent/model.ckpt");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/model.ckpt"));
  testing::WriteFile(dir_->File("junk.bin"), "this is not a model");
  r = RunCommand(Bin() + " inspect " + Quote(dir_->File("junk.bin")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not a checkpoint"));
  r = RunCommand(Bin() + " inspect");
  EXPECT_EQ(r.exit_code, 2);
  r = RunCommand(Bin() + " inspect --bogus x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown flag --bogus"));
  r = RunCommand(Bin() + " convert a b --dtype f8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown dtype 'f8'"));
  r = RunCommand(Bin() + " frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));
}

// sd-graph answers the file-reading commands without LibTorch (a few MB) and hands every other
// command to sd-graph-engine beside it; without the engine it says so instead of failing obscurely.
TEST_F(CliTest, FrontRunsReadersItselfAndStartsTheEngineForTheRest) {
  auto r = RunCommand("exec " + Bin() + " inspect " + Quote(dir_->File("tiny.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(r.peak_rss_kb, 100 * 1024) << "inspect loaded LibTorch";
  r = RunCommand(Bin() + " kinds Noise");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("seeded Gaussian noise"));
  const std::string lone = dir_->File("lone");
  std::filesystem::create_directories(lone);
  std::filesystem::copy_file(Bin(), lone + "/sd-graph");
  r = RunCommand(Quote(lone + "/sd-graph") + " kinds");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot start " + lone + "/sd-graph-engine"));
  r = RunCommand(Quote(lone + "/sd-graph") + " inspect " + Quote(dir_->File("tiny.safetensors")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(CliTest, EveryCommandHasHelp) {
  for (const char* cmd : {"tokenize", "inspect", "convert", "make-test-checkpoint"}) {
    auto r = RunCommand(Bin() + " " + cmd + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr(std::string("usage: sd-graph ") + cmd));
  }
  auto r = RunCommand(Bin() + " --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("make-test-checkpoint"));
}

// sd-graph cpu: reports without timing anything, --measure fills the measurement file with this
// machine's lines, --forget drops them (and only them).
TEST_F(CliTest, CpuReportsMeasuresAndForgetsThisMachine) {
  const std::string file = dir_->File("cpu-measurements");
  const std::string env = "SDGRAPH_CPU_MEASUREMENTS=" + Quote(file) + " ";
  auto json = [&](const std::string& flags) {
    auto r = RunCommand(env + Bin() + " cpu --threads 1 --json " + flags);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  };
  nlohmann::json j = json("");
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["measurements_file"], file);
  EXPECT_TRUE(j["native_bf16_speedup"].is_null());
  ASSERT_EQ(j["winograd"].size(), 7u);  // the SD VAE's pairs of 128+ channels
  ASSERT_EQ(j["subpixel_upsampling"].size(),
            2u);  // the decoder's upsampling at 256 and 512 channels
  EXPECT_TRUE(j["onednn_linear_speedup"].is_null());
  EXPECT_EQ(j["winograd_products"], "decided on first use");
  EXPECT_FALSE(std::filesystem::exists(file)) << "nothing is timed without --measure";

  testing::WriteFile(file, "another CPU | avx2 | 1 threads | BLAS\tbf16 native speedup\t3\n");
  j = json("--measure");
  EXPECT_GT(j["native_bf16_speedup"].get<double>(), 0);
  EXPECT_GT(j["channels_last_speedup"].get<double>(), 0);
  for (const auto& w : j["winograd"]) {
    EXPECT_GT(w["speedup"].get<double>(), 0) << w.dump();
    EXPECT_EQ(w["used"].get<bool>(), w["speedup"].get<double>() >= 1.2);
  }
  for (const auto& u : j["subpixel_upsampling"]) {
    EXPECT_GT(u["speedup"].get<double>(), 0) << u.dump();
    EXPECT_EQ(u["used"].get<bool>(), u["speedup"].get<double>() >= 1.1);
  }
  EXPECT_GT(j["onednn_linear_speedup"].get<double>(), 0);
  // Winograd's products run as the linear layers were measured to (winograd_conv.h).
  EXPECT_EQ(j["winograd_products"],
            j["onednn_linear_speedup"].get<double>() >= 1.1 ? "onednn" : "blas");
  const std::string machine = j["machine"];
  auto lines_of = [&](const std::string& who) {
    std::istringstream in(testing::ReadFile(file));
    int n = 0;
    for (std::string line; std::getline(in, line);) n += line.rfind(who + "\t", 0) == 0 ? 1 : 0;
    return n;
  };
  EXPECT_EQ(lines_of(machine), 12);  // bf16, layout, 7 pairs, 2 upsampling widths, linear
  // Read back by the next process, not timed again.
  auto r = RunCommand(env + Bin() + " cpu --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("512 -> 512"));
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("timing this CPU")));

  j = json("--forget");
  EXPECT_TRUE(j["native_bf16_speedup"].is_null());
  EXPECT_EQ(lines_of(machine), 0);
  EXPECT_EQ(lines_of("another CPU | avx2 | 1 threads | BLAS"), 1);
  EXPECT_EQ(RunCommand(env + Bin() + " cpu --threads x").exit_code, 2);
}

}  // namespace
}  // namespace sd
