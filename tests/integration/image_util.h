// 8-bit RGB images for integration tests, through OpenImageIO (no LibTorch needed).
#pragma once

#include <OpenImageIO/imageio.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace sd::testing {

struct Rgb8 {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // RGB, row-major
};

inline Rgb8 ReadRgb8(const std::string& path) {
  Rgb8 img;
  auto in = OIIO::ImageInput::open(path);
  if (!in) return img;
  const OIIO::ImageSpec& spec = in->spec();
  img.width = spec.width;
  img.height = spec.height;
  std::vector<uint8_t> all(static_cast<size_t>(spec.width) * spec.height * spec.nchannels);
  in->read_image(0, 0, 0, spec.nchannels, OIIO::TypeDesc::UINT8, all.data());
  img.pixels.resize(static_cast<size_t>(spec.width) * spec.height * 3);
  for (size_t p = 0; p < static_cast<size_t>(spec.width) * spec.height; ++p) {
    for (int c = 0; c < 3; ++c)
      img.pixels[p * 3 + c] = all[p * spec.nchannels + std::min(c, spec.nchannels - 1)];
  }
  return img;
}

inline bool WriteRgb8(const std::string& path, const Rgb8& img) {
  auto out = OIIO::ImageOutput::create(path);
  if (!out) return false;
  OIIO::ImageSpec spec(img.width, img.height, 3, OIIO::TypeDesc::UINT8);
  return out->open(path, spec) && out->write_image(OIIO::TypeDesc::UINT8, img.pixels.data()) &&
         out->close();
}

// Largest per-channel difference (-1 when the sizes differ or an image is missing).
inline int MaxDiff(const Rgb8& a, const Rgb8& b) {
  if (a.width != b.width || a.height != b.height || a.pixels.empty()) return -1;
  int m = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i)
    m = std::max(m, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return m;
}

}  // namespace sd::testing
