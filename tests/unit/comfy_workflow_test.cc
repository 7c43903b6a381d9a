// Reading ComfyUI workflows: every refusal names the file, the node and the input; PNG prompt
// chunks; the order nodes are translated in.
#include "host_plugin/runtime/comfy_workflow.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace sd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The default txt2img workflow ComfyUI ships, in its API format (ids as ComfyUI numbers them).
constexpr char kTxt2Img[] = R"({
  "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 8, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}},
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
  "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle", "clip": ["4", 1]}},
  "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
  "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
  "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
        "_meta": {"title": "Save Image"}}
})";

std::string Error(const std::string& json) {
  auto w = ParseComfyWorkflow(json, "w.json");
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
  return std::string(w.status().message());
}

std::string With(const std::string& from, const std::string& to) {
  const std::string s = absl::StrReplaceAll(kTxt2Img, {{from, to}});
  EXPECT_NE(s, kTxt2Img) << from;
  return s;
}

TEST(ComfyWorkflowTest, ReadsTheDefaultWorkflowInDependencyOrder) {
  auto w = ParseComfyWorkflow(kTxt2Img, "w.json");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->outputs, ElementsAre("9"));
  EXPECT_THAT(w->order, ElementsAre("4", "5", "6", "7", "3", "8", "9"));
  EXPECT_EQ(w->node("3").Int("seed"), 5);
  EXPECT_EQ(w->node("3").Number("cfg"), 8.0);  // an integer where a number is taken
  EXPECT_EQ(w->node("9").title, "Save Image");
  EXPECT_EQ(w->node("3").links.at("latent_image").node, "5");
}

TEST(ComfyWorkflowTest, NodesNoOutputNeedsAreLeftOut) {
  const std::string extra = With(R"("9": {)", R"("20": {"class_type": "EmptyLatentImage", "inputs":
      {"width": 64, "height": 64, "batch_size": 1}}, "9": {)");
  auto w = ParseComfyWorkflow(extra, "w.json");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->nodes.count("20"), 1u);
  EXPECT_THAT(w->order, ::testing::Not(::testing::Contains("20")));
}

TEST(ComfyWorkflowTest, SeedsBeyondInt64AreKeptBitForBit) {
  auto w = ParseComfyWorkflow(With(R"("seed": 5)", R"("seed": 18446744073709551615)"), "w.json");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(static_cast<uint64_t>(w->node("3").Int("seed")), UINT64_MAX);
}

TEST(ComfyWorkflowTest, MalformedFilesAreRefusedNamingWhere) {
  EXPECT_EQ(Error("{\"3\": "), "workflow w.json: is not valid JSON");
  EXPECT_EQ(Error("[1, 2]"), "workflow w.json: must be a JSON object of nodes keyed by id");
  EXPECT_THAT(
      Error(R"({"nodes": [], "links": [], "version": 0.4})"),
      HasSubstr(
          "is ComfyUI's editor format (a \"workflow\"); export it with \"Save (API Format)\""));
  EXPECT_EQ(Error(R"({"3": {"inputs": {}}})"),
            "workflow w.json: node 3: needs a \"class_type\" string and an \"inputs\" object");
  EXPECT_EQ(Error(With(R"("seed": 5, )", "")),
            "workflow w.json: node 3 (KSampler) input 'seed': is missing");
  EXPECT_EQ(Error(With(R"("steps": 20)", R"("steps": "20")")),
            "workflow w.json: node 3 (KSampler) input 'steps': must be an integer, got \"20\"");
  EXPECT_EQ(Error(With(R"("steps": 20)", R"("steps": 20.5)")),
            "workflow w.json: node 3 (KSampler) input 'steps': must be an integer, got 20.5");
  EXPECT_EQ(Error(With(R"("text": "a bottle")", R"("text": 7)")),
            "workflow w.json: node 6 (CLIPTextEncode) input 'text': must be text, got number");
  EXPECT_THAT(
      Error(With(R"("seed": 5)", R"("seed": ["10", 0])")),
      HasSubstr("node 3 (KSampler) input 'seed': is linked to another node; only literal values"));
  EXPECT_EQ(Error(With(R"("model": ["4", 0])", R"("model": "4")")),
            "workflow w.json: node 3 (KSampler) input 'model': must be a link [\"NODE_ID\", "
            "OUTPUT_INDEX]");
}

TEST(ComfyWorkflowTest, LinksAreChecked) {
  EXPECT_EQ(Error(With(R"("model": ["4", 0])", R"("model": ["40", 0])")),
            "workflow w.json: node 3 (KSampler) input 'model': links to node 40, which the "
            "workflow does not have");
  EXPECT_EQ(Error(With(R"("model": ["4", 0])", R"("model": ["4", 3])")),
            "workflow w.json: node 3 (KSampler) input 'model': links to output 3 of node 4 "
            "(CheckpointLoaderSimple), which has 3 outputs");
  EXPECT_EQ(Error(With(R"("model": ["4", 0])", R"("model": ["4", 1])")),
            "workflow w.json: node 3 (KSampler) input 'model': takes MODEL but output 1 of node 4 "
            "(CheckpointLoaderSimple) is CLIP");
  // Ids may be numbers too.
  EXPECT_TRUE(
      ParseComfyWorkflow(With(R"("latent_image": ["5", 0])", R"("latent_image": [5, 0])"), "w")
          .ok());
}

TEST(ComfyWorkflowTest, UnsupportedNodesAreListedInOneMessage) {
  const std::string json =
      With(R"("9": {)", R"("12": {"class_type": "UpscaleModelLoader", "inputs": {}},
      "10": {"class_type": "FaceDetailer", "inputs": {}}, "2": {"class_type": "FaceDetailer", "inputs": {}},
      "9": {)");
  EXPECT_THAT(Error(json),
              HasSubstr("workflow w.json: unsupported node types: FaceDetailer (nodes 2, 10); "
                        "UpscaleModelLoader (node 12). Supported: CheckpointLoaderSimple, "));
}

TEST(ComfyWorkflowTest, CyclesAndMissingOutputsAreRefused) {
  const std::string cycle = With(R"("latent_image": ["5", 0])", R"("latent_image": ["11", 0])");
  const std::string json =
      absl::StrReplaceAll(cycle, {{R"("9": {)", R"("11": {"class_type": "LatentUpscaleBy",
      "inputs": {"samples": ["3", 0], "upscale_method": "bilinear", "scale_by": 2}}, "9": {)"}});
  EXPECT_EQ(Error(json), "workflow w.json: the nodes form a cycle: 3 -> 11 -> 3");
  const std::string no_output = With(
      R"("class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]})",
      R"("class_type": "ImageInvert", "inputs": {"image": ["8", 0]})");
  EXPECT_EQ(Error(no_output),
            "workflow w.json: has no SaveImage or PreviewImage node: nothing would be output");
}

// A PNG as ComfyUI writes one: signature, IHDR, text chunks, IEND (the CRCs are not checked).
std::string Chunk(const std::string& type, const std::string& data) {
  std::string c;
  const uint32_t n = static_cast<uint32_t>(data.size());
  for (int shift : {24, 16, 8, 0}) c.push_back(static_cast<char>((n >> shift) & 0xff));
  return c + type + data + std::string(4, '\0');
}
std::string Png(const std::string& chunks) {
  return std::string("\x89PNG\r\n\x1a\n", 8) + Chunk("IHDR", std::string(13, '\0')) + chunks +
         Chunk("IEND", "");
}

TEST(ComfyWorkflowTest, PromptChunksOfPngs) {
  const std::string text = std::string("prompt") + '\0' + kTxt2Img;
  auto p = ComfyPromptFromPng(
      Png(Chunk("tEXt", std::string("workflow") + '\0' + "{}") + Chunk("tEXt", text)), "a.png");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, kTxt2Img);
  const std::string itxt =
      std::string("prompt") + '\0' + '\0' + '\0' + "en" + '\0' + '\0' + kTxt2Img;
  p = ComfyPromptFromPng(Png(Chunk("iTXt", itxt)), "a.png");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, kTxt2Img);
  EXPECT_EQ(ComfyPromptFromPng(Png(""), "a.png").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ComfyPromptFromPng("GIF89a....", "a.png").status().message()),
              HasSubstr("is not a PNG"));
  std::string truncated = Png(Chunk("tEXt", text));
  truncated.resize(60);
  EXPECT_THAT(std::string(ComfyPromptFromPng(truncated, "a.png").status().message()),
              HasSubstr("a.png: PNG chunk 'tEXt' runs past the end of the file"));
  const std::string zipped = std::string("prompt") + '\0' + '\1' + '\0' + "en" + '\0' + '\0' + "xx";
  EXPECT_THAT(
      std::string(ComfyPromptFromPng(Png(Chunk("iTXt", zipped)), "a.png").status().message()),
      HasSubstr("compressed"));
}

}  // namespace
}  // namespace sd
