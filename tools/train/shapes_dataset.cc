#include "tools/train/shapes_dataset.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace sd::demo {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kMaxTilt = 8.0 * kPi / 180.0;  // squares and triangles turn by up to this
constexpr double kEdgeMargin = 0.06;            // of the width, between a shape and the border

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}
int Pick(std::mt19937_64& rng, int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
bool Chance(std::mt19937_64& rng, double p) { return Uniform(rng, 0, 1) < p; }

// Whether the point (x, y), in units of the shape's radius around its centre, unrotated, is inside.
bool Inside(Shape shape, double x, double y) {
  switch (shape) {
    case Shape::kCircle:
      return x * x + y * y <= 1.0;
    case Shape::kSquare:
      return std::abs(x) <= 0.9 && std::abs(y) <= 0.9;
    case Shape::kTriangle: {
      // Equilateral, pointing up, circumradius 1.15, centred on its centroid (y grows downwards).
      constexpr double r = 1.15, s3 = 1.7320508075688772;
      if (y > r / 2) return false;
      // The two slanted edges: from the apex (0, -r) to (+-r*s3/2, r/2).
      return s3 * std::abs(x) <= y + r;
    }
  }
  return false;
}

// A scene's shape in pixels, with its rotation's cosine and sine worked out once per picture.
struct ShapeInPixels {
  ShapeInPixels(const Scene& scene, int size)
      : shape(scene.shape),
        radius(scene.radius * size),
        cx(scene.cx * size),
        cy(scene.cy * size),
        c(std::cos(scene.rotation)),
        s(std::sin(scene.rotation)) {}

  // The share of pixel (x, y) the shape covers (4x4 supersampling).
  double Coverage(int x, int y) const {
    constexpr int kSub = 4;
    int hits = 0;
    for (int sy = 0; sy < kSub; ++sy) {
      for (int sx = 0; sx < kSub; ++sx) {
        const double px = x + (sx + 0.5) / kSub - cx, py = y + (sy + 0.5) / kSub - cy;
        // Into the shape's own frame: undo the rotation, scale by the radius.
        const double u = (c * px + s * py) / radius, v = (-s * px + c * py) / radius;
        hits += Inside(shape, u, v) ? 1 : 0;
      }
    }
    return hits / double(kSub * kSub);
  }

  Shape shape;
  double radius, cx, cy, c, s;
};

// A rectangle in fractions of the width: [x0, x1) x [y0, y1).
struct Box {
  double x0, y0, x1, y1;
  Box Union(const Box& o) const {
    return {std::min(x0, o.x0), std::min(y0, o.y0), std::max(x1, o.x1), std::max(y1, o.y1)};
  }
  bool Overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

Box AroundShape(const Scene& sc, double margin) {
  const double e = Extent(sc) + margin;
  return {std::max(0.0, sc.cx - e), std::max(0.0, sc.cy - e), std::min(1.0, sc.cx + e),
          std::min(1.0, sc.cy + e)};
}

Box HalfAt(Position side) {
  switch (side) {
    case Position::kLeft:
      return {0, 0, 0.5, 1};
    case Position::kRight:
      return {0.5, 0, 1, 1};
    case Position::kTop:
      return {0, 0, 1, 0.5};
    default:
      return {0, 0.5, 1, 1};
  }
}

Position Opposite(Position side) {
  switch (side) {
    case Position::kLeft:
      return Position::kRight;
    case Position::kRight:
      return Position::kLeft;
    case Position::kTop:
      return Position::kBottom;
    default:
      return Position::kTop;
  }
}

}  // namespace

std::string Article(const std::string& next_word) {
  return !next_word.empty() && std::string("aeiou").find(next_word[0]) != std::string::npos ? "an"
                                                                                            : "a";
}

const std::vector<Colour>& Palette() {
  static const std::vector<Colour> palette = {
      {"red", {220, 40, 40}},     {"green", {40, 170, 60}},   {"blue", {40, 80, 220}},
      {"yellow", {240, 220, 40}}, {"orange", {245, 140, 30}}, {"purple", {140, 60, 200}},
      {"white", {245, 245, 245}}, {"black", {20, 20, 20}},
  };
  return palette;
}

int ColourIndex(const std::string& word) {
  const auto& p = Palette();
  for (size_t i = 0; i < p.size(); ++i) {
    if (word == p[i].name) return static_cast<int>(i);
  }
  return -1;
}

const char* ShapeName(Shape s) {
  switch (s) {
    case Shape::kCircle:
      return "circle";
    case Shape::kSquare:
      return "square";
    case Shape::kTriangle:
      return "triangle";
  }
  return "shape";
}

std::optional<Shape> ShapeFromName(const std::string& word) {
  for (Shape s : {Shape::kCircle, Shape::kSquare, Shape::kTriangle}) {
    if (word == ShapeName(s)) return s;
  }
  return std::nullopt;
}

const char* PositionPhrase(Position p) {
  switch (p) {
    case Position::kAnywhere:
      return "";
    case Position::kLeft:
      return "on the left";
    case Position::kRight:
      return "on the right";
    case Position::kTop:
      return "at the top";
    case Position::kBottom:
      return "at the bottom";
    case Position::kMiddle:
      return "in the middle";
  }
  return "";
}

const std::vector<HeldOutTriple>& HeldOut() {
  // red 0, green 1, blue 2, yellow 3, orange 4, purple 5, white 6, black 7
  static const std::vector<HeldOutTriple> held = {
      {1, 5, Shape::kSquare},    // green square on purple
      {3, 2, Shape::kTriangle},  // yellow triangle on blue
      {4, 6, Shape::kCircle},    // orange circle on white
      {2, 3, Shape::kCircle},    // blue circle on yellow
      {5, 4, Shape::kTriangle},  // purple triangle on orange
      {6, 0, Shape::kSquare},    // white square on red
      {7, 1, Shape::kCircle},    // black circle on green
      {0, 7, Shape::kTriangle},  // red triangle on black
  };
  return held;
}

bool IsHeldOut(int foreground, Shape shape, int background) {
  for (const HeldOutTriple& h : HeldOut()) {
    if (h.foreground == foreground && h.background == background && h.shape == shape) return true;
  }
  return false;
}

double NominalRadius(Size s) {
  switch (s) {
    case Size::kSmall:
      return 0.12;
    case Size::kMedium:
      return 0.19;
    case Size::kLarge:
      return 0.28;
  }
  return 0.19;
}

std::string Caption(const Scene& scene, const Mentions& m, int phrasing) {
  const std::string fg = Palette()[scene.foreground].name, bg = Palette()[scene.background].name;
  const std::string shape = m.shape ? ShapeName(scene.shape) : "shape";
  std::string size;
  if (m.size && scene.size == Size::kSmall) size = "small ";
  if (m.size && scene.size == Size::kLarge) size = "large ";
  const std::string pos = m.position && scene.position != Position::kAnywhere
                              ? std::string(" ") + PositionPhrase(scene.position)
                              : std::string();
  const std::string bare = size + fg + " " + shape;   // "small red circle"
  const std::string np = Article(bare) + " " + bare;  // "a small red circle"
  const int p = ((phrasing % 4) + 4) % 4;
  if (!m.background) return p % 2 == 0 ? np + pos : bare + pos;
  switch (p) {
    case 0:
      return np + pos + " on " + Article(bg) + " " + bg + " background";
    case 1:
      return bare + pos + ", " + bg + " background";
    case 2:
      return Article(bg) + " " + bg + " background with " + np + pos;
    default:
      return np + pos + " on " + bg;
  }
}

Stated StatedBy(const Scene& scene, const Mentions& m) {
  Stated s = StatedByNothing();
  s[0] = scene.foreground;
  if (m.background) s[1] = scene.background;
  if (m.shape) s[2] = static_cast<int>(scene.shape);
  if (m.size) s[3] = static_cast<int>(scene.size);
  if (m.position) s[4] = static_cast<int>(scene.position);
  return s;
}

Stated StatedByNothing() {
  const int colours = static_cast<int>(Palette().size());
  return {colours, colours, kShapeCount, static_cast<int>(Size::kMedium),
          static_cast<int>(Position::kAnywhere)};
}

std::vector<uint8_t> Render(const Scene& scene, int size, double noise_sigma,
                            std::mt19937_64& rng) {
  return Render(std::vector<Scene>{scene}, size, noise_sigma, rng);
}

std::vector<uint8_t> Render(const std::vector<Scene>& scenes, int size, double noise_sigma,
                            std::mt19937_64& rng) {
  const auto& bg = Palette()[scenes.at(0).background].rgb;
  std::normal_distribution<double> noise(0.0, noise_sigma);
  std::vector<uint8_t> out(static_cast<size_t>(size) * size * 3);
  std::vector<ShapeInPixels> shapes;
  for (const Scene& scene : scenes) shapes.emplace_back(scene, size);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      std::array<double, 3> value = {double(bg[0]), double(bg[1]), double(bg[2])};
      for (size_t i = 0; i < scenes.size(); ++i) {
        const double a = shapes[i].Coverage(x, y);
        const auto& fg = Palette()[scenes[i].foreground].rgb;
        for (int ch = 0; ch < 3; ++ch) value[ch] = a * fg[ch] + (1 - a) * value[ch];
      }
      for (int ch = 0; ch < 3; ++ch) {
        const double v = value[ch] + (noise_sigma > 0 ? noise(rng) : 0.0);
        out[(static_cast<size_t>(y) * size + x) * 3 + ch] =
            static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
  return out;
}

double Extent(const Scene& scene) {
  // A square's half-diagonal is 0.9 * sqrt(2) = 1.27 radii; a triangle's circumradius 1.15.
  return scene.radius * (scene.shape == Shape::kCircle ? 1.0 : 1.3);
}

Scene ShapesDataset::RandomScene(int foreground, int background, std::optional<Shape> shape,
                                 std::optional<Size> size, Position position) {
  const int colours = static_cast<int>(Palette().size());
  Scene sc;
  for (;;) {
    sc.foreground = foreground >= 0 ? foreground : Pick(rng_, colours);
    sc.background = background >= 0 ? background : Pick(rng_, colours);
    sc.shape = shape ? *shape : static_cast<Shape>(Pick(rng_, kShapeCount));
    if (sc.foreground == sc.background) {
      if (foreground >= 0 && background >= 0) break;  // the caller's choice; nothing to redraw
      continue;
    }
    if (!IsHeldOut(sc.foreground, sc.shape, sc.background)) break;
    if (foreground >= 0 && background >= 0 && shape) break;  // a held-out triple asked for by name
  }
  sc.size = size ? *size : static_cast<Size>(Pick(rng_, 3));
  sc.position = position;
  sc.radius = NominalRadius(sc.size) * Uniform(rng_, 0.9, 1.1);
  sc.rotation = sc.shape == Shape::kCircle ? 0.0 : Uniform(rng_, -kMaxTilt, kMaxTilt);
  const double lo = sc.radius + kEdgeMargin, hi = 1.0 - lo;
  const double side =
      std::max(0.25, lo);  // the centre of a shape "on the left" (clear of the edge)
  auto along = [&] { return Uniform(rng_, 0.42, 0.58); };
  switch (position) {
    case Position::kAnywhere:
      sc.cx = Uniform(rng_, lo, hi);
      sc.cy = Uniform(rng_, lo, hi);
      break;
    case Position::kLeft:
      sc.cx = side + Uniform(rng_, 0, 0.04), sc.cy = along();
      break;
    case Position::kRight:
      sc.cx = 1 - side - Uniform(rng_, 0, 0.04), sc.cy = along();
      break;
    case Position::kTop:
      sc.cy = side + Uniform(rng_, 0, 0.04), sc.cx = along();
      break;
    case Position::kBottom:
      sc.cy = 1 - side - Uniform(rng_, 0, 0.04), sc.cx = along();
      break;
    case Position::kMiddle:
      sc.cx = Uniform(rng_, 0.46, 0.54), sc.cy = Uniform(rng_, 0.46, 0.54);
      break;
  }
  return sc;
}

ShapeSample ShapesDataset::Next() {
  ShapeSample s;
  // Half of the pictures have a stated position, the rest are placed anywhere clear of the edges.
  const Position pos =
      Chance(rng_, 0.5) ? static_cast<Position>(1 + Pick(rng_, 5)) : Position::kAnywhere;
  s.scene = RandomScene(-1, -1, std::nullopt, std::nullopt, pos);
  s.mentions.shape = Chance(rng_, 0.9);
  s.mentions.background = Chance(rng_, 0.8);
  s.mentions.size = true;      // a caption without a size means medium
  s.mentions.position = true;  // without a position, anywhere
  s.caption = Caption(s.scene, s.mentions, Pick(rng_, 4));
  s.rgb = Render(s.scene, size_, /*noise_sigma=*/2.5, rng_);
  return s;
}

InpaintSample ShapesDataset::NextInpainting() {
  InpaintSample s;
  const double kind = Uniform(rng_, 0, 1);
  Mentions m;
  m.shape = Chance(rng_, 0.9);
  m.background = Chance(rng_, 0.8);
  m.size = true;      // as Next(): no size word means medium
  m.position = true;  // and no position means anywhere
  Box region{0, 0, 1, 1};
  std::optional<Position> other_side;  // where a second shape goes (nullopt: anywhere it fits)
  if (kind < 0.15) {
    const Position pos =
        Chance(rng_, 0.5) ? static_cast<Position>(1 + Pick(rng_, 5)) : Position::kAnywhere;
    s.scene = RandomScene(-1, -1, std::nullopt, std::nullopt, pos);
  } else if (kind < 0.70) {
    const Position side = static_cast<Position>(1 + Pick(rng_, 4));  // left, right, top, bottom
    s.scene = RandomScene(-1, -1, std::nullopt, std::nullopt, side);
    region = HalfAt(side).Union(AroundShape(s.scene, 0.03));
    other_side = Opposite(side);
    m.position = Chance(rng_, 0.6);  // the mask says where; the caption may too
  } else {
    const Position pos =
        Chance(rng_, 0.5) ? static_cast<Position>(1 + Pick(rng_, 5)) : Position::kAnywhere;
    s.scene = RandomScene(-1, -1, std::nullopt, std::nullopt, pos);
    region = AroundShape(s.scene, Uniform(rng_, 0.04, 0.2));
  }
  s.caption = Caption(s.scene, m, Pick(rng_, 4));
  if (kind >= 0.15 && Chance(rng_, 0.75)) {
    for (int attempt = 0; attempt < 8; ++attempt) {
      const Size size = Chance(rng_, 0.7) ? Size::kSmall : Size::kMedium;
      const Scene other = RandomScene(-1, s.scene.background, std::nullopt, size,
                                      other_side.value_or(Position::kAnywhere));
      if (!AroundShape(other, 0.02).Overlaps(region)) {
        s.others.push_back(other);
        break;
      }
    }
  }
  std::vector<Scene> scenes = s.others;
  scenes.push_back(s.scene);
  s.rgb = Render(scenes, size_, /*noise_sigma=*/2.5, rng_);
  s.mask.assign(static_cast<size_t>(size_) * size_, 0);
  for (int y = 0; y < size_; ++y) {
    for (int x = 0; x < size_; ++x) {
      const double fx = (x + 0.5) / size_, fy = (y + 0.5) / size_;
      s.mask[static_cast<size_t>(y) * size_ + x] =
          fx >= region.x0 && fx < region.x1 && fy >= region.y0 && fy < region.y1;
    }
  }
  return s;
}

}  // namespace sd::demo
