// sd-graph's model files, as a user names them: --vae and --lora (and <lora:> tags) against
// checkpoints merged offline, and the stock graphs' ApplyLora / ApplyVae nodes (--set lora=, vae=)
// against those flags, node by node.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "absl/strings/str_replace.h"
#include "host_plugin/cli/image_io.h"
#include "nodes/base/file_util.h"
#include "tests/test_util.h"
#include "tests/unit/generate_cli_fixture.h"

namespace sd::cli_test {
namespace {

using ::testing::HasSubstr;

// --vae: a standalone VAE (either layout) gives the image of a checkpoint that holds that VAE, and
// is recorded; one that does not fit the model is an error naming it.
TEST_F(GenerateCliTest, VaeOverrideEqualsACheckpointWithThatVae) {
  ASSERT_EQ(std::system((testing::PythonScript("make_vae_variants.py") + " " + Quote(model_) + " " +
                         Quote(dir_->path()))
                            .c_str()),
            0);
  const std::string merged = dir_->File("vae-merged.png");
  auto r = RunCommand(Bin() + " txt2img --model " + Quote(dir_->File("merged.safetensors")) +
                      " --prompt 'a red fox' --steps 2 --width 64 --height 64 -o " + Quote(merged));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const torch::Tensor want = *ReadImageRgb8(merged);
  const torch::Tensor base = *ReadImageRgb8(
      (RunCommand(Txt2Img("--steps 2 --width 64 --height 64", dir_->File("vae-base.png"))),
       dir_->File("vae-base.png")));
  EXPECT_FALSE(torch::equal(want, base)) << "the VAE variant must change the picture";
  for (const char* file : {"vae.safetensors", "vae_prefixed.safetensors"}) {
    const std::string out = dir_->File(std::string("vae-") + file + ".png");
    r = RunCommand(
        Txt2Img("--steps 2 --width 64 --height 64 --vae " + Quote(dir_->File(file)), out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(torch::equal(*ReadImageRgb8(out), want)) << file;
    EXPECT_THAT(*ReadImageAttribute(out, "parameters"), HasSubstr(std::string(", VAE hash: ")));
    EXPECT_THAT(*ReadImageAttribute(out, "parameters"), HasSubstr(std::string(", VAE: ") + file));
  }
  r = RunCommand(Txt2Img(
      "--steps 1 --vae " + Quote(std::string(SD_TEST_MODELS_DIR) + "/sd-demo-shapes.safetensors"),
      dir_->File("vae-bad.png")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("sd-demo-shapes.safetensors does not fit"));
  r = RunCommand(Txt2Img("--steps 1 --vae " + Quote(model_), dir_->File("vae-ok.png")));
  EXPECT_EQ(r.exit_code, 0) << "a whole checkpoint's VAE (prefixed) is a VAE too: " << r.err;
  // The stock graphs' ApplyVae node (--set vae=FILE) is --vae, recorded alike.
  const std::string node = dir_->File("vae-node.png");
  r = RunCommand(Txt2Img(
      "--steps 2 --width 64 --height 64 --set vae=" + Quote(dir_->File("vae.safetensors")), node));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(torch::equal(*ReadImageRgb8(node), want));
  EXPECT_THAT(*ReadImageAttribute(node, "parameters"), HasSubstr(", VAE: vae.safetensors"));
  r = RunCommand(Txt2Img("--steps 1 --set vae=nowhere.safetensors", node));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("node 'apply_vae' (ApplyVae): VAE nowhere.safetensors"));
}

// --lora and <lora:...> tags: the image of a checkpoint with the LoRA merged offline, recorded as
// other tools record it; keys that patch nothing are a warning, or an error with --strict-lora.
TEST_F(GenerateCliTest, LoraEqualsAnOfflineMergeAndIsRecorded) {
  const std::string lora_dir = Loras();
  const std::string size = "--steps 2 --width 64 --height 64 --seed 3 ";
  const std::string merged = dir_->File("lora-merged.png");
  auto r = RunCommand(Bin() + " txt2img --model " + Quote(lora_dir + "/merged_peft.safetensors") +
                      " --prompt 'a red fox' " + size + "-o " + Quote(merged));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const torch::Tensor want = *ReadImageRgb8(merged);
  const std::string flag = dir_->File("lora-flag.png");
  r = RunCommand(
      Txt2Img(size + "--lora " + Quote(lora_dir + "/peft.safetensors") + ":0.7:0.4", flag));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(
      (ReadImageRgb8(flag)->to(torch::kInt32) - want.to(torch::kInt32)).abs().max().item<int>(), 1);
  EXPECT_THAT(*ReadImageAttribute(flag, "parameters"), HasSubstr(", Lora hashes: \"peft: "));
  // The same as a prompt tag (text strength first, as AUTOMATIC1111 writes it), found in
  // --lora-dir.
  const std::string tag = dir_->File("lora-tag.png");
  r = RunCommand(Bin() + " txt2img --model " + Quote(model_) +
                 " --prompt 'a red fox <lora:peft:0.4:0.7>' " + size + "--lora-dir " +
                 Quote(lora_dir) + " -o " + Quote(tag));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(torch::equal(*ReadImageRgb8(tag), *ReadImageRgb8(flag)));
  // In `run`, a tag in --set prompt=... is the same as --lora.
  const std::string graph = Quote(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt");
  const std::string run = Bin() + " run " + graph + " --model " + Quote(model_) +
                          " --set steps=2 --set width=64 --set height=64 --seed 3 --lora-dir " +
                          Quote(lora_dir);
  r = RunCommand(run + " --set 'prompt=a red fox <lora:peft:0.4:0.7>' -o " +
                 Quote(dir_->File("run-tag.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(run + " --set 'prompt=a red fox' --lora peft:0.7:0.4 -o " +
                 Quote(dir_->File("run-flag.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(torch::equal(*ReadImageRgb8(dir_->File("run-tag.png")),
                           *ReadImageRgb8(dir_->File("run-flag.png"))));
  // kohya.safetensors carries a key for no layer.
  r = RunCommand(
      Txt2Img(size + "--lora " + Quote(lora_dir + "/kohya.safetensors"), dir_->File("lora-k.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("warning: LoRA"));
  EXPECT_THAT(r.err, HasSubstr("lora_unet_not_a_layer"));
  r = RunCommand(Txt2Img(size + "--strict-lora --lora " + Quote(lora_dir + "/kohya.safetensors"),
                         dir_->File("lora-s.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--strict-lora"));
  r = RunCommand(Txt2Img(size + "--lora nothing-here", dir_->File("lora-n.png")));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("LoRA 'nothing-here' not found"));
}

// The stock graphs' ApplyLora node (`--set lora=...`) is --lora; a graph whose text encoder
// takes the run's model and whose UNet the LoRA'd one applies the LoRA to the UNet only.
TEST_F(GenerateCliTest, ApplyLoraNodesAreTheLoraFlagNodeByNode) {
  const std::string lora_dir = Loras();
  const std::string graph = std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt";
  auto run = [&](const std::string& g, const std::string& out, const std::string& extra) {
    return Bin() + " run " + Quote(g) + " --model " + Quote(model_) +
           " --set 'prompt=a red fox' --set steps=2 --set width=64 --set height=64 --seed 3 " +
           "--lora-dir " + Quote(lora_dir) + " -o " + Quote(out) + " " + extra;
  };
  auto image = [&](const std::string& g, const std::string& extra) -> torch::Tensor {
    const std::string out = dir_->File("apply-lora.png");
    std::filesystem::remove(out);
    auto r = RunCommand(run(g, out, extra));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto px = ReadImageRgb8(out);
    return px.ok() ? *px : torch::Tensor();
  };
  const torch::Tensor flag = image(graph, "--lora peft:0.7:0.4");
  ASSERT_TRUE(flag.defined());
  EXPECT_TRUE(torch::equal(image(graph, "--set lora=peft:0.7:0.4"), flag));
  EXPECT_THAT(*ReadImageAttribute(dir_->File("apply-lora.png"), "parameters"),
              HasSubstr(", Lora hashes: \"peft: "));
  const torch::Tensor base = image(graph, "");
  EXPECT_FALSE(torch::equal(base, flag));
  EXPECT_TRUE(torch::equal(image(graph, "--set lora=peft:0"), base)) << "strength 0: the base";
  // The prompts encoded with the run's model: only the UNet's strength counts.
  auto text = ReadWholeFile(graph, "graph");
  ASSERT_TRUE(text.ok());
  const std::string wired = "\"encode_prompts\" name: \"prompts\" input: \"model=apply_vae.model\"";
  ASSERT_NE(text->find(wired), std::string::npos);
  const std::string unet_only = dir_->File("unet_only.pbtxt");
  testing::WriteFile(unet_only,
                     absl::StrReplaceAll(*text, {{wired, "\"encode_prompts\" name: \"prompts\""}}));
  const torch::Tensor unet = image(unet_only, "--set lora=peft:0.7:0.4");
  EXPECT_TRUE(torch::equal(unet, image(graph, "--lora peft:0.7:0")));
  EXPECT_FALSE(torch::equal(unet, flag));
  // Checked as --lora's are: keys that patch nothing are a warning, or an error with --strict-lora.
  auto r = RunCommand(run(graph, dir_->File("k.png"), "--set lora=kohya"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("lora_unet_not_a_layer"));
  r = RunCommand(run(graph, dir_->File("k.png"), "--set lora=kohya --strict-lora"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--strict-lora"));
  r = RunCommand(run(graph, dir_->File("x.png"), "--set lora=nothing-here"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("node 'apply_lora' (ApplyLora)"));
  EXPECT_THAT(r.err, HasSubstr("LoRA 'nothing-here' not found"));
}

// A ComfyUI workflow whose sampler and text encoders do not all use the same LoRAs: each computes
// with its own chain of ApplyLora nodes (one per LoraLoader and side), so a workflow that routes
// its LoRA the same way everywhere through a second, zero-strength loader makes the image of the
// one-model run byte for byte, and one whose negative prompt skips the LoRA makes another.
TEST_F(GenerateCliTest, ComfyLorasThatDifferPerNodeBecomeApplyLoraNodes) {
  const std::string models = dir_->File("comfy-models");
  std::filesystem::create_directories(models + "/checkpoints");
  std::filesystem::create_directories(models + "/loras");
  std::filesystem::copy_file(model_, models + "/checkpoints/tiny.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(Loras() + "/peft.safetensors", models + "/loras/peft.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  const std::string one_model = R"({
  "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 3, "cfg": 6.5, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1, "model": ["20", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}},
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
  "20": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
         "lora_name": "peft.safetensors", "strength_model": 0.8, "strength_clip": 0.6}},
  "21": {"class_type": "LoraLoader", "inputs": {"model": ["20", 0], "clip": ["20", 1],
         "lora_name": "peft.safetensors", "strength_model": 0, "strength_clip": 0}},
  "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["20", 1]}},
  "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["20", 1]}},
  "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
  "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}}
})";
  auto negative_clip = [&](const std::string& from) {
    return absl::StrReplaceAll(one_model,
                               {{R"("text": "blurry", "clip": ["20", 1])",
                                 R"("text": "blurry", "clip": [")" + from + R"(", 1])"}});
  };
  auto run = [&](const std::string& name, const std::string& json) {
    sd::testing::WriteFile(dir_->File(name + ".json"), json);
    auto r = RunCommand(Bin() + " run " + Quote(dir_->File(name + ".json")) + " --comfy-models " +
                        Quote(models) + " -o " + Quote(dir_->File(name + ".png")));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto px = ReadImageRgb8(dir_->File(name + ".png"));
    EXPECT_TRUE(px.ok()) << px.status();
    return px.ok() ? *px : torch::Tensor();
  };
  const torch::Tensor folded = run("folded", one_model);
  const torch::Tensor chained = run("chained", negative_clip("21"));
  ASSERT_TRUE(folded.defined() && chained.defined());
  EXPECT_TRUE(torch::equal(chained, folded));
  const torch::Tensor plain_negative = run("plain-negative", negative_clip("4"));
  ASSERT_TRUE(plain_negative.defined());
  EXPECT_GT((plain_negative.to(torch::kInt32) - folded.to(torch::kInt32)).abs().max().item<int>(),
            1);
  EXPECT_THAT(*ReadImageAttribute(dir_->File("plain-negative.png"), "parameters"),
              HasSubstr("Lora hashes: \"peft"));

  // The graph it becomes: the UNet steps and the prompt's ClipEncode read their chains' models,
  // the negative prompt's none.
  auto r = RunCommand(Bin() + " import-comfy " + Quote(dir_->File("plain-negative.json")) + " -o " +
                      Quote(dir_->File("plain-negative.pbtxt")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string graph = sd::testing::ReadFile(dir_->File("plain-negative.pbtxt"));
  EXPECT_THAT(graph, HasSubstr(R"(node { kind: "ApplyLora" name: "20_unet" input: "lora=@lora" )"
                               R"(input: "unet=@lora_unet" input: "text=#0" })"));
  EXPECT_THAT(graph, HasSubstr(R"(node { kind: "ApplyLora" name: "20_text" input: "lora=@lora" )"
                               R"(input: "text=@lora_text" input: "unet=#0" })"));
  EXPECT_THAT(graph, HasSubstr(R"(input: "model=20_unet.model")"));
  EXPECT_THAT(graph, HasSubstr(R"(name: "6_clip" input: "tokens=6_tokens.tokens")"));
  EXPECT_THAT(graph, HasSubstr(R"(input: "model=20_text.model" })"));
  EXPECT_THAT(graph, ::testing::Not(HasSubstr(R"(name: "7_clip" input: "tokens=7_tokens.tokens" )"
                                              R"(input: "vectors=7_tokens.vectors" input: )"
                                              R"("clip_skip=@clip_skip" input: "model)")));
  // A LoRA the models folder lacks: named before anything runs.
  sd::testing::WriteFile(
      dir_->File("missing.json"),
      absl::StrReplaceAll(negative_clip("4"), {{"peft.safetensors", "gone.safetensors"}}));
  r = RunCommand(Bin() + " run " + Quote(dir_->File("missing.json")) + " --comfy-models " +
                 Quote(models) + " -o " + Quote(dir_->File("missing.png")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("gone.safetensors"));
}

// `convert --dtype q8` stores the UNet's 3x3 convolutions in int8 (smaller file), and the file
// draws what `--dtype q8` draws from the original (on CPUs with VNNI both also quantize the
// feed-forward projections as they load: LoadWeights' rule for networks with int8 weights); both
// differ from f32 (the weights were quantized).
TEST_F(GenerateCliTest, AnInt8CheckpointDrawsWhatTheInt8ModeDraws) {
  const std::string demo = std::string(SD_TEST_MODELS_DIR) + "/sd-demo-shapes.safetensors",
                    q8 = dir_->File("demo-q8.safetensors");
  auto r = RunCommand(Bin() + " convert " + Quote(demo) + " " + Quote(q8) + " --dtype q8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("UNet convolution weights in int8"));
  EXPECT_LT(std::filesystem::file_size(q8), std::filesystem::file_size(demo) * 95 / 100);
  const std::string prompt = " txt2img --prompt 'a green square on white' --steps 4 --seed 3 ";
  std::map<std::string, torch::Tensor> px;
  for (const auto& [name, flags] : std::vector<std::pair<std::string, std::string>>{
           {"f32", "--model " + Quote(demo)},
           {"q8", "--model " + Quote(demo) + " --dtype q8"},
           {"file", "--model " + Quote(q8)}}) {
    const std::string out = dir_->File(name + ".png");
    r = RunCommand(Bin() + prompt + flags + " -o " + Quote(out));
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
    auto image = ReadImageRgb8(out);
    ASSERT_TRUE(image.ok()) << image.status();
    px[name] = *image;
  }
  EXPECT_TRUE(torch::equal(px["q8"], px["file"]));
  EXPECT_FALSE(torch::equal(px["q8"], px["f32"]));
  r = RunCommand(Bin() + prompt + "--dtype q4 -o " + Quote(dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown dtype 'q4' (use f32, f16, bf16 or q8)"));
}

}  // namespace
}  // namespace sd::cli_test
