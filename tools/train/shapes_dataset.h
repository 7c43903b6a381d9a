// The demo model's training data: one flat shape on a flat background with a caption, drawn on the
// fly and deterministic from a seed (nothing is stored). The vocabulary is fixed so that what a
// picture shows can be checked against its prompt: eight colours with fixed sRGB values, three
// shapes, an optional size and an optional position. Some colour x shape x background triples never
// appear in training (HeldOut()): tests prompt for them to see that the model composes what it
// learnt rather than recalling pictures.
//
//   ShapesDataset data(/*seed=*/7, /*size=*/64);
//   ShapeSample s = data.Next();   // s.rgb: 64*64*3 bytes, s.caption: "a small red circle on the
//   left ..."
//
// Torch-free: the trainer, the image scorer and the tests all use it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace sd::demo {

struct Colour {
  const char* name;
  std::array<uint8_t, 3> rgb;
};
// red, green, blue, yellow, orange, purple, white, black: the sRGB values.
const std::vector<Colour>& Palette();
// Index into Palette() of a colour word; -1 when it is not one.
int ColourIndex(const std::string& word);

enum class Shape { kCircle = 0, kSquare = 1, kTriangle = 2 };
inline constexpr int kShapeCount = 3;
const char* ShapeName(Shape s);
std::optional<Shape> ShapeFromName(const std::string& word);

enum class Size { kSmall = 0, kMedium = 1, kLarge = 2 };
enum class Position { kAnywhere = 0, kLeft, kRight, kTop, kBottom, kMiddle };
const char* PositionPhrase(Position p);  // "on the left", ...; "" for kAnywhere

// What a picture shows (and a caption may state).
struct Scene {
  int foreground = 0;  // Palette() index
  int background = 1;  // Palette() index, != foreground
  Shape shape = Shape::kCircle;
  Size size = Size::kMedium;
  Position position = Position::kAnywhere;
  double cx = 0.5, cy = 0.5;  // centre, as fractions of the width and height
  double radius = 0.2;        // half the shape's extent, as a fraction of the width
  double rotation = 0;        // radians (squares and triangles)
};

// Which parts of the scene a caption names.
struct Mentions {
  bool shape = true, background = true, size = false, position = false;
};

struct HeldOutTriple {
  int foreground, background;
  Shape shape;
};
// What a caption states, one class per attribute: foreground colour, background colour, shape,
// size, position (the trainer's caption heads learn to read these from the text encoder). The
// last class of the colours and the shape means "not stated"; size is small, medium (no size word)
// or large; position is the Position value (kAnywhere: not stated).
inline constexpr std::array<int, 5> kStatedClasses = {9, 9, 4, 3, 6};
using Stated = std::array<int, 5>;
// What Caption(scene, m, any phrasing) states.
Stated StatedBy(const Scene& scene, const Mentions& m);
// What the empty prompt states: nothing.
Stated StatedByNothing();

// Triples that training never draws (as a picture, whatever its caption says).
const std::vector<HeldOutTriple>& HeldOut();
bool IsHeldOut(int foreground, Shape shape, int background);

// Nominal radius fraction of a size, and the nominal centre of a position (for kAnywhere: none).
double NominalRadius(Size s);

// "a" or "an" before `next_word`.
std::string Article(const std::string& next_word);

// A caption for `scene` naming what `m` says, in one of several phrasings chosen by `phrasing`
// (any integer; taken modulo the number of phrasings that fit `m`).
std::string Caption(const Scene& scene, const Mentions& m, int phrasing);

// Draws `scene` at size x size: flat colours, antialiased edges (4x4 supersampling), then Gaussian
// noise of `noise_sigma` levels from `rng`. Returns size*size*3 bytes, row-major RGB.
std::vector<uint8_t> Render(const Scene& scene, int size, double noise_sigma, std::mt19937_64& rng);
// Several shapes on the first scene's background, each drawn over the ones before it.
std::vector<uint8_t> Render(const std::vector<Scene>& scenes, int size, double noise_sigma,
                            std::mt19937_64& rng);

// Half the side of the square around a shape (as a fraction of the width): the corners of a turned
// square and a triangle's apex included.
double Extent(const Scene& scene);

struct ShapeSample {
  std::vector<uint8_t> rgb;  // size*size*3
  std::string caption;
  Scene scene;
  Mentions mentions;
};

// A training sample for an inpainting model: a picture, the region to repaint (a rectangle) and a
// caption of what the region shows. The caption's shape lies inside the region; a second,
// uncaptioned shape often lies outside it, so that the model learns that the prompt speaks of the
// region and that what is outside stays.
struct InpaintSample {
  std::vector<uint8_t> rgb;   // size*size*3
  std::vector<uint8_t> mask;  // size*size: 1 = repaint
  std::string caption;
  Scene scene;                // the captioned shape
  std::vector<Scene> others;  // shapes outside the region (none or one)
};

class ShapesDataset {
 public:
  ShapesDataset(uint64_t seed, int size) : rng_(seed), size_(size) {}
  // The next sample: a random scene (never a held-out triple), a caption naming a random subset of
  // its parts, in a random phrasing.
  ShapeSample Next();
  // The next inpainting sample. The region is one of: the whole picture (15%: plain text-to-image),
  // a half of it (left, right, top or bottom, 55%) or a square around the shape (30%); in both
  // latter kinds it is widened to hold the whole shape, and three in four of them try to place a
  // second shape outside it (eight tries; about 30% of all samples end up with one).
  InpaintSample NextInpainting();
  // A scene whose free parts are drawn at random: colours, shape, size and placement that the
  // caption does not fix. `foreground`/`background` -1 and no shape/size/position mean "any".
  Scene RandomScene(int foreground, int background, std::optional<Shape> shape,
                    std::optional<Size> size, Position position);
  int size() const { return size_; }

 private:
  std::mt19937_64 rng_;
  int size_;
};

}  // namespace sd::demo
