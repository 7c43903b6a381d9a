#include "tests/semantic/image_scorer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>

namespace sd::demo {
namespace {

constexpr double kPi = 3.14159265358979323846;

using Rgb = std::array<double, 3>;

double Distance(const Rgb& a, const Rgb& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) +
                   (a[2] - b[2]) * (a[2] - b[2]));
}

Rgb PaletteRgb(int i) {
  const auto& c = Palette()[i].rgb;
  return {double(c[0]), double(c[1]), double(c[2])};
}

Rgb Median(std::vector<Rgb> v) {
  Rgb m{};
  if (v.empty()) return m;
  for (int ch = 0; ch < 3; ++ch) {
    auto mid = v.begin() + v.size() / 2;
    std::nth_element(v.begin(), mid, v.end(),
                     [ch](const Rgb& a, const Rgb& b) { return a[ch] < b[ch]; });
    m[ch] = (*mid)[ch];
  }
  return m;
}

// The largest 4-connected region of `mask` (w*h), as a mask.
std::vector<uint8_t> LargestRegion(const std::vector<uint8_t>& mask, int w, int h) {
  std::vector<int> label(mask.size(), -1);
  std::vector<int> sizes;
  std::vector<int> stack;
  for (int start = 0; start < w * h; ++start) {
    if (!mask[start] || label[start] >= 0) continue;
    const int id = static_cast<int>(sizes.size());
    sizes.push_back(0);
    stack.push_back(start);
    label[start] = id;
    while (!stack.empty()) {
      const int p = stack.back();
      stack.pop_back();
      ++sizes[id];
      const int x = p % w, y = p / w;
      const int next[4][2] = {{x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}};
      for (const auto& n : next) {
        if (n[0] < 0 || n[0] >= w || n[1] < 0 || n[1] >= h) continue;
        const int q = n[1] * w + n[0];
        if (mask[q] && label[q] < 0) {
          label[q] = id;
          stack.push_back(q);
        }
      }
    }
  }
  std::vector<uint8_t> out(mask.size(), 0);
  if (sizes.empty()) return out;
  const int best = static_cast<int>(std::max_element(sizes.begin(), sizes.end()) - sizes.begin());
  for (size_t i = 0; i < out.size(); ++i) out[i] = label[i] == best ? 1 : 0;
  return out;
}

// The area of a shape of drawing radius 1 (shapes_dataset.cc): circle pi, square 1.8^2, triangle
// (3 sqrt 3 / 4) 1.15^2.
double UnitArea(Shape s) {
  switch (s) {
    case Shape::kCircle:
      return kPi;
    case Shape::kSquare:
      return 1.8 * 1.8;
    case Shape::kTriangle:
      return 1.299038105676658 * 1.15 * 1.15;
  }
  return kPi;
}

}  // namespace

int NearestPaletteColour(double r, double g, double b) {
  const Rgb c{r, g, b};
  int best = 0;
  for (int i = 1; i < static_cast<int>(Palette().size()); ++i) {
    if (Distance(c, PaletteRgb(i)) < Distance(c, PaletteRgb(best))) best = i;
  }
  return best;
}

std::string ImageScore::Describe() const {
  std::ostringstream s;
  s << (foreground >= 0 ? Palette()[foreground].name : "nothing") << " "
    << (shape ? ShapeName(*shape) : "?") << " on "
    << (background >= 0 ? Palette()[background].name : "?") << " at (" << cx << ", " << cy
    << ") radius " << radius << " spread " << spread << " coverage " << coverage;
  return s.str();
}

ImageScore ScoreImage(const uint8_t* rgb, int w, int h) {
  ImageScore s;
  auto px = [&](int x, int y) {
    const uint8_t* p = rgb + (static_cast<size_t>(y) * w + x) * 3;
    return Rgb{double(p[0]), double(p[1]), double(p[2])};
  };
  std::vector<Rgb> border;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      if (x < 2 || y < 2 || x >= w - 2 || y >= h - 2) border.push_back(px(x, y));
    }
  }
  const Rgb bg = Median(border);
  s.background = NearestPaletteColour(bg[0], bg[1], bg[2]);
  // First guess: pixels far from the background; their interior's median is the foreground colour.
  std::vector<uint8_t> mask(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) mask[y * w + x] = Distance(px(x, y), bg) > 60 ? 1 : 0;
  }
  mask = LargestRegion(mask, w, h);
  std::vector<Rgb> inside, all;
  for (int y = 1; y < h - 1; ++y) {
    for (int x = 1; x < w - 1; ++x) {
      if (!mask[y * w + x]) continue;
      all.push_back(px(x, y));
      if (mask[y * w + x - 1] && mask[y * w + x + 1] && mask[(y - 1) * w + x] &&
          mask[(y + 1) * w + x]) {
        inside.push_back(px(x, y));
      }
    }
  }
  if (all.size() < 4) return s;
  const Rgb fg = Median(inside.size() >= 4 ? inside : all);
  s.foreground = NearestPaletteColour(fg[0], fg[1], fg[2]);
  // The shape: pixels nearer the foreground colour than the background's (the antialiased edge's
  // midpoint).
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x)
      mask[y * w + x] = Distance(px(x, y), fg) < Distance(px(x, y), bg) ? 1 : 0;
  }
  mask = LargestRegion(mask, w, h);
  double area = 0, sx = 0, sy = 0;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      if (!mask[y * w + x]) continue;
      area += 1;
      sx += x + 0.5;
      sy += y + 0.5;
    }
  }
  if (area < 4) return s;
  const double cx = sx / area, cy = sy / area;
  double far = 0;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      if (mask[y * w + x]) far = std::max(far, std::hypot(x + 0.5 - cx, y + 0.5 - cy));
    }
  }
  s.cx = cx / w;
  s.cy = cy / h;
  s.coverage = area / (double(w) * h);
  // The farthest pixel centre lies about half a pixel inside the true outline.
  s.spread = (far + 0.5) / std::sqrt(area / kPi);
  s.shape = s.spread < 1.12 ? Shape::kCircle : s.spread < 1.40 ? Shape::kSquare : Shape::kTriangle;
  s.radius = std::sqrt(area / UnitArea(*s.shape)) / w;
  return s;
}

bool PositionMatches(Position p, const ImageScore& s) {
  switch (p) {
    case Position::kAnywhere:
      return true;
    case Position::kLeft:
      return s.cx < 0.45;
    case Position::kRight:
      return s.cx > 0.55;
    case Position::kTop:
      return s.cy < 0.45;
    case Position::kBottom:
      return s.cy > 0.55;
    case Position::kMiddle:
      return std::abs(s.cx - 0.5) < 0.1 && std::abs(s.cy - 0.5) < 0.1;
  }
  return false;
}

PromptIntent ParseIntent(const std::string& prompt) {
  std::vector<std::string> words;
  std::string w;
  for (char c : prompt + " ") {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!w.empty()) {
      words.push_back(w);
      w.clear();
    }
  }
  PromptIntent in;
  std::vector<int> colours;
  for (size_t i = 0; i < words.size(); ++i) {
    const int c = ColourIndex(words[i]);
    if (c >= 0) {
      const bool named_background = i + 1 < words.size() && words[i + 1] == "background";
      const bool after_on =
          (i >= 1 && words[i - 1] == "on") ||
          (i >= 2 && words[i - 2] == "on" && (words[i - 1] == "a" || words[i - 1] == "an"));
      if (named_background || after_on)
        in.background = c;
      else if (in.foreground < 0)
        in.foreground = c;
    }
    if (auto s = ShapeFromName(words[i])) in.shape = s;
    if (words[i] == "small") in.size = Size::kSmall;
    if (words[i] == "large") in.size = Size::kLarge;
    const std::string two = i + 1 < words.size() ? words[i] + " " + words[i + 1] : "";
    if (two == "the left") in.position = Position::kLeft;
    if (two == "the right") in.position = Position::kRight;
    if (two == "the top") in.position = Position::kTop;
    if (two == "the bottom") in.position = Position::kBottom;
    if (two == "the middle" || two == "the center" || two == "the centre")
      in.position = Position::kMiddle;
  }
  return in;
}

}  // namespace sd::demo
