// LoRA: the key table against diffusers' names built independently
// (tests/python/lora_reference.py), and the weights a LoRA gives, in every key family, against a
// merge computed there in float64.
#include "nodes/weights/lora.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "nodes/ops/model_cache.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/lora_keys.h"
#include "nodes/weights/test_weights.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/lora_reference.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

using testing::LoraConfigJson;
using testing::RunLoraReference;

// Every UNet and text-encoder weight of rank 2 or 4 has its name in each family, the diffusers path
// the reference builds, and no name stands for two layers: for SD v1.5, the tiny test model, the
// demo model and a 9-channel inpainting model.
TEST(LoraKeyTableTest, EveryLayerInEveryFamilyAsTheReferenceNamesIt) {
  testing::TempDir dir;
  SdConfig inpaint = SdConfig::Sd15();
  inpaint.unet.in_channels = 9;
  for (const auto& [label, config] :
       {std::pair{"sd15", SdConfig::Sd15()}, std::pair{"tiny", SdConfig::Tiny()},
        std::pair{"demo", SdConfig::DemoShapes()}, std::pair{"inpaint", inpaint}}) {
    SCOPED_TRACE(label);
    testing::WriteFile(dir.File("cfg.json"), LoraConfigJson(config).dump());
    RunLoraReference("names " + dir.File("cfg.json") + " " + dir.File("names.json"));
    const nlohmann::json want = nlohmann::json::parse(testing::ReadFile(dir.File("names.json")));
    const LoraKeyTable table = LoraKeyTable::ForModel(ExpectedKeys(config), config.unet);
    EXPECT_THAT(table.collisions(), ::testing::IsEmpty());
    int unet_layers = 0, text_layers = 0;
    for (const KeySpec& k : ExpectedKeys(config)) {
      if (k.name.size() < 7 || k.name.substr(k.name.size() - 7) != ".weight" ||
          (k.shape.size() != 2 && k.shape.size() != 4))
        continue;
      const std::string module = k.name.substr(0, k.name.size() - 7);
      auto reaches = [&](const std::string& name) {
        const LoraTarget* t = table.Find(name);
        return t && t->key == k.name;
      };
      if (module.rfind(kUNetPrefix, 0) == 0) {
        ++unet_layers;
        const std::string ldm = module.substr(std::string(kUNetPrefix).size());
        ASSERT_TRUE(want.contains(ldm)) << ldm;
        ASSERT_FALSE(want[ldm].is_null()) << ldm << " has no diffusers module in the reference";
        const std::string diffusers = want[ldm].get<std::string>();
        EXPECT_EQ(DiffusersUNetPath(ldm, config.unet), diffusers) << ldm;
        std::string kohya = "lora_unet_" + diffusers, ldm_kohya = "lora_unet_" + ldm;
        std::replace(kohya.begin(), kohya.end(), '.', '_');
        std::replace(ldm_kohya.begin(), ldm_kohya.end(), '.', '_');
        EXPECT_TRUE(reaches(kohya) && reaches(ldm_kohya) && reaches("unet." + diffusers) &&
                    reaches(module))
            << ldm;
      } else if (module.rfind("cond_stage_model.transformer.", 0) == 0) {
        ++text_layers;
        std::string hf = module.substr(std::string("cond_stage_model.transformer.").size());
        std::string kohya = "lora_te_" + hf;
        std::replace(kohya.begin(), kohya.end(), '.', '_');
        EXPECT_TRUE(reaches(kohya) && reaches("text_encoder." + hf) && reaches(module)) << module;
      }
    }
    EXPECT_GT(unet_layers, 50);
    EXPECT_GT(text_layers, 10);
  }
}

class LoraMergeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    for (int in_channels : {4, 9}) {
      TestCheckpointOptions o;
      o.config = SdConfig::Tiny();
      o.config.unet.in_channels = in_channels;
      const std::string sub = dir_->File("c" + std::to_string(in_channels));
      std::filesystem::create_directories(sub);
      ASSERT_TRUE(WriteTestCheckpoint(sub + "/tiny.safetensors", o).ok());
      testing::WriteFile(sub + "/cfg.json", LoraConfigJson(o.config).dump());
      RunLoraReference("make " + sub + "/tiny.safetensors " + sub + "/cfg.json " + sub +
                       " 0.7 0.4");
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string Dir(int in_channels) { return dir_->File("c" + std::to_string(in_channels)); }
  // The largest difference between a network's parameters and the merged file's tensors.
  static double MaxDiff(torch::nn::Module& m, const std::string& prefix, const Checkpoint& merged) {
    double worst = 0;
    for (const auto& p : m.named_parameters()) {
      auto want = LoadTensor(merged, prefix + p.key(), torch::kFloat32);
      EXPECT_TRUE(want.ok()) << p.key();
      if (!want.ok()) continue;
      worst = std::max(worst, (p.value().to(torch::kFloat32) - *want).abs().max().item<double>());
    }
    return worst;
  }
  static testing::TempDir* dir_;
};
testing::TempDir* LoraMergeTest::dir_;

TEST_F(LoraMergeTest, EveryFamilyMergesAsTheReference) {
  for (int in_channels : {4, 9}) {
    for (const char* family : {"kohya", "peft", "ldm"}) {
      SCOPED_TRACE(std::string(family) + " on " + std::to_string(in_channels) + " channels");
      const std::string base = Dir(in_channels) + "/tiny.safetensors";
      const std::string ref =
          base + "|lora=" + Dir(in_channels) + "/" + family + ".safetensors:0.7:0.4";
      ModelCache models;
      auto unet = models.GetUnet(ref, torch::kFloat32, torch::kCPU);
      auto clip = models.GetClip(ref, torch::kFloat32, torch::kCPU);
      ASSERT_TRUE(unet.ok()) << unet.status();
      ASSERT_TRUE(clip.ok()) << clip.status();
      auto merged = Checkpoint::Open(Dir(in_channels) + "/merged_" + family + ".safetensors");
      ASSERT_TRUE(merged.ok());
      EXPECT_LT(MaxDiff(**unet, kUNetPrefix, **merged), 1e-5);
      EXPECT_LT(MaxDiff(**clip, kClipPrefix, **merged), 1e-5);
      // The base model is still there, unchanged, without reading the file again.
      auto plain = models.GetUnet(base, torch::kFloat32, torch::kCPU);
      auto original = Checkpoint::Open(base);
      EXPECT_EQ(MaxDiff(**plain, kUNetPrefix, **original), 0.0);
      EXPECT_GT(MaxDiff(**unet, kUNetPrefix, **original), 1e-3) << "the LoRA must change the UNet";
      EXPECT_GT(MaxDiff(**clip, kClipPrefix, **original), 1e-3)
          << "the LoRA must change the text encoder";
      auto lora = models.Lora(Dir(in_channels) + "/" + family + ".safetensors", base);
      ASSERT_TRUE(lora.ok());
      if (std::string(family) == "kohya") {
        EXPECT_THAT(lora->get()->unmatched,
                    ::testing::ElementsAre("lora_unet_not_a_layer.lora_down.weight",
                                           "lora_unet_not_a_layer.lora_up.weight"));
      } else {
        EXPECT_THAT(lora->get()->unmatched, ::testing::IsEmpty());
      }
    }
  }
}

// bf16 weights are patched in float32 and rounded once: within two bf16 roundings of the float64
// merge.
TEST_F(LoraMergeTest, Bf16WeightsArePatchedInFloat32AndRoundedOnce) {
  const std::string base = Dir(4) + "/tiny.safetensors";
  ModelCache models;
  auto unet = models.GetUnet(base + "|lora=" + Dir(4) + "/kohya.safetensors:0.7:0.4",
                             torch::kBFloat16, torch::kCPU);
  ASSERT_TRUE(unet.ok()) << unet.status();
  auto merged = Checkpoint::Open(Dir(4) + "/merged_kohya.safetensors");
  auto original = Checkpoint::Open(base);
  int patched = 0;
  for (const auto& p : (*unet)->named_parameters()) {
    if (p.value().scalar_type() != torch::kBFloat16) continue;
    const torch::Tensor got = p.value().to(torch::kFloat32);
    const torch::Tensor want = *LoadTensor(**merged, kUNetPrefix + p.key(), torch::kFloat32);
    const torch::Tensor plain = LoadTensor(**original, kUNetPrefix + p.key(), torch::kFloat32)
                                    ->to(torch::kBFloat16)
                                    .to(torch::kFloat32);
    // One rounding of W to bf16 (relative to W), one of the sum (relative to the result).
    EXPECT_TRUE(
        ((got - want).abs() <= (want.abs() + plain.abs()) * (1.0 / 256) + 1e-7).all().item<bool>())
        << p.key() << ": " << (got - want).abs().max().item<double>();
    patched += torch::equal(got, plain) ? 0 : 1;
  }
  EXPECT_GT(patched, 20);
}

TEST_F(LoraMergeTest, StrengthZeroIsTheBaseModelBitForBit) {
  const std::string base = Dir(4) + "/tiny.safetensors";
  ModelCache models;
  auto plain = models.GetUnet(base, torch::kFloat32, torch::kCPU);
  auto zero = models.GetUnet(base + "|lora=" + Dir(4) + "/kohya.safetensors:0:0", torch::kFloat32,
                             torch::kCPU);
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ(plain->ptr(), zero->ptr()) << "strength 0 is the base network itself";
  auto clip_only = models.GetUnet(base + "|lora=" + Dir(4) + "/kohya.safetensors:0:1",
                                  torch::kFloat32, torch::kCPU);
  EXPECT_EQ(plain->ptr(), clip_only->ptr());
}

TEST_F(LoraMergeTest, BadLoraFilesAreClearErrors) {
  testing::TempDir bad;
  const std::string base = Dir(4) + "/tiny.safetensors";
  std::vector<float> buf(64 * 64, 0.5f);
  auto write = [&](const std::string& file, std::vector<TensorToWrite> tensors) {
    ASSERT_TRUE(WriteSafetensors(bad.File(file), tensors).ok());
  };
  const std::string q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
  write("no_up.safetensors",
        {{q + ".lora_down.weight", DType::kF32, {4, 64}, buf.data(), 4 * 64 * 4, {}}});
  write("rank.safetensors",
        {{q + ".lora_down.weight", DType::kF32, {4, 64}, buf.data(), 4 * 64 * 4, {}},
         {q + ".lora_up.weight", DType::kF32, {64, 3}, buf.data(), 64 * 3 * 4, {}}});
  write("shape.safetensors",
        {{q + ".lora_down.weight", DType::kF32, {4, 32}, buf.data(), 4 * 32 * 4, {}},
         {q + ".lora_up.weight", DType::kF32, {64, 4}, buf.data(), 64 * 4 * 4, {}}});
  ModelCache models;
  auto clip = [&](const std::string& file) {
    return models.GetClip(base + "|lora=" + bad.File(file), torch::kFloat32, torch::kCPU).status();
  };
  EXPECT_THAT(std::string(clip("no_up.safetensors").message()),
              HasSubstr("no_up.safetensors: " + q + ": has no up"));
  EXPECT_THAT(std::string(clip("rank.safetensors").message()), HasSubstr("do not share a rank"));
  EXPECT_THAT(std::string(clip("shape.safetensors").message()), HasSubstr("does not fit"));
  EXPECT_EQ(clip("missing.safetensors").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sd
