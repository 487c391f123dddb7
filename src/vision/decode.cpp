// Format detection and the decode entry points.
#include <cstring>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "core/mapped_file.h"
#include "vision/decode_hook.h"
#include "vision/internal.h"

namespace clipkit {
namespace vision {

ImageFormat detect_format(const uint8_t* d, size_t n) {
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageFormat::Jpeg;
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::Png;
  if (n >= 6 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0)) return ImageFormat::Gif;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return ImageFormat::Webp;
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return ImageFormat::Bmp;
  return ImageFormat::Unknown;
}

namespace {
thread_local const std::function<void(int64_t, int64_t)>* t_dimension_hook = nullptr;
}  // namespace

ScopedDimensionHook::ScopedDimensionHook(std::function<void(int64_t, int64_t)> hook)
    : hook_(std::move(hook)), previous_(t_dimension_hook) {
  t_dimension_hook = &hook_;
}

ScopedDimensionHook::~ScopedDimensionHook() { t_dimension_hook = previous_; }

void check_dimensions(int64_t width, int64_t height, const std::string& name, const DecodeOptions& options) {
  if (width <= 0 || height <= 0)
    throw Error(ErrorCode::Format, name + ": image has zero size (" + std::to_string(width) + "x" +
                                       std::to_string(height) + ")");
  const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  if (width > 0x7FFFFFFF || height > 0x7FFFFFFF || pixels > options.max_pixels)
    throw Error(ErrorCode::Limit, name + ": image is " + std::to_string(width) + "x" + std::to_string(height) +
                                      " = " + std::to_string(pixels) + " pixels, above the limit of " +
                                      std::to_string(options.max_pixels));
  if (t_dimension_hook && *t_dimension_hook) (*t_dimension_hook)(width, height);
}

void allocate_pixels(Image& img) {
  const size_t n = static_cast<size_t>(img.width) * static_cast<size_t>(img.height);
  if (img.mode == PixelMode::I)
    img.pixels32.assign(n, 0);
  else
    img.pixels.assign(n * pixel_mode_channels(img.mode), 0);
}

int exif_orientation_from_tiff(const uint8_t* t, size_t n) {
  if (n < 8) return 0;
  bool le;
  if (t[0] == 'I' && t[1] == 'I') le = true;
  else if (t[0] == 'M' && t[1] == 'M') le = false;
  else return 0;
  auto u16 = [&](size_t off) -> unsigned {
    return le ? (t[off] | (t[off + 1] << 8)) : ((t[off] << 8) | t[off + 1]);
  };
  auto u32 = [&](size_t off) -> uint32_t {
    return le ? (uint32_t(t[off]) | (uint32_t(t[off + 1]) << 8) | (uint32_t(t[off + 2]) << 16) |
                 (uint32_t(t[off + 3]) << 24))
              : ((uint32_t(t[off]) << 24) | (uint32_t(t[off + 1]) << 16) | (uint32_t(t[off + 2]) << 8) |
                 uint32_t(t[off + 3]));
  };
  if (u16(2) != 42) return 0;
  const uint32_t ifd = u32(4);
  if (ifd > n || n - ifd < 2) return 0;
  const unsigned count = u16(ifd);
  for (unsigned i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + static_cast<size_t>(i) * 12;
    if (e + 12 > n) return 0;
    if (u16(e) != 0x0112) continue;
    const unsigned type = u16(e + 2);
    if (type == 3) return static_cast<int>(u16(e + 8));      // SHORT
    if (type == 4) return static_cast<int>(u32(e + 8));      // LONG (tolerated)
    return 0;
  }
  return 0;
}

}  // namespace vision

Image apply_orientation(const Image& image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const int W = image.width, H = image.height;
  const bool swap = orientation >= 5;
  Image out;
  out.mode = image.mode;
  out.palette = image.palette;
  out.palette_alpha = image.palette_alpha;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  vision::allocate_pixels(out);
  const int C = image.mode == PixelMode::I ? 1 : pixel_mode_channels(image.mode);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = W - 1 - x; break;                    // FLIP_LEFT_RIGHT
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;    // ROTATE_180
        case 4: sy = H - 1 - y; break;                    // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                    // TRANSPOSE
        case 6: sx = y; sy = H - 1 - x; break;            // ROTATE_270
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;    // TRANSVERSE
        case 8: sx = W - 1 - y; sy = x; break;            // ROTATE_90
      }
      const size_t si = static_cast<size_t>(sy) * W + sx, di = static_cast<size_t>(y) * out.width + x;
      if (image.mode == PixelMode::I) {
        out.pixels32[di] = image.pixels32[si];
      } else {
        for (int c = 0; c < C; ++c) out.pixels[di * C + c] = image.pixels[si * C + c];
      }
    }
  }
  return out;
}

Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options) {
  if (size == 0 || data == nullptr) throw Error(ErrorCode::Format, name + ": empty file, not an image");
  int orientation = 0;
  Image img;
  switch (vision::detect_format(data, size)) {
    case vision::ImageFormat::Jpeg: img = vision::decode_jpeg(data, size, name, options, &orientation); break;
    case vision::ImageFormat::Png: img = vision::decode_png(data, size, name, options, &orientation); break;
    case vision::ImageFormat::Gif: img = vision::decode_gif(data, size, name, options); break;
    case vision::ImageFormat::Bmp: img = vision::decode_bmp(data, size, name, options); break;
    case vision::ImageFormat::Webp: img = vision::decode_webp(data, size, name, options, &orientation); break;
    case vision::ImageFormat::Unknown:
      throw Error(ErrorCode::Format, name + ": not a supported image (expected JPEG, PNG, WebP, BMP or GIF)");
  }
  if (options.apply_exif_orientation && orientation >= 2 && orientation <= 8)
    img = apply_orientation(img, orientation);
  return img;
}

Image decode_image_file(const std::string& path, const DecodeOptions& options) {
  auto file = MappedFile::open(path);
  return decode_image_memory(file->data(), file->size(), path, options);
}

}  // namespace clipkit
