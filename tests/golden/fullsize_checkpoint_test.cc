// A full-size SD v1.5 checkpoint of sdgold-v1 weights (1.07e9 parameters, 4.3 GB), written once per run
// by the generator, read back through the normal checkpoint path: zero missing keys, the released
// configuration detected, and the rule's check values found in the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/sd_config.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"

namespace sd {
namespace {

class FullSizeCheckpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    path_ = dir_->File("sdgold-v1-sd15.safetensors");
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(WriteTestCheckpoint(path_, TestCheckpointOptions()).ok());
    std::printf("[ info ] wrote the full-size checkpoint in %.1f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  static void TearDownTestSuite() { delete dir_; }
  static testing::TempDir* dir_;
  static std::string path_;
};
testing::TempDir* FullSizeCheckpointTest::dir_;
std::string FullSizeCheckpointTest::path_;

TEST_F(FullSizeCheckpointTest, LoadsWithZeroMissingKeysAndTheReleasedConfig) {
  auto c = Checkpoint::Open(path_);
  ASSERT_TRUE(c.ok()) << c.status();
  ShapeLookup lookup = [&](const std::string& n) { return (*c)->ShapeOf(n); };
  auto config = DetectConfig(lookup);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(*config == SdConfig::Sd15()) << config->Describe();
  KeyCheck check = CheckKeys(*config, lookup);
  EXPECT_TRUE(check.ok()) << check.ToStatus(path_);
  EXPECT_EQ(check.matched, 1130u);
  uint64_t params = 0;
  for (const KeySpec& k : ExpectedKeys(*config)) params += (*c)->Find(k.name)->numel;
  EXPECT_EQ(params, 1066235307u);
}

TEST_F(FullSizeCheckpointTest, FileHoldsTheRuleCheckValues) {
  auto c = Checkpoint::Open(path_);
  ASSERT_TRUE(c.ok());
  nlohmann::json rc = nlohmann::json::parse(testing::ReadFile(testing::GoldenDir() + "/rule_check.json"));
  int checked = 0;
  for (auto it = rc.begin(); it != rc.end(); ++it) {
    if (!it.value().is_object() || !it.value().contains("sum_fp64")) continue;
    const TensorView* t = (*c)->Find(it.key());
    ASSERT_NE(t, nullptr) << it.key();
    const float* v = reinterpret_cast<const float*>(t->data);
    double sum = 0;
    for (uint64_t i = 0; i < t->numel; ++i) sum += v[i];
    EXPECT_NEAR(sum, it.value()["sum_fp64"].get<double>(), 1e-9 * std::max(1.0, std::abs(sum))) << it.key();
    EXPECT_EQ(v[t->numel - 1], it.value()["last"].get<float>());
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST_F(FullSizeCheckpointTest, InspectReportsTheFullConfig) {
  auto r = testing::RunCommand(std::string(SD_TEST_SDGRAPH_BIN) + " inspect --json " + testing::Quote(path_));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["unet"]["model_channels"], 320);
  EXPECT_EQ(j["config"]["unet"]["context_dim"], 768);
  EXPECT_EQ(j["config"]["clip"]["layers"], 12);
  EXPECT_EQ(j["config"]["vae"]["ch"], 128);
  EXPECT_EQ(j["keys"]["matched"], 1130);
  EXPECT_EQ(j["keys"]["extra"], 5);
  EXPECT_EQ(j["ok"], true);
}

}  // namespace
}  // namespace sd
