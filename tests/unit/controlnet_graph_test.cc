// ControlNet on the tiny test model: every layout loads to the same network, the nodes (hint,
// range, guess mode, chaining, the UNet step's residuals) do what they say, and the stock graphs
// run with one ControlNet or two, unchanged when its strength is 0. Parity with the original code
// is controlnet_parity_test's (full-size weights).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "host_plugin/runtime/control_graph.h"
#include "host_plugin/runtime/graph.h"
#include "nodes/base/file_util.h"
#include "nodes/models/controlnet.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/test_weights.h"
#include "proto/sd/v1/nodes.pb.h"
#include "tests/node_runner.h"
#include "tests/test_util.h"
#include "tests/tiny_checkpoint.h"

namespace sd {
namespace {

using ::testing::HasSubstr;
using testing::OutTensor;
using testing::RunNode;

class ControlNetGraphTest : public testing::TinyCheckpointTest {
 protected:
  static void SetUpTestSuite() {
    TinyCheckpointTest::SetUpTestSuite();
    for (ControlNetLayout layout : {ControlNetLayout::kOriginal, ControlNetLayout::kUnprefixed,
                                    ControlNetLayout::kDiffusers}) {
      TestControlNetOptions c;
      c.config = ControlNetConfig::For(SdConfig::Tiny().unet);
      c.layout = layout;
      ASSERT_TRUE(WriteTestControlNet(dir_->File(Layout(layout)), c).ok());
    }
    TestControlNetOptions other;
    other.config = ControlNetConfig::For(SdConfig::DemoShapes().unet);
    ASSERT_TRUE(WriteTestControlNet(dir_->File("other.safetensors"), other).ok());
  }
  static std::string Layout(ControlNetLayout l) {
    return absl::StrCat("cn", static_cast<int>(l), ".safetensors");
  }
  // A run context whose model reference names `controls` (files in the temp folder).
  static RunContext Context(const std::vector<std::string>& controls) {
    RunContext ctx;
    ctx.checkpoint = TinyPath();
    for (const std::string& c : controls)
      absl::StrAppend(&ctx.checkpoint, "|control=", dir_->File(c));
    ctx.tokenizer_dir = testing::TokenizerDir();
    ctx.models = std::make_shared<ModelCache>();
    return ctx;
  }
  static std::map<std::string, Value> ControlInputs(double t) {
    torch::manual_seed(5);
    return {{"hint", torch::rand({1, 3, 64, 64})},
            {"latents", torch::randn({2, 4, 8, 8})},
            {"t", t},
            {"context", torch::randn({1, 77, 64})}};
  }
  static google::protobuf::Any Index(int i) {
    v1::ControlNetOptions o;
    o.set_index(i);
    google::protobuf::Any any;
    any.PackFrom(o);
    return any;
  }
};

TEST_F(ControlNetGraphTest, EveryLayoutGivesTheSameResiduals) {
  torch::Tensor first;
  for (ControlNetLayout layout :
       {ControlNetLayout::kOriginal, ControlNetLayout::kUnprefixed, ControlNetLayout::kDiffusers}) {
    RunContext ctx = Context({Layout(layout)});
    auto out = RunNode("ControlNet", ctx, ControlInputs(500));
    ASSERT_TRUE(out.ok()) << LayoutName(layout) << ": " << out.status();
    const torch::Tensor r = OutTensor(*out, "residuals");
    if (!first.defined()) {
      first = r;
      EXPECT_GT(r.abs().max().item<double>(), 0);
    } else {
      EXPECT_TRUE(torch::equal(r, first)) << LayoutName(layout);
    }
  }
}

TEST_F(ControlNetGraphTest, StrengthRangeGuessModeAndChaining) {
  RunContext ctx =
      Context({Layout(ControlNetLayout::kOriginal), Layout(ControlNetLayout::kDiffusers)});
  auto base = RunNode("ControlNet", ctx, ControlInputs(500));
  ASSERT_TRUE(base.ok()) << base.status();
  const torch::Tensor r1 = OutTensor(*base, "residuals");
  const UNetConfig u = SdConfig::Tiny().unet;
  auto parts = UnpackControl(r1, u, 8, 8);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), ControlResidualShapes(u, 8, 8).size());

  auto in = ControlInputs(500);
  in["strength"] = 0.5;
  EXPECT_TRUE(torch::allclose(OutTensor(*RunNode("ControlNet", ctx, in), "residuals"), r1 * 0.5,
                              1e-6, 1e-7));
  // Outside [start, end] (t = 500 is progress 0.4995): zeros, or the residuals given, unchanged.
  in = ControlInputs(500);
  in["start"] = 0.6;
  EXPECT_EQ(OutTensor(*RunNode("ControlNet", ctx, in), "residuals").abs().max().item<double>(), 0);
  in["residuals"] = r1;
  EXPECT_TRUE(torch::equal(OutTensor(*RunNode("ControlNet", ctx, in), "residuals"), r1));
  in = ControlInputs(500);
  in["active"] = int64_t{0};
  EXPECT_EQ(OutTensor(*RunNode("ControlNet", ctx, in), "residuals").abs().max().item<double>(), 0);
  // Guess mode: residual i of n scaled by 0.825^(n - 1 - i).
  in = ControlInputs(500);
  in["guess_mode"] = int64_t{1};
  auto guessed = UnpackControl(OutTensor(*RunNode("ControlNet", ctx, in), "residuals"), u, 8, 8);
  const size_t n = parts->size();
  for (size_t i = 0; i < n; ++i) {
    EXPECT_TRUE(torch::allclose((*guessed)[i], (*parts)[i] * std::pow(0.825, double(n - 1 - i)),
                                1e-5, 1e-6))
        << i;
  }
  // The second ControlNet of the reference, chained: the sum of both.
  in = ControlInputs(500);
  auto second = RunNode("ControlNet", ctx, in, Index(1));
  in["residuals"] = r1;
  auto chained = RunNode("ControlNet", ctx, in, Index(1));
  ASSERT_TRUE(second.ok() && chained.ok());
  EXPECT_TRUE(torch::allclose(OutTensor(*chained, "residuals"),
                              r1 + OutTensor(*second, "residuals"), 1e-6, 1e-7));
}

TEST_F(ControlNetGraphTest, UNetStepAddsTheResiduals) {
  RunContext ctx = Context({Layout(ControlNetLayout::kOriginal)});
  auto in = ControlInputs(500);
  const torch::Tensor r = OutTensor(*RunNode("ControlNet", ctx, in), "residuals");
  std::map<std::string, Value> step = {
      {"latents", in["latents"]}, {"t", 500.0}, {"context", in["context"]}};
  const torch::Tensor plain = OutTensor(*RunNode("UNetStep", ctx, step), "eps");
  step["control"] = r;
  auto controlled = RunNode("UNetStep", ctx, step);
  ASSERT_TRUE(controlled.ok()) << controlled.status();
  auto unet = ctx.models->GetUnet(ctx.checkpoint, torch::kFloat32, torch::kCPU);
  auto want = (*unet)->Predict(std::get<torch::Tensor>(in["latents"]), torch::tensor({500.0f}),
                               std::get<torch::Tensor>(in["context"]),
                               *UnpackControl(r, (*unet)->config(), 8, 8));
  EXPECT_TRUE(torch::equal(OutTensor(*controlled, "eps"), *want));
  EXPECT_GT((OutTensor(*controlled, "eps") - plain).abs().max().item<double>(), 1e-4);
  step["control"] = torch::zeros({1, 10});
  EXPECT_THAT(RunNode("UNetStep", ctx, step).status().message(),
              HasSubstr("residuals for latents of 8x8"));
}

TEST_F(ControlNetGraphTest, RefusesAControlNetOfAnotherModelAndAMissingOne) {
  RunContext ctx = Context({"other.safetensors"});
  auto out = RunNode("ControlNet", ctx, ControlInputs(500));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(out.status().message(), HasSubstr("other.safetensors was made for another model"));
  RunContext none = Context({});
  EXPECT_THAT(
      RunNode("ControlNet", none, ControlInputs(500)).status().message(),
      HasSubstr(
          "names 0 ControlNet file(s); index 0 is out of range (sd-graph: --controlnet FILE)"));
  RunContext one = Context({Layout(ControlNetLayout::kOriginal)});
  EXPECT_THAT(RunNode("ControlNet", one, ControlInputs(500), Index(1)).status().message(),
              HasSubstr("index 1 is out of range"));
}

TEST_F(ControlNetGraphTest, ControlHintFitsPicturesAndPasses) {
  RunContext ctx = Context({});
  const torch::Tensor latents = torch::zeros({1, 4, 8, 16});  // 64 x 128 pixels
  // A grey 32x32 picture: stretched to 128x64 and made RGB.
  torch::Tensor grey =
      torch::arange(32, torch::kUInt8).view({1, 32, 1}).expand({32, 32, 1}).contiguous() * 8;
  auto out = RunNode("ControlHint", ctx,
                     {{"pixels", grey}, {"latents", latents}, {"crop", std::string("disabled")}});
  ASSERT_TRUE(out.ok()) << out.status();
  torch::Tensor hint = OutTensor(*out, "hint");
  EXPECT_EQ(hint.sizes(), (std::vector<int64_t>{1, 3, 64, 128}));
  EXPECT_TRUE(torch::equal(hint[0][0], hint[0][2]));
  EXPECT_NEAR(hint[0][0][0][127].item<double>(), 248.0 / 255, 1e-6);
  // Depth: distances, near = white, the background (infinity) black.
  torch::Tensor depth = torch::full({8, 8, 1}, 10.0f);
  depth[0][0][0] = 2.0f;
  depth[7][7][0] = std::numeric_limits<float>::infinity();
  out = RunNode("ControlHint", ctx,
                {{"values", depth},
                 {"normalize", std::string("depth")},
                 {"latents", torch::zeros({1, 4, 1, 1})}});
  ASSERT_TRUE(out.ok()) << out.status();
  hint = OutTensor(*out, "hint");
  EXPECT_EQ(hint[0][1][0][0].item<float>(), 1.0f);
  EXPECT_EQ(hint[0][1][3][3].item<float>(), 0.0f);
  EXPECT_EQ(hint[0][1][7][7].item<float>(), 0.0f);
  // Normals: [-1, 1] to [0, 1].
  out =
      RunNode("ControlHint", ctx,
              {{"values",
                torch::tensor({-1.0f, 0.0f, 1.0f}).view({1, 1, 3}).expand({8, 8, 3}).contiguous()},
               {"normalize", std::string("normal")},
               {"latents", torch::zeros({1, 4, 1, 1})}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(torch::equal(OutTensor(*out, "hint")[0].select(1, 0).select(1, 0),
                           torch::tensor({0.0f, 0.5f, 1.0f})));
  EXPECT_THAT(RunNode("ControlHint", ctx, {{"latents", latents}}).status().message(),
              HasSubstr("give `pixels`, `image` or `values`"));
}

// Canny edges (OpenCV): a white square on grey has edges on its outline only, none inside or far
// outside; thresholds above a faint step's gradient give none; bad thresholds are refused.
TEST_F(ControlNetGraphTest, CannyOutlinesShapes) {
  RunContext ctx = Context({});
  torch::Tensor px = torch::full({64, 64, 3}, 60, torch::kUInt8);
  px.slice(0, 16, 48).slice(1, 16, 48).fill_(250);
  auto out = RunNode("Canny", ctx, {{"pixels", px}});
  ASSERT_TRUE(out.ok()) << out.status();
  const torch::Tensor edges = OutTensor(*out, "pixels");
  ASSERT_EQ(edges.sizes(), px.sizes());
  const torch::Tensor e = edges.select(2, 0).to(torch::kInt64);
  EXPECT_TRUE(torch::equal(edges.select(2, 0), edges.select(2, 2)));
  EXPECT_EQ(e.slice(0, 19, 45).slice(1, 19, 45).sum().item<int64_t>(), 0)
      << "edges inside the square";
  EXPECT_EQ(e.slice(0, 0, 13).sum().item<int64_t>() + e.slice(0, 51, 64).sum().item<int64_t>(), 0);
  const int64_t edge_pixels = e.sum().item<int64_t>() / 255;
  EXPECT_GE(edge_pixels, 4 * 30);  // the outline: 4 sides of 32
  EXPECT_LE(edge_pixels, 4 * 34 * 2);
  for (int y = 0; y < 64; ++y) {
    for (int x = 0; x < 64; ++x) {
      if (e[y][x].item<int64_t>() == 0) continue;
      const int d =
          std::min({std::abs(y - 16), std::abs(y - 47), std::abs(x - 16), std::abs(x - 47)});
      EXPECT_LE(d, 1) << "edge at " << y << "," << x;
    }
  }
  // A step of 20 levels: a 3x3 Sobel gradient of at most 8 * 20 = 160, under the thresholds.
  torch::Tensor faint = torch::full({64, 64, 3}, 100, torch::kUInt8);
  faint.slice(0, 16, 48).slice(1, 16, 48).fill_(120);
  out = RunNode("Canny", ctx, {{"pixels", faint}, {"low", int64_t{200}}, {"high", int64_t{300}}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(OutTensor(*out, "pixels").sum().item<int64_t>(), 0);
  EXPECT_THAT(RunNode("Canny", ctx, {{"pixels", px}, {"low", int64_t{300}}, {"high", int64_t{200}}})
                  .status()
                  .message(),
              HasSubstr("need 0 <= low <= high <= 1023"));
}

TEST_F(ControlNetGraphTest, StockGraphsRunAndStrengthZeroIsTheGraphWithout) {
  const torch::Tensor hint_px = (torch::rand({64, 64, 3}) * 255).to(torch::kUInt8);
  auto run = [&](const std::string& text, const std::vector<std::string>& controls,
                 std::map<std::string, Value> inputs) -> torch::Tensor {
    auto g = Graph::FromText(text, "graph");
    EXPECT_TRUE(g.ok()) << g.status();
    if (!g.ok()) return {};
    RunContext ctx = Context(controls);
    inputs["prompt"] = std::string("a red circle");
    inputs["steps"] = int64_t{3};
    for (const char* dim : {"width", "height"}) {
      if (g->Input(dim)) inputs[dim] = int64_t{64};
    }
    auto out = g->Run(inputs, ctx, RunOptions());
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::get<torch::Tensor>(out->at("image")) : torch::Tensor();
  };
  const std::string dir = SD_TEST_GRAPHS_DIR;
  const std::string plain = *ReadWholeFile(dir + "/txt2img.pbtxt", "graph");
  const std::string one = *ReadWholeFile(dir + "/txt2img_controlnet.pbtxt", "graph");
  auto two = AddControlNets(one, 1);
  ASSERT_TRUE(two.ok()) << two.status();
  const std::string a = Layout(ControlNetLayout::kOriginal),
                    b = Layout(ControlNetLayout::kDiffusers);
  const torch::Tensor without = run(plain, {}, {});
  EXPECT_TRUE(torch::equal(run(one, {a}, {{"hint", hint_px}, {"control_strength", 0.0}}), without));
  const torch::Tensor steered = run(one, {a}, {{"hint", hint_px}});
  EXPECT_FALSE(torch::equal(steered, without));
  // Two ControlNets, the second at strength 0: the image of the first alone.
  EXPECT_TRUE(torch::equal(
      run(*two, {a, b}, {{"hint", hint_px}, {"hint_1", hint_px}, {"control_strength_1", 0.0}}),
      steered));
  EXPECT_FALSE(torch::equal(run(*two, {a, b}, {{"hint", hint_px}, {"hint_1", hint_px}}), steered));
  // img2img with a ControlNet at strength 0 is img2img.
  const std::string i2i = *ReadWholeFile(dir + "/img2img.pbtxt", "graph");
  const std::string i2i_cn = *ReadWholeFile(dir + "/img2img_controlnet.pbtxt", "graph");
  std::map<std::string, Value> init = {{"init", hint_px}};
  std::map<std::string, Value> with = {
      {"init", hint_px}, {"hint", hint_px}, {"control_strength", 0.0}};
  EXPECT_TRUE(torch::equal(run(i2i_cn, {a}, with), run(i2i, {}, init)));
}

}  // namespace
}  // namespace sd
