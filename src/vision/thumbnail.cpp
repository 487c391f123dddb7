#include "vision/thumbnail.h"

#include <webp/encode.h>

#include <algorithm>
#include <cmath>

#include "clipkit/error.h"

namespace clipkit::vision {

void thumbnail_size(int width, int height, int side, int* out_width, int* out_height) {
  const int longest = std::max(width, height);
  if (longest <= side) {
    *out_width = width;
    *out_height = height;
    return;
  }
  const double scale = static_cast<double>(side) / longest;
  *out_width = width >= height ? side : std::max(1, static_cast<int>(std::lround(width * scale)));
  *out_height = height > width ? side : std::max(1, static_cast<int>(std::lround(height * scale)));
}

std::string encode_thumbnail(const Image& image, int side) {
  Image src = image.mode == PixelMode::RGBA || image.mode == PixelMode::RGB ? image : convert_to_rgb(image);
  int w = 0, h = 0;
  thumbnail_size(src.width, src.height, side, &w, &h);
  if (w != src.width || h != src.height) src = resize_image(src, w, h, Interpolation::Bicubic);
  uint8_t* out = nullptr;
  const size_t n = src.mode == PixelMode::RGBA ? WebPEncodeRGBA(src.pixels.data(), w, h, w * 4, 82.0f, &out)
                                               : WebPEncodeRGB(src.pixels.data(), w, h, w * 3, 82.0f, &out);
  if (n == 0 || !out) {
    if (out) WebPFree(out);
    throw Error(ErrorCode::Internal, "cannot encode a " + std::to_string(w) + "x" + std::to_string(h) + " thumbnail as WebP");
  }
  std::string bytes(reinterpret_cast<const char*>(out), n);
  WebPFree(out);
  return bytes;
}

}  // namespace clipkit::vision
