// sd-graph's subcommands, run as a user would run them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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

TEST_F(CliTest, TokenizeWarnsAboutTruncation) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "dog ";
  auto r = RunCommand(Bin() + " tokenize " + Quote(text));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the last 25 were cut"));
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

TEST_F(CliTest, ConvertToHalfAndBackKeepsKeysAndHalvesTheSize) {
  const std::string in = dir_->File("tiny.safetensors"), half = dir_->File("half.safetensors");
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

}  // namespace
}  // namespace sd
