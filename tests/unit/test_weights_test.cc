#include "nodes/weights/test_weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/sd_config.h"
#include "tests/test_util.h"

namespace sd {
namespace {

uint64_t ParseHex(const std::string& s) { return std::stoull(s, nullptr, 16); }

TEST(SdgoldRuleTest, MatchesRuleCheckExactly) {
  nlohmann::json rc = nlohmann::json::parse(testing::ReadFile(testing::GoldenDir() + "/rule_check.json"));
  for (auto it = rc["fnv1a64"].begin(); it != rc["fnv1a64"].end(); ++it) {
    EXPECT_EQ(Fnv1a64(it.key()), ParseHex(it.value())) << it.key();
  }
  const std::string bias = "first_stage_model.post_quant_conv.bias";
  float v[4];
  FillSdgold(bias, {4}, v);
  for (int i = 0; i < 4; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    EXPECT_EQ(bits, ParseHex(rc["float32_bits_of_those"][i])) << i;
    EXPECT_EQ(v[i], rc[bias][i].get<float>());
  }
  int checked = 0;
  for (auto it = rc.begin(); it != rc.end(); ++it) {
    if (!it.value().is_object() || !it.value().contains("shape")) continue;
    const std::vector<int64_t> shape = it.value()["shape"];
    uint64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> w(n);
    FillSdgold(it.key(), shape, w.data(), 2);
    double sum = 0;
    for (float x : w) sum += x;
    EXPECT_NEAR(sum, it.value()["sum_fp64"].get<double>(), 1e-9 * std::max(1.0, std::abs(sum))) << it.key();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(w[i], it.value()["first4"][i].get<float>()) << it.key();
    EXPECT_EQ(w.back(), it.value()["last"].get<float>()) << it.key();
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST(HalfConversionTest, RoundsToNearestEven) {
  EXPECT_EQ(FloatToHalfBits(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalfBits(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65520.0f), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(1e-8f), 0x0000);
  EXPECT_EQ(FloatToHalfBits(5.9604645e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalfBits(1.0f + 1.0f / 2048), 0x3c00);  // tie -> even
  EXPECT_EQ(FloatToHalfBits(1.0f + 3.0f / 2048), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(FloatToHalfBits(NAN) & 0x7e00, 0x7e00);
  EXPECT_EQ(FloatToBFloat16Bits(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + 1.0f / 256), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + 3.0f / 256), 0x3f82);
}

TEST(TestCheckpointTest, TinyCheckpointLoadsWithZeroMissingKeys) {
  testing::TempDir dir;
  for (int in_channels : {4, 9}) {
    TestCheckpointOptions o;
    o.config = SdConfig::Tiny();
    o.config.unet.in_channels = in_channels;
    const std::string path = dir.File("tiny" + std::to_string(in_channels) + ".safetensors");
    ASSERT_TRUE(WriteTestCheckpoint(path, o).ok());
    auto c = Checkpoint::Open(path);
    ASSERT_TRUE(c.ok()) << c.status();
    ShapeLookup lookup = [&](const std::string& n) { return (*c)->ShapeOf(n); };
    auto config = DetectConfig(lookup);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_TRUE(*config == o.config);
    KeyCheck check = CheckKeys(*config, lookup);
    EXPECT_TRUE(check.ok()) << check.ToStatus(path);
    EXPECT_EQ(check.matched, ExpectedKeys(o.config).size());
    // The extras real checkpoints carry are present and tolerated.
    ASSERT_NE((*c)->Find("cond_stage_model.transformer.text_model.embeddings.position_ids"), nullptr);
    EXPECT_EQ((*c)->Find("cond_stage_model.transformer.text_model.embeddings.position_ids")->dtype, DType::kI64);
    EXPECT_EQ((*c)->tensors().size(), check.matched + 5);
  }
}

TEST(TestCheckpointTest, HalfCheckpointHoldsRoundedRuleValues) {
  testing::TempDir dir;
  TestCheckpointOptions o;
  o.config = SdConfig::Tiny();
  o.dtype = DType::kF16;
  ASSERT_TRUE(WriteTestCheckpoint(dir.File("h.safetensors"), o).ok());
  auto c = Checkpoint::Open(dir.File("h.safetensors"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->PredominantFloatDType(), DType::kF16);
  const TensorView* t = (*c)->Find("first_stage_model.post_quant_conv.weight");
  ASSERT_NE(t, nullptr);
  float want[16];
  FillSdgold(t->name, t->shape, want);
  for (int i = 0; i < 16; ++i) {
    uint16_t h;
    std::memcpy(&h, t->data + 2 * i, 2);
    EXPECT_EQ(h, FloatToHalfBits(want[i]));
  }
}

}  // namespace
}  // namespace sd
