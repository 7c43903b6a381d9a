// Whole pipelines through the graph runtime and the stock graphs, on full-size sdgold-v1 weights, against
// the reference implementation's images (../shared/golden/e2e_*.safetensors): within 1 level per channel.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "host_plugin/runtime/graph.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/test_weights.h"
#include "tests/golden/golden_util.h"

namespace sd {
namespace {

class E2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ckpt_ = dir_->File("sd15.safetensors");
    ASSERT_TRUE(WriteTestCheckpoint(ckpt_, TestCheckpointOptions()).ok());
    models_ = new std::shared_ptr<ModelCache>(std::make_shared<ModelCache>());
  }
  static void TearDownTestSuite() {
    delete models_;
    delete dir_;
  }
  static std::string GraphPath(const std::string& name) { return std::string(SD_TEST_GRAPHS_DIR) + "/" + name; }

  // Runs stock graph `graph` with `inputs` and compares its image with golden `file`'s image_u8.
  static void Check(const std::string& graph, const std::string& file, std::map<std::string, Value> inputs) {
    auto g = Graph::Load(GraphPath(graph));
    ASSERT_TRUE(g.ok()) << g.status();
    RunContext ctx;
    ctx.checkpoint = ckpt_;
    ctx.tokenizer_dir = testing::TokenizerDir();
    ctx.models = *models_;
    int progress_calls = 0;
    RunOptions options;
    options.on_progress = [&](const Progress& p) { ++progress_calls; };
    auto out = g->Run(inputs, ctx, options);
    ASSERT_TRUE(out.ok()) << out.status();
    torch::Tensor got = std::get<torch::Tensor>(out->at("image"));
    torch::Tensor want = testing::ReadGolden(file).at("image_u8");
    ASSERT_EQ(got.sizes(), want.sizes());
    const int max_diff = (got.to(torch::kInt32) - want.to(torch::kInt32)).abs().max().item<int>();
    const double mean_diff = (got.to(torch::kFloat64) - want.to(torch::kFloat64)).abs().mean().item<double>();
    std::printf("[ e2e ] %-32s max |diff| = %d levels, mean %.4f\n", file.c_str(), max_diff, mean_diff);
    EXPECT_LE(max_diff, 1) << file;
    EXPECT_GT(progress_calls, 0);
  }
  static testing::TempDir* dir_;
  static std::string ckpt_;
  static std::shared_ptr<ModelCache>* models_;
};
testing::TempDir* E2eTest::dir_;
std::string E2eTest::ckpt_;
std::shared_ptr<ModelCache>* E2eTest::models_;

TEST_F(E2eTest, Txt2ImgWithRecordedNoise) {
  auto g = testing::ReadGolden("e2e_txt2img.safetensors");
  Check("txt2img.pbtxt", "e2e_txt2img.safetensors",
        {{"prompt", std::string("a photograph of an astronaut riding a horse")}, {"negative", std::string("")},
         {"steps", int64_t{5}}, {"cfg", 7.5}, {"width", int64_t{64}}, {"height", int64_t{64}},
         {"noise_table", g.at("noises")}});
}

TEST_F(E2eTest, Txt2ImgWithoutCfg) {
  auto g = testing::ReadGolden("e2e_txt2img_nocfg.safetensors");
  Check("txt2img_nocfg.pbtxt", "e2e_txt2img_nocfg.safetensors",
        {{"prompt", std::string("a dog with glasses")}, {"steps", int64_t{4}}, {"width", int64_t{64}},
         {"height", int64_t{64}}, {"noise_table", g.at("noises")}});
}

TEST_F(E2eTest, Img2ImgWithRecordedNoise) {
  auto g = testing::ReadGolden("e2e_img2img.safetensors");
  Check("img2img.pbtxt", "e2e_img2img.safetensors",
        {{"init", g.at("input_image_u8")}, {"prompt", std::string("a dog with glasses")},
         {"negative", std::string("blurry")}, {"steps", int64_t{5}}, {"cfg", 7.5}, {"strength", 0.6},
         {"noise_table", g.at("noises")}});
}

TEST_F(E2eTest, Txt2ImgFromSeedAlone) {
  Check("txt2img.pbtxt", "e2e_txt2img_seed42.safetensors",
        {{"prompt", std::string("A cat stretching on the floor, highly detailed, ultra sharp, cinematic, 100mm lens, 8k resolution")},
         {"steps", int64_t{5}}, {"seed", int64_t{42}}, {"width", int64_t{64}}, {"height", int64_t{64}}});
}

}  // namespace
}  // namespace sd
