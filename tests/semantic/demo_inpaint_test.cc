// Inpainting on the demo model, graded by the image analyser: a half of a picture repainted with a
// new shape in a new colour while the picture's own shape stays in the other half. Two methods:
// the mask-blend method (graphs/inpaint.pbtxt) on the demo model itself, and the shipped inpainting
// variant (9 channels, made by sd-train-inpaint) with graphs/inpaint9.pbtxt, which `sd-graph
// inpaint` runs when no model is named.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "nodes/weights/checkpoint.h"
#include "nodes/weights/sd_config.h"
#include "tests/semantic/demo_harness.h"

namespace sd::demo {
namespace {

constexpr int kSize = 64;

struct InpaintCase {
  Scene keep;    // the picture's own shape, in the half that is kept
  Scene wanted;  // what the prompt asks for in the repainted half (its position: that half)
};

// The half of `image` [H, W, 3] at `side`, or (inside = false) the other half; `margin` pixels next
// to the border between them left out. A view.
torch::Tensor Half(const torch::Tensor& image, Position side, bool inside, int margin = 0) {
  const int64_t dim = side == Position::kLeft || side == Position::kRight ? 1 : 0;
  const bool first = (side == Position::kLeft || side == Position::kTop) == inside;
  const int64_t mid = kSize / 2;
  return first ? image.slice(dim, 0, mid - margin) : image.slice(dim, mid + margin);
}

// White (repaint) on the half at `side`.
torch::Tensor HalfMask(Position side) {
  torch::Tensor mask = torch::zeros({kSize, kSize, 3}, torch::kUInt8);
  Half(mask, side, true).fill_(255);
  return mask;
}

struct InpaintTally {
  int n = 0, drawn = 0, shape_ok = 0;
  void Print(const std::string& label) const {
    std::printf(
        "[ demo ] %s: the new object inside the mask in %d of %d, its shape right in %d of %d\n",
        label.c_str(), drawn, n, shape_ok, n);
    std::fflush(stdout);
  }
};

// Runs every case (seed 1) and grades it: the new colour inside the repainted half (a shape's
// worth: more than 2% and less than 60% of it) and not outside, the shape the analyser sees there,
// and the kept half (away from the border) within a few levels of the input.
InpaintTally RunInpainting(const DemoRunner& runner, const std::vector<InpaintCase>& cases) {
  std::vector<torch::Tensor> inits;
  std::vector<std::string> prompts;
  std::vector<std::map<std::string, Value>> runs;
  for (size_t i = 0; i < cases.size(); ++i) {
    inits.push_back(SceneImage(cases[i].keep, kSize));
    prompts.push_back(Caption(cases[i].wanted, Mentions{true, true, false, true}, 0));
    runs.push_back({{"init", inits.back()},
                    {"mask", HalfMask(cases[i].wanted.position)},
                    {"prompt", prompts.back()},
                    {"seed", int64_t{1}}});
  }
  const std::vector<torch::Tensor> images = runner.RunAll(runs);
  InpaintTally t;
  for (size_t i = 0; i < images.size(); ++i) {
    EXPECT_TRUE(images[i].defined()) << prompts[i];
    if (!images[i].defined()) continue;
    const Scene& want = cases[i].wanted;
    const torch::Tensor inside = Half(images[i], want.position, true).contiguous();
    const double in_share = ColourShare(inside, want.foreground),
                 out_share = ColourShare(Half(images[i], want.position, false), want.foreground);
    // A shape, not the whole half in the new colour.
    const bool drawn = in_share > 0.02 && in_share < 0.6 && out_share < 0.2 * in_share;
    const ImageScore s = Score(inside);
    const bool shape_ok = drawn && s.shape == want.shape;
    const double kept_diff = (Half(images[i], want.position, false, 8).to(torch::kInt32) -
                              Half(inits[i], want.position, false, 8).to(torch::kInt32))
                                 .abs()
                                 .to(torch::kFloat64)
                                 .mean()
                                 .item<double>();
    std::printf(
        "[ demo ] inpaint %-56s new colour %.3f inside, %.3f outside; inside: %s; kept half mean "
        "|diff| %.2f levels\n",
        prompts[i].c_str(), in_share, out_share, s.Describe().c_str(), kept_diff);
    EXPECT_LE(kept_diff, 4.0) << prompts[i];
    ++t.n;
    t.drawn += drawn;
    t.shape_ok += shape_ok;
  }
  return t;
}

// The right half repainted, a small shape kept on the left: eight fixed cases.
std::vector<InpaintCase> RightHalfCases() {
  ShapesDataset data(31, kSize);
  struct Spec {
    int keep_fg, bg, new_fg;
    Shape keep_shape, new_shape;
  };
  const Spec specs[] = {
      {0, 2, 3, Shape::kCircle, Shape::kSquare},   {1, 6, 5, Shape::kSquare, Shape::kTriangle},
      {7, 3, 0, Shape::kTriangle, Shape::kCircle}, {3, 5, 1, Shape::kCircle, Shape::kSquare},
      {2, 0, 6, Shape::kTriangle, Shape::kSquare}, {5, 4, 7, Shape::kSquare, Shape::kCircle},
      {6, 7, 4, Shape::kCircle, Shape::kTriangle}, {4, 1, 2, Shape::kSquare, Shape::kCircle},
  };
  std::vector<InpaintCase> cases;
  for (const Spec& c : specs) {
    InpaintCase ic;
    ic.keep = data.RandomScene(c.keep_fg, c.bg, c.keep_shape, Size::kSmall, Position::kLeft);
    ic.wanted.foreground = c.new_fg;
    ic.wanted.background = c.bg;
    ic.wanted.shape = c.new_shape;
    ic.wanted.position = Position::kRight;
    cases.push_back(ic);
  }
  return cases;
}

// Every half in turn, colours and shapes drawn at random (seed 57): the kept shape small in the
// other half, the new one a colour that is neither the background nor the kept shape's.
std::vector<InpaintCase> RandomCases(int count) {
  ShapesDataset data(57, kSize);
  std::mt19937_64 rng(57);
  const Position sides[] = {Position::kLeft, Position::kRight, Position::kTop, Position::kBottom};
  const Position opposite[] = {Position::kRight, Position::kLeft, Position::kBottom,
                               Position::kTop};
  const int colours = static_cast<int>(Palette().size());
  std::vector<InpaintCase> cases;
  for (int i = 0; i < count; ++i) {
    InpaintCase ic;
    ic.keep = data.RandomScene(-1, -1, std::nullopt, Size::kSmall, opposite[i % 4]);
    do {
      ic.wanted.foreground = static_cast<int>(rng() % colours);
    } while (ic.wanted.foreground == ic.keep.background ||
             ic.wanted.foreground == ic.keep.foreground);
    ic.wanted.background = ic.keep.background;
    ic.wanted.shape = static_cast<Shape>(rng() % kShapeCount);
    ic.wanted.position = sides[i % 4];
    cases.push_back(ic);
  }
  return cases;
}

// The mask-blend method on the demo model. The model was trained on one shape per picture, and
// with the old shape in view it leaves the masked half empty for some prompts: reported, and
// asserted at half (the inpainting model below is the answer).
TEST(DemoInpaintTest, MaskBlendDrawsInsideTheMaskAndKeepsTheRest) {
  const DemoRunner runner("inpaint.pbtxt");
  const InpaintTally t = RunInpainting(runner, RightHalfCases());
  t.Print("inpaint (mask blend, demo model)");
  EXPECT_GE(2 * t.drawn, t.n);
}

// The shipped inpainting variant is what it says: fp16, small, detected as the demo configuration
// with 9 input channels, 64 pixels native, made from the demo model whose text encoder and VAE it
// keeps unchanged.
TEST(DemoInpaintTest, ShippedFileIsTheDemoInpaintingModel) {
  std::shared_ptr<const Checkpoint> ckpt;
  ASSERT_NO_FATAL_FAILURE(ExpectShippedDemoFile(ShippedDemoInpaintModel(), "demo-shapes-inpainting",
                                                "sd-train-inpaint", &ckpt));
  // (The configuration's name ends in "-inpainting" only for 9 UNet input channels.)
  const auto& meta = ckpt->metadata();
  if (std::getenv("SDGRAPH_DEMO_MODEL") || std::getenv("SDGRAPH_DEMO_INPAINT_MODEL")) return;
  EXPECT_EQ(meta.at("sdgraph.base_model"), kDemoModelFile);
  auto base = Checkpoint::Open(ShippedDemoModel());
  ASSERT_TRUE(base.ok()) << base.status();
  int compared = 0;
  for (const TensorView& t : ckpt->tensors()) {
    if (t.name.rfind(kClipPrefix, 0) != 0 && t.name.rfind(kVaePrefix, 0) != 0) continue;
    const TensorView* b = (*base)->Find(t.name);
    ASSERT_NE(b, nullptr) << t.name;
    ASSERT_EQ(b->nbytes(), t.nbytes()) << t.name;
    EXPECT_EQ(std::memcmp(b->data, t.data, t.nbytes()), 0) << t.name << " differs from the base's";
    ++compared;
  }
  EXPECT_GT(compared, 100);
}

// The inpainting variant draws the new object in the repainted half, with the picture's own shape
// in view: the eight cases above, then 24 more on every half.
TEST(DemoInpaintTest, InpaintingModelDrawsInsideTheMaskAndKeepsTheRest) {
  DemoRunner runner("inpaint9.pbtxt");
  runner.UseModel(ShippedDemoInpaintModel());
  const InpaintTally fixed = RunInpainting(runner, RightHalfCases());
  fixed.Print("inpaint (9-channel model, right half)");
  const InpaintTally random = RunInpainting(runner, RandomCases(24));
  random.Print("inpaint (9-channel model, every half)");
  ReportGoal(fixed.drawn == fixed.n && random.drawn == random.n,
             "inpaint: the new object appears inside the mask in every image");
  EXPECT_GE(fixed.drawn, fixed.n - 1);
  EXPECT_GE(random.drawn, random.n * 9 / 10);
  EXPECT_GE(random.shape_ok, random.n * 3 / 4);
}

}  // namespace
}  // namespace sd::demo
