// A deterministic analyser of demo-model pictures: what one flat shape on a flat background shows.
//   - background colour: the median of the border pixels, named by the nearest palette colour;
//   - foreground: the pixels far from the background colour, their largest connected region; its
//   colour
//     is the median of its interior pixels (edges blend with the background), named the same way;
//   - shape: from the region's mask, how far its farthest pixel lies from the centroid relative to
//   the
//     radius of a disc of the same area (circle ~1, square ~1.25, triangle ~1.55);
//   - centroid and size (the radius the shape would be drawn with), as fractions of the width.
// Torch-free; knows the palette and the shapes from tools/train/shapes_dataset.h and nothing of the
// model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/train/shapes_dataset.h"

namespace sd::demo {

struct ImageScore {
  int background = -1;  // Palette() index
  int foreground = -1;  // -1: no foreground found
  std::optional<Shape> shape;
  double cx = 0, cy = 0;  // centroid, fractions of width and height
  double radius = 0;      // estimated drawing radius, fraction of the width
  double coverage = 0;    // foreground pixels / all pixels
  double spread = 0;      // max distance from the centroid / equal-area disc radius
  std::string Describe() const;
};

// The Palette() index of the colour nearest to (r, g, b) (Euclidean in sRGB).
int NearestPaletteColour(double r, double g, double b);

// rgb: width*height*3 bytes, row-major.
ImageScore ScoreImage(const uint8_t* rgb, int width, int height);
inline ImageScore ScoreImage(const std::vector<uint8_t>& rgb, int width, int height) {
  return ScoreImage(rgb.data(), width, height);
}

// Whether the centroid lies where `p` says ("on the left": left of 0.45 of the width, "in the
// middle": within 0.1 of the centre); true for kAnywhere.
bool PositionMatches(Position p, const ImageScore& s);

// What a prompt in the dataset's vocabulary asks for: the words it contains (colours in order of
// mention: the first is the foreground unless it is the one named with "background" or after "on").
struct PromptIntent {
  int foreground = -1, background = -1;
  std::optional<Shape> shape;
  std::optional<Size> size;
  Position position = Position::kAnywhere;
};
PromptIntent ParseIntent(const std::string& prompt);

}  // namespace sd::demo
