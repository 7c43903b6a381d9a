// The demo data and the analyser that grades the demo model: the analyser must read the dataset's
// own pictures right (every colour pair, shape, size, position, tilt), and prompts in the
// vocabulary must parse into what they ask for.
#include "tests/semantic/image_scorer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "tools/train/shapes_dataset.h"

namespace sd::demo {
namespace {

TEST(ShapesDatasetTest, SameSeedSameSamplesAndOtherSeedOthers) {
  ShapesDataset a(42, 64), b(42, 64), c(43, 64);
  for (int i = 0; i < 5; ++i) {
    const ShapeSample x = a.Next(), y = b.Next(), z = c.Next();
    EXPECT_EQ(x.rgb, y.rgb);
    EXPECT_EQ(x.caption, y.caption);
    EXPECT_NE(x.rgb, z.rgb);
  }
}

TEST(ShapesDatasetTest, NeverDrawsAHeldOutTripleOrTheSameColourTwice) {
  ShapesDataset data(7, 32);
  std::map<std::string, int> phrasings;
  for (int i = 0; i < 3000; ++i) {
    const ShapeSample s = data.Next();
    EXPECT_FALSE(IsHeldOut(s.scene.foreground, s.scene.shape, s.scene.background)) << s.caption;
    EXPECT_NE(s.scene.foreground, s.scene.background) << s.caption;
    ++phrasings[s.caption.substr(0, 2)];
  }
  EXPECT_GE(HeldOut().size(), 6u);
  EXPECT_GT(phrasings.size(), 3u) << "captions come in several phrasings";
}

// The pixels a shape covers (drawn alone, without noise, on its background).
std::vector<bool> Covered(const Scene& scene, int size) {
  std::mt19937_64 rng(0);
  const std::vector<uint8_t> px = Render(scene, size, 0.0, rng);
  const auto& bg = Palette()[scene.background].rgb;
  std::vector<bool> out(static_cast<size_t>(size) * size);
  for (size_t i = 0; i < out.size(); ++i) {
    for (int ch = 0; ch < 3; ++ch) out[i] = out[i] || std::abs(px[3 * i + ch] - bg[ch]) > 8;
  }
  return out;
}

// Inpainting samples: the same for the same seed; the captioned shape wholly inside the region to
// repaint, a second shape (in most samples) wholly outside it, the caption naming the first one's
// colour; every kind of region drawn.
TEST(ShapesDatasetTest, InpaintingSamplesCaptionTheShapeInsideTheMask) {
  constexpr int kSize = 64;
  ShapesDataset a(5, kSize), b(5, kSize);
  int whole = 0, with_other = 0;
  const int n = 400;
  for (int i = 0; i < n; ++i) {
    const InpaintSample s = a.NextInpainting();
    const InpaintSample t = b.NextInpainting();
    ASSERT_EQ(s.rgb, t.rgb);
    ASSERT_EQ(s.mask, t.mask);
    ASSERT_EQ(s.rgb.size(), size_t{kSize} * kSize * 3);
    ASSERT_EQ(s.mask.size(), size_t{kSize} * kSize);
    EXPECT_NE(s.caption.find(Palette()[s.scene.foreground].name), std::string::npos) << s.caption;
    int masked = 0;
    for (uint8_t m : s.mask) masked += m;
    EXPECT_GT(masked, 0);
    whole += masked == kSize * kSize;
    const std::vector<bool> target = Covered(s.scene, kSize);
    for (size_t p = 0; p < target.size(); ++p) {
      if (target[p]) {
        ASSERT_EQ(s.mask[p], 1) << s.caption << ": the shape leaves the mask";
      }
    }
    ASSERT_LE(s.others.size(), 1u);
    for (const Scene& other : s.others) {
      ++with_other;
      EXPECT_EQ(other.background, s.scene.background);
      const std::vector<bool> covered = Covered(other, kSize);
      for (size_t p = 0; p < covered.size(); ++p) {
        if (covered[p]) {
          ASSERT_EQ(s.mask[p], 0) << s.caption << ": the second shape is masked";
        }
      }
    }
  }
  EXPECT_GT(whole, n / 20);
  EXPECT_LT(whole, n / 4);
  EXPECT_GT(with_other, n / 4);
}

TEST(ShapesDatasetTest, CaptionsSayWhatThePictureShows) {
  ShapesDataset data(11, 64);
  for (int i = 0; i < 2000; ++i) {
    const ShapeSample s = data.Next();
    const PromptIntent in = ParseIntent(s.caption);
    EXPECT_EQ(in.foreground, s.scene.foreground) << s.caption;
    if (s.mentions.background)
      EXPECT_EQ(in.background, s.scene.background) << s.caption;
    else
      EXPECT_EQ(in.background, -1) << s.caption;
    if (s.mentions.shape)
      EXPECT_EQ(in.shape, s.scene.shape) << s.caption;
    else
      EXPECT_FALSE(in.shape.has_value()) << s.caption;
    EXPECT_EQ(in.position, s.scene.position) << s.caption;
    EXPECT_EQ(in.size.value_or(Size::kMedium), s.scene.size) << s.caption;
  }
}

TEST(ShapesDatasetTest, ArticlesAgreeWithTheWordAfterThem) {
  ShapesDataset data(13, 32);
  int vowel_articles = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string caption = " " + data.Next().caption;
    for (size_t at = caption.find(" a "); at != std::string::npos;
         at = caption.find(" a ", at + 1)) {
      EXPECT_EQ(std::string("aeiou").find(caption[at + 3]), std::string::npos) << caption;
    }
    for (size_t at = caption.find(" an "); at != std::string::npos;
         at = caption.find(" an ", at + 1)) {
      EXPECT_NE(std::string("aeiou").find(caption[at + 4]), std::string::npos) << caption;
      ++vowel_articles;
    }
  }
  EXPECT_GT(vowel_articles, 0) << "orange things are drawn too";
}

// The trainer's caption heads learn StatedBy: it must be what the caption's words say (as the
// scorer reads them), with the "not stated" classes where it says nothing.
TEST(ShapesDatasetTest, StatedIsWhatTheCaptionSays) {
  EXPECT_EQ(kStatedClasses[0], static_cast<int>(Palette().size()) + 1);
  EXPECT_EQ(kStatedClasses[1], static_cast<int>(Palette().size()) + 1);
  EXPECT_EQ(kStatedClasses[2], kShapeCount + 1);
  EXPECT_EQ(kStatedClasses[4], static_cast<int>(Position::kMiddle) + 1);
  const int none = static_cast<int>(Palette().size());
  ShapesDataset data(12, 32);
  for (int i = 0; i < 2000; ++i) {
    const ShapeSample s = data.Next();
    const Stated st = StatedBy(s.scene, s.mentions);
    const PromptIntent in = ParseIntent(s.caption);
    EXPECT_EQ(st[0], in.foreground) << s.caption;
    EXPECT_EQ(st[1], in.background >= 0 ? in.background : none) << s.caption;
    EXPECT_EQ(st[2], in.shape ? static_cast<int>(*in.shape) : kShapeCount) << s.caption;
    EXPECT_EQ(st[3], static_cast<int>(in.size.value_or(Size::kMedium))) << s.caption;
    EXPECT_EQ(st[4], static_cast<int>(in.position)) << s.caption;
    for (size_t a = 0; a < st.size(); ++a) {
      EXPECT_GE(st[a], 0);
      EXPECT_LT(st[a], kStatedClasses[a]);
    }
  }
  const PromptIntent empty = ParseIntent("");
  const Stated nothing = StatedByNothing();
  EXPECT_EQ(nothing[0], none);
  EXPECT_EQ(nothing[1], empty.background >= 0 ? empty.background : none);
  EXPECT_EQ(nothing[2], kShapeCount);
  EXPECT_EQ(nothing[4], static_cast<int>(empty.position));
}

TEST(ImageScorerTest, ParsesThePhrasingsUsersType) {
  struct Case {
    const char* prompt;
    int fg, bg;
    std::optional<Shape> shape;
    Position pos;
  };
  const int red = ColourIndex("red"), blue = ColourIndex("blue"), yellow = ColourIndex("yellow"),
            black = ColourIndex("black"), green = ColourIndex("green");
  const Case cases[] = {
      {"a red circle on a blue background", red, blue, Shape::kCircle, Position::kAnywhere},
      {"red circle, blue background", red, blue, Shape::kCircle, Position::kAnywhere},
      {"a blue background with a small red circle on the left", red, blue, Shape::kCircle,
       Position::kLeft},
      {"a large yellow square at the top on black", yellow, black, Shape::kSquare, Position::kTop},
      {"a green triangle", green, -1, Shape::kTriangle, Position::kAnywhere},
      {"A Red shape on blue", red, blue, std::nullopt, Position::kAnywhere},
  };
  for (const Case& c : cases) {
    const PromptIntent in = ParseIntent(c.prompt);
    EXPECT_EQ(in.foreground, c.fg) << c.prompt;
    EXPECT_EQ(in.background, c.bg) << c.prompt;
    EXPECT_EQ(in.shape, c.shape) << c.prompt;
    EXPECT_EQ(in.position, c.pos) << c.prompt;
  }
}

// Every colour pair, shape, size and position, at the demo's size and at twice it.
TEST(ImageScorerTest, ReadsTheDatasetsOwnPicturesRight) {
  for (int size : {64, 128}) {
    ShapesDataset data(5, size);
    std::mt19937_64 rng(9);
    int total = 0, colour_ok = 0, shape_ok = 0, pos_ok = 0, size_ok = 0;
    const int colours = static_cast<int>(Palette().size());
    for (int fg = 0; fg < colours; ++fg) {
      for (int bg = 0; bg < colours; ++bg) {
        if (fg == bg) continue;
        for (int k = 0; k < 6; ++k) {
          const Shape shape = static_cast<Shape>(k % 3);
          const Size sz = static_cast<Size>((k + fg) % 3);
          const Position pos = static_cast<Position>((k + bg + fg) % 6);
          const Scene sc = data.RandomScene(fg, bg, shape, sz, pos);
          const std::vector<uint8_t> px = Render(sc, size, 2.5, rng);
          const ImageScore s = ScoreImage(px, size, size);
          ++total;
          colour_ok += s.foreground == fg && s.background == bg;
          shape_ok += s.shape == shape;
          pos_ok += PositionMatches(pos, s);
          const double want = sc.radius;
          size_ok += std::abs(s.radius - want) < 0.03;
          if (s.shape != shape || !PositionMatches(pos, s)) {
            ADD_FAILURE() << "drew " << Palette()[fg].name << " " << ShapeName(shape) << " on "
                          << Palette()[bg].name << " at (" << sc.cx << ", " << sc.cy << ") r "
                          << sc.radius << " tilt " << sc.rotation << "; read " << s.Describe();
          }
        }
      }
    }
    EXPECT_EQ(colour_ok, total) << size;
    EXPECT_EQ(shape_ok, total) << size;
    EXPECT_EQ(pos_ok, total) << size;
    EXPECT_GE(size_ok, total * 95 / 100) << size;
  }
}

TEST(ImageScorerTest, AFlatImageHasNoForeground) {
  std::vector<uint8_t> px(64 * 64 * 3);
  for (size_t i = 0; i < px.size(); i += 3) px[i] = 220, px[i + 1] = 40, px[i + 2] = 40;
  const ImageScore s = ScoreImage(px, 64, 64);
  EXPECT_EQ(s.background, ColourIndex("red"));
  EXPECT_EQ(s.foreground, -1);
  EXPECT_FALSE(s.shape.has_value());
}

}  // namespace
}  // namespace sd::demo
