// The ControlNet checkpoint layouts: the key table against the golden manifest, the diffusers name
// table for every tensor, layout and configuration recognised from written files, and the refusals.
#include "nodes/weights/controlnet_layout.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/lora_keys.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/test_weights.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;
using ShapeMap = std::map<std::string, std::vector<int64_t>>;

ControlNetConfig Tiny() { return ControlNetConfig::For(SdConfig::Tiny().unet); }

// Writes zero-valued tensors of `keys` (names as given).
void WriteZeros(const std::string& path, const std::vector<KeySpec>& keys) {
  std::vector<TensorToWrite> tensors;
  for (const KeySpec& k : keys) {
    TensorToWrite t{k.name, DType::kF32, k.shape, nullptr, 4, nullptr};
    for (int64_t d : k.shape) t.nbytes *= static_cast<uint64_t>(d);
    t.fill = [n = t.nbytes](void* dst) { std::memset(dst, 0, n); };
    tensors.push_back(std::move(t));
  }
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
}

absl::StatusOr<ControlNetFile> Read(const std::string& path) {
  auto ckpt = Checkpoint::Open(path);
  if (!ckpt.ok()) return ckpt.status();
  return ReadControlNetLayout(**ckpt);
}

TEST(ControlNetLayoutTest, KeyTableIsTheGoldenControlNetLayout) {
  nlohmann::json m =
      nlohmann::json::parse(testing::ReadFile(testing::GoldenDir() + "/controlnet_manifest.json"));
  ShapeMap manifest, ours;
  for (const auto& t : m["tensors"])
    manifest[t[0].get<std::string>()] = t[1].get<std::vector<int64_t>>();
  int64_t params = 0;
  for (const KeySpec& k : ControlNetKeys(ControlNetConfig::Sd15())) {
    ours[kControlNetPrefix + k.name] = k.shape;
    int64_t n = 1;
    for (int64_t d : k.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(ours, manifest);
  EXPECT_EQ(params, m["params"].get<int64_t>());
}

TEST(ControlNetLayoutTest, EveryTensorHasOneDiffusersName) {
  // Names diffusers' ControlNetModel uses, written out by hand.
  const std::map<std::string, std::string> known = {
      {"input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight"},
      {"input_hint_block.2.bias", "controlnet_cond_embedding.blocks.0.bias"},
      {"input_hint_block.12.weight", "controlnet_cond_embedding.blocks.5.weight"},
      {"input_hint_block.14.weight", "controlnet_cond_embedding.conv_out.weight"},
      {"zero_convs.11.0.weight", "controlnet_down_blocks.11.weight"},
      {"middle_block_out.0.bias", "controlnet_mid_block.bias"},
      {"time_embed.2.weight", "time_embedding.linear_2.weight"},
      {"input_blocks.0.0.weight", "conv_in.weight"},
      {"input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"},
      {"input_blocks.9.0.op.weight", "down_blocks.2.downsamplers.0.conv.weight"},
      {"input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight",
       "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight"},
      {"input_blocks.11.0.emb_layers.1.bias", "down_blocks.3.resnets.1.time_emb_proj.bias"},
      {"middle_block.2.out_layers.3.weight", "mid_block.resnets.1.conv2.weight"},
      {"middle_block.1.proj_out.bias", "mid_block.attentions.0.proj_out.bias"}};
  for (const ControlNetConfig& c : {ControlNetConfig::Sd15(), Tiny()}) {
    std::set<std::string> seen;
    for (const KeySpec& k : ControlNetKeys(c)) {
      const std::string d = ControlNetToDiffusers(k.name, c.unet);
      ASSERT_FALSE(d.empty()) << k.name;
      EXPECT_TRUE(seen.insert(d).second) << "two tensors named " << d;
      EXPECT_EQ(DiffusersToControlNet(d, c.unet.num_res_blocks), k.name) << d;
      if (auto it = known.find(k.name); it != known.end() && c.unet.model_channels == 320) {
        EXPECT_EQ(d, it->second);
      }
    }
  }
  EXPECT_EQ(DiffusersToControlNet("down_blocks.0.resnets.0.nonsense.weight", 2), "");
  EXPECT_EQ(DiffusersToControlNet("controlnet_cond_embedding.blocks.6.weight", 2), "");
  EXPECT_EQ(DiffusersToControlNet("up_blocks.0.resnets.0.conv1.weight", 2), "");
}

TEST(ControlNetLayoutTest, ReadsEveryLayoutAndDtype) {
  testing::TempDir dir;
  for (ControlNetLayout layout :
       {ControlNetLayout::kOriginal, ControlNetLayout::kUnprefixed, ControlNetLayout::kDiffusers}) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      const std::string path = dir.File("cn.safetensors");
      TestControlNetOptions o;
      o.config = Tiny();
      o.layout = layout;
      o.dtype = dtype;
      ASSERT_TRUE(WriteTestControlNet(path, o).ok());
      auto f = Read(path);
      ASSERT_TRUE(f.ok()) << LayoutName(layout) << ": " << f.status();
      EXPECT_EQ(f->layout, layout);
      EXPECT_EQ(f->config.hint_channels, 3);
      EXPECT_EQ(f->config.unet.model_channels, 32);
      EXPECT_EQ(f->config.unet.channel_mult, Tiny().unet.channel_mult);
      EXPECT_EQ(f->config.unet.attention, Tiny().unet.attention);
      EXPECT_EQ(f->config.unet.context_dim, 64);
      EXPECT_EQ(f->names.size(), ControlNetKeys(Tiny()).size());
    }
  }
}

TEST(ControlNetLayoutTest, ADiffusersFolderIsItsWeightsFile) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.File("cn"));
  EXPECT_EQ(ControlNetWeightsFile(dir.File("x.pth")).value(), dir.File("x.pth"));
  auto none = ControlNetWeightsFile(dir.File("cn"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("without diffusion_pytorch_model.safetensors"));
  testing::WriteFile(dir.File("cn/diffusion_pytorch_model.bin"), "x");
  EXPECT_EQ(ControlNetWeightsFile(dir.File("cn")).value(),
            dir.File("cn/diffusion_pytorch_model.bin"));
  testing::WriteFile(dir.File("cn/diffusion_pytorch_model.safetensors"), "x");
  EXPECT_EQ(ControlNetWeightsFile(dir.File("cn")).value(),
            dir.File("cn/diffusion_pytorch_model.safetensors"));
}

TEST(ControlNetLayoutTest, ControlNet10FilesCarryingTheWholeModelAreRead) {
  testing::TempDir dir;
  std::vector<KeySpec> keys = ExpectedKeys(SdConfig::Tiny());
  for (KeySpec k : ControlNetKeys(Tiny())) {
    k.name = kControlNetPrefix + k.name;
    keys.push_back(k);
  }
  WriteZeros(dir.File("cn.safetensors"), keys);
  auto f = Read(dir.File("cn.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->layout, ControlNetLayout::kOriginal);
}

TEST(ControlNetLayoutTest, MissingAndExtraTensorsAreListed) {
  testing::TempDir dir;
  std::vector<KeySpec> keys = ControlNetKeys(Tiny());
  keys.erase(std::remove_if(keys.begin(), keys.end(),
                            [](const KeySpec& k) { return k.name == "zero_convs.3.0.bias"; }),
             keys.end());
  keys.push_back({"zero_convs.99.0.weight", {4}});
  keys.push_back({"input_blocks.1.0.in_layers.0.weight", {7}});  // replaces the right shape below
  keys.erase(std::find_if(keys.begin(), keys.end(), [](const KeySpec& k) {
    return k.name == "input_blocks.1.0.in_layers.0.weight";
  }));
  WriteZeros(dir.File("bad.safetensors"), keys);
  auto f = Read(dir.File("bad.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(f.status().message(), HasSubstr("bad.safetensors"));
  EXPECT_THAT(f.status().message(), HasSubstr("missing: zero_convs.3.0.bias"));
  EXPECT_THAT(f.status().message(), HasSubstr("extra: zero_convs.99.0.weight"));
  EXPECT_THAT(f.status().message(), HasSubstr("shape of input_blocks.1.0.in_layers.0.weight"));
}

TEST(ControlNetLayoutTest, OtherFamiliesAndOtherFilesAreRefusedByName) {
  testing::TempDir dir;
  // SD 2.x: context width 1024.
  ControlNetConfig sd2 = Tiny();
  sd2.unet.context_dim = 1024;
  WriteZeros(dir.File("sd2.safetensors"), ControlNetKeys(sd2));
  auto f = Read(dir.File("sd2.safetensors"));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(f.status().message(), HasSubstr("sd2.safetensors: this is a ControlNet for SD 2.x"));
  // SDXL in the diffusers layout: an added embedding.
  std::vector<KeySpec> xl = {{"controlnet_cond_embedding.conv_in.weight", {16, 3, 3, 3}},
                             {"add_embedding.linear_1.weight", {1280, 2816}}};
  WriteZeros(dir.File("xl.safetensors"), xl);
  f = Read(dir.File("xl.safetensors"));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(f.status().message(), HasSubstr("xl.safetensors: this is a ControlNet for SDXL"));
  // An SD checkpoint is no ControlNet.
  WriteZeros(dir.File("sd.safetensors"), UNetTrunkKeys(SdConfig::Tiny().unet, kUNetPrefix));
  f = Read(dir.File("sd.safetensors"));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("sd.safetensors: not a ControlNet"));
}

}  // namespace
}  // namespace sd
