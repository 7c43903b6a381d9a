// What the demo ControlNet (deploy/models/sd-demo-shapes-canny.safetensors, trained by
// sd-train-controlnet) does to the demo model's pictures, graded by the image analyser: the Canny
// edges of a picture fix the shape and where it is, the prompt still gives the colours. The demo
// model alone ignores position words (see the README), so the same prompts with the position
// written out are the baseline.
#include <gtest/gtest.h>

#include "nodes/ops/canny.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/controlnet_layout.h"
#include "nodes/weights/sd_config.h"
#include "tests/semantic/demo_harness.h"

namespace sd::demo {
namespace {

constexpr int kSize = 64;

// A hint: the Canny edges (100, 200: sd-graph's defaults) of `shape` drawn at `where` in colours
// that have nothing to do with the prompt's.
torch::Tensor EdgeHint(Shape shape, Position where, double rotation) {
  Scene s;
  s.shape = shape;
  s.foreground = ColourIndex("white");
  s.background = ColourIndex("black");
  s.radius = NominalRadius(Size::kMedium);
  s.rotation = rotation;
  s.cx = where == Position::kLeft ? 0.27 : where == Position::kRight ? 0.73 : 0.5;
  s.cy = where == Position::kTop ? 0.27 : where == Position::kBottom ? 0.73 : 0.5;
  auto edges = CannyEdges(SceneImage(s, kSize), 100, 200);
  EXPECT_TRUE(edges.ok()) << edges.status();
  return edges.ok() ? *edges : torch::Tensor();
}

struct Case {
  Shape shape;
  Position where;
  const char* foreground;
  const char* background;
};

// Every shape at four places, in colour pairs that include triples training never drew.
std::vector<Case> Cases() {
  const std::vector<std::pair<const char*, const char*>> colours = {
      {"red", "blue"},    {"green", "purple"},  {"yellow", "black"}, {"orange", "white"},
      {"blue", "yellow"}, {"purple", "orange"}, {"white", "red"},    {"black", "green"},
      {"yellow", "blue"}, {"red", "white"},     {"green", "yellow"}, {"blue", "orange"}};
  std::vector<Case> cases;
  size_t i = 0;
  for (Shape shape : {Shape::kCircle, Shape::kSquare, Shape::kTriangle}) {
    for (Position where : {Position::kLeft, Position::kRight, Position::kTop, Position::kBottom}) {
      cases.push_back({shape, where, colours[i].first, colours[i].second});
      ++i;
    }
  }
  return cases;
}

std::string Prompt(const Case& c, bool with_position) {
  const std::string shape = ShapeName(c.shape);
  return absl::StrCat(Article(c.foreground), " ", c.foreground, " ", shape,
                      with_position ? absl::StrCat(" ", PositionPhrase(c.where)) : "", " on ",
                      Article(c.background), " ", c.background, " background");
}

std::map<std::string, Value> Settings(const std::string& prompt, int64_t seed) {
  return {{"prompt", prompt},
          {"seed", seed},
          {"steps", int64_t{20}},
          {"cfg", 7.5},
          {"sampler", std::string("dpmpp_2m")},
          {"karras", int64_t{1}}};
}

TEST(DemoControlNetTest, ShippedFileIsTheDemoControlNet) {
  auto ckpt = Checkpoint::Open(ShippedDemoControlNet());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_LE((*ckpt)->file()->size(), 10u << 20);
  EXPECT_EQ((*ckpt)->PredominantFloatDType(), DType::kF16);
  auto layout = ReadControlNetLayout(**ckpt);
  ASSERT_TRUE(layout.ok()) << layout.status();
  const UNetConfig want = SdConfig::DemoShapes().unet;
  EXPECT_EQ(layout->config.unet.model_channels, want.model_channels);
  EXPECT_EQ(layout->config.unet.channel_mult, want.channel_mult);
  EXPECT_EQ(layout->config.unet.context_dim, want.context_dim);
  const auto& meta = (*ckpt)->metadata();
  EXPECT_EQ(meta.at("sdgraph.base_model"), kDemoModelFile);
  EXPECT_EQ(meta.at("sdgraph.hint"), "canny 100 200");
  EXPECT_NE(meta.at("sdgraph.recipe").find("sd-train-controlnet"), std::string::npos);
  EXPECT_NE(meta.at("sdgraph.description").find("not a Stable Diffusion ControlNet"),
            std::string::npos);
}

// The edges place the shape and fix which it is; the prompt colours it. Without the ControlNet the
// same prompts land where the noise puts them, and with the place written out where the words say
// (printed for comparison).
TEST(DemoControlNetTest, EdgesPlaceTheShapeAndThePromptColoursIt) {
  DemoRunner steered("txt2img_controlnet.pbtxt"), plain("txt2img.pbtxt");
  steered.UseControlNet(ShippedDemoControlNet());
  std::vector<std::map<std::string, Value>> steered_runs, plain_runs, worded_runs;
  std::vector<PromptIntent> wants, worded_wants;
  for (const Case& c : Cases()) {
    const torch::Tensor hint = EdgeHint(c.shape, c.where, 0.0);
    PromptIntent want = ParseIntent(Prompt(c, /*with_position=*/false));
    want.position = c.where;
    for (int64_t seed : {1, 2}) {
      auto settings = Settings(Prompt(c, false), seed);
      plain_runs.push_back(settings);
      settings["hint"] = hint;
      steered_runs.push_back(settings);
      wants.push_back(want);
      worded_runs.push_back(Settings(Prompt(c, true), seed));
      worded_wants.push_back(ParseIntent(Prompt(c, true)));
    }
  }
  Tally with, without, worded;
  const std::vector<torch::Tensor> steered_images = steered.RunAll(steered_runs);
  const std::vector<torch::Tensor> plain_images = plain.RunAll(plain_runs);
  const std::vector<torch::Tensor> worded_images = plain.RunAll(worded_runs);
  for (size_t i = 0; i < steered_images.size(); ++i) {
    with.Add(wants[i], Score(steered_images[i]));
    without.Add(wants[i], Score(plain_images[i]));
    worded.Add(worded_wants[i], Score(worded_images[i]));
  }
  with.Print("canny ControlNet");
  without.Print("no ControlNet, no place word");
  worded.Print("no ControlNet, place in words");
  EXPECT_GE(with.background(), 0.90);
  EXPECT_GE(with.foreground(), 0.85);
  EXPECT_GE(with.position(), 0.90);
  EXPECT_GE(with.position(), without.position() + 0.5);
  // The edges cost no shapes. They add few since the demo model learnt its shape words (the caption
  // heads): the decoder, which rounds corners, limits both (triangles come out blunt and read as
  // squares). Issue 13's goal for shapes is reported, as in demo_model_test.cc.
  EXPECT_GE(with.shape(), without.shape());
  std::printf("[ demo ] goal %s: canny ControlNet: shape right in >= 75%% of images\n",
              with.shape() >= 0.75 ? "met" : "NOT MET");
}

}  // namespace
}  // namespace sd::demo
