#include "nodes/weights/sd_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "nodes/weights/demo_model.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

ShapeMap Manifest() {
  nlohmann::json m = nlohmann::json::parse(testing::ReadFile(testing::GoldenDir() + "/sd15_manifest.json"));
  ShapeMap shapes;
  for (const auto& t : m["tensors"]) shapes[t[0].get<std::string>()] = t[1].get<std::vector<int64_t>>();
  return shapes;
}

ShapeMap FromConfig(const SdConfig& c) {
  ShapeMap shapes;
  for (const KeySpec& k : ExpectedKeys(c)) shapes[k.name] = k.shape;
  return shapes;
}

ShapeLookup Lookup(const ShapeMap& m) {
  return [&m](const std::string& n) -> const std::vector<int64_t>* {
    auto it = m.find(n);
    return it == m.end() ? nullptr : &it->second;
  };
}

TEST(SdConfigTest, KeyTableIsExactlyTheReleasedCheckpointLayout) {
  const ShapeMap manifest = Manifest();
  ASSERT_EQ(manifest.size(), 1130u);
  const std::vector<KeySpec> keys = ExpectedKeys(SdConfig::Sd15());
  EXPECT_EQ(keys.size(), 1130u);
  EXPECT_EQ(FromConfig(SdConfig::Sd15()), manifest);
  uint64_t params = 0;
  for (const KeySpec& k : keys) {
    uint64_t n = 1;
    for (int64_t d : k.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(params, 1066235307u);
}

TEST(SdConfigTest, DetectsSd15FromTheManifestShapes) {
  const ShapeMap manifest = Manifest();
  auto c = DetectConfig(Lookup(manifest));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(*c == SdConfig::Sd15()) << c->Describe();
  EXPECT_TRUE(CheckKeys(*c, Lookup(manifest)).ok());
}

TEST(SdConfigTest, DetectsTinyAndInpaintingVariants) {
  for (int in_channels : {4, 9}) {
    for (SdConfig want : {SdConfig::Tiny(), SdConfig::Sd15(), SdConfig::DemoShapes()}) {
      want.unet.in_channels = in_channels;
      const ShapeMap shapes = FromConfig(want);
      auto got = DetectConfig(Lookup(shapes));
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_TRUE(*got == want) << got->Describe();
      EXPECT_EQ(got->unet.in_channels, in_channels);
      EXPECT_NE(ConfigName(*got), "custom");
      EXPECT_EQ(ConfigName(*got).find("-inpainting") != std::string::npos, in_channels == 9);
    }
  }
  EXPECT_EQ(ConfigName(SdConfig::DemoShapes()), "demo-shapes");
  EXPECT_EQ(ConfigName(SdConfig::Sd15()), "sd15");
  // A configuration that differs in every detectable field is read back too.
  SdConfig odd = SdConfig::Tiny();
  odd.unet.channel_mult = {1, 2, 3};
  odd.unet.attention = {false, true, true};
  odd.unet.num_res_blocks = 3;
  odd.unet.transformer_depth = 2;
  odd.vae.ch_mult = {1, 2};
  odd.vae.num_res_blocks = 2;
  odd.clip.layers = 3;
  odd.clip.ffn = 128;
  const ShapeMap shapes = FromConfig(odd);
  auto got = DetectConfig(Lookup(shapes));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == odd) << got->Describe();
  EXPECT_EQ(ConfigName(*got), "custom");
}

TEST(SdConfigTest, NativeSizeComesFromWellFormedMetadataOnly) {
  EXPECT_EQ(NativeSize({{"sdgraph.native_size", "64"}}), 64);
  EXPECT_EQ(NativeSize({{"sdgraph.native_size", "512"}}), 512);
  EXPECT_EQ(NativeSize({}), std::nullopt);
  for (const char* bad : {"", "abc", "63", "0", "-64", "8200", "64px", "99999999999999999999"}) {
    EXPECT_EQ(NativeSize({{"sdgraph.native_size", bad}}), std::nullopt) << bad;
  }
}

TEST(SdConfigTest, MissingAnchorKeyIsNotFoundAndNamesIt) {
  ShapeMap m = Manifest();
  m.erase("model.diffusion_model.input_blocks.0.0.weight");
  auto c = DetectConfig(Lookup(m));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("model.diffusion_model.input_blocks.0.0.weight"));
}

TEST(SdConfigTest, KeyCheckListsMissingAndMismatchedKeys) {
  ShapeMap m = Manifest();
  m.erase("first_stage_model.decoder.conv_out.bias");
  m["model.diffusion_model.out.2.bias"] = {5};
  m["some.extra.key"] = {1};
  KeyCheck check = CheckKeys(SdConfig::Sd15(), Lookup(m));
  EXPECT_FALSE(check.ok());
  ASSERT_EQ(check.missing.size(), 1u);
  EXPECT_EQ(check.missing[0], "first_stage_model.decoder.conv_out.bias");
  ASSERT_EQ(check.mismatched.size(), 1u);
  absl::Status s = check.ToStatus("m.safetensors");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing: first_stage_model.decoder.conv_out.bias"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("shape of model.diffusion_model.out.2.bias: expected [4], found [5]"));
}

TEST(SdConfigTest, RefusesSd2Context) {
  SdConfig sd2 = SdConfig::Sd15();
  sd2.unet.context_dim = 1024;
  const ShapeMap shapes = FromConfig(sd2);
  EXPECT_EQ(DetectConfig(Lookup(shapes)).status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace sd
