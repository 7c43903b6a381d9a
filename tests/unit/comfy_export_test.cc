// Graphs out to ComfyUI: ApplyLora nodes become LoraLoaders chained as the graph chains them,
// ApplyVae nodes VAELoaders, and each CLIPTextEncode, KSampler and VAEDecode reads the model its
// nodes compute with.
#include "host_plugin/runtime/comfy_export.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_replace.h"
#include "host_plugin/runtime/comfy_import.h"
#include "host_plugin/runtime/graph.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using json = nlohmann::json;

constexpr char kTxt2Img[] = R"({
  "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 4, "cfg": 6.5, "sampler_name": "euler",
        "scheduler": "karras", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}},
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
  "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
  "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
  "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
  "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}
})";

// The id of the one node of `class_type` whose input `key` equals `value` (any, when null).
std::string Find(const json& w, const std::string& class_type, const std::string& key = "",
                 const json& value = nullptr) {
  std::string found;
  for (const auto& [id, node] : w.items()) {
    if (node["class_type"] != class_type) continue;
    if (!key.empty() && node["inputs"][key] != value) continue;
    EXPECT_TRUE(found.empty()) << "two " << class_type;
    found = id;
  }
  EXPECT_FALSE(found.empty()) << "no " << class_type << " with " << key << " = " << value;
  return found;
}

TEST(ComfyExportTest, ModelChainsBecomeLoaders) {
  testing::TempDir dir;
  auto workflow = ParseComfyWorkflow(kTxt2Img, "w.json");
  ASSERT_TRUE(workflow.ok()) << workflow.status();
  auto imported = TranslateComfyWorkflow(*workflow, {dir.path()});
  ASSERT_TRUE(imported.ok()) << imported.status();
  // Two LoRAs chained; the prompt and both UNet steps use the chain, the negative prompt the
  // checkpoint.
  const std::string text =
      absl::StrReplaceAll(
          imported->text,
          {{R"(name: "6_clip")", R"(name: "6_clip" input: "model=detail.model")"},
           {R"(name: "3_cond")", R"(name: "3_cond" input: "model=detail.model")"},
           {R"(name: "3_uncond")", R"(name: "3_uncond" input: "model=detail.model")"},
           {R"(name: "8")", R"(name: "8" input: "model=vae.model")"}}) +
      R"(
node { kind: "ApplyLora" name: "style" input: "lora=#loras/style.safetensors:0.8:0.5" }
node { kind: "ApplyLora" name: "detail" input: "model=style.model" input: "lora=#detail.safetensors" input: "text=#0" }
node { kind: "ApplyLora" name: "none" input: "model=detail.model" }
node { kind: "ApplyVae" name: "vae" input: "model=none.model" input: "vae=#vaes/ft-mse.safetensors" }
)";
  auto graph = Graph::FromText(text, "loras");
  ASSERT_TRUE(graph.ok()) << graph.status() << "\n" << text;
  auto exported = ExportComfyWorkflow(graph->config(), "loras", {"tiny.safetensors", "x"});
  ASSERT_TRUE(exported.ok()) << exported.status();
  const json w = json::parse(*exported);
  const std::string checkpoint = Find(w, "CheckpointLoaderSimple");
  const std::string style = Find(w, "LoraLoader", "lora_name", "style.safetensors");
  const std::string detail = Find(w, "LoraLoader", "lora_name", "detail.safetensors");
  EXPECT_EQ(w[style]["inputs"]["model"], json::array({checkpoint, 0}));
  EXPECT_EQ(w[style]["inputs"]["clip"], json::array({checkpoint, 1}));
  EXPECT_EQ(w[style]["inputs"]["strength_model"], 0.8);
  EXPECT_EQ(w[style]["inputs"]["strength_clip"], 0.5);
  EXPECT_EQ(w[detail]["inputs"]["model"], json::array({style, 0}));
  EXPECT_EQ(w[detail]["inputs"]["clip"], json::array({style, 1}));
  EXPECT_EQ(w[detail]["inputs"]["strength_model"], 1.0);
  EXPECT_EQ(w[detail]["inputs"]["strength_clip"], 0.0);
  EXPECT_EQ(w[Find(w, "KSampler")]["inputs"]["model"], json::array({detail, 0}));
  Find(w, "CLIPTextEncode", "clip", json::array({detail, 1}));
  Find(w, "CLIPTextEncode", "clip", json::array({checkpoint, 1}));
  const std::string vae = Find(w, "VAELoader", "vae_name", "ft-mse.safetensors");
  EXPECT_EQ(w[Find(w, "VAEDecode")]["inputs"]["vae"], json::array({vae, 0}));
  // The two halves of a step with different models have no ComfyUI equivalent.
  auto split = Graph::FromText(
      absl::StrReplaceAll(text, {{R"(name: "3_uncond" input: "model=detail.model")",
                                  R"(name: "3_uncond" input: "model=style.model")"}}),
      "split");
  ASSERT_TRUE(split.ok()) << split.status();
  auto refused = ExportComfyWorkflow(split->config(), "split", {"tiny.safetensors", "x"});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::HasSubstr("cond and uncond UNet steps with different models"));
}

}  // namespace
}  // namespace sd
