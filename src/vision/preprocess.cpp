// CLIP preprocessing (clip.clip._transform): Resize(n, BICUBIC) -> CenterCrop(n) -> convert("RGB")
// -> ToTensor (x / 255) -> Normalize ((x - mean) / std), all float32, output CHW; and open_clip's
// eval transforms for its other settings: bilinear resampling, resize_mode squash (Resize((n, n)))
// and longest (ResizeKeepRatio(n, longest=1) -> CenterCropOrPad(n, fill)).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "vision/internal.h"

namespace clipkit {

const char* pixel_mode_name(PixelMode m) {
  switch (m) {
    case PixelMode::L: return "L";
    case PixelMode::LA: return "LA";
    case PixelMode::P: return "P";
    case PixelMode::RGB: return "RGB";
    case PixelMode::RGBA: return "RGBA";
    case PixelMode::I: return "I";
    case PixelMode::Mono: return "1";
    case PixelMode::CMYK: return "CMYK";
  }
  return "?";
}

int pixel_mode_channels(PixelMode m) {
  switch (m) {
    case PixelMode::L: return 1;
    case PixelMode::LA: return 2;
    case PixelMode::P: return 1;
    case PixelMode::RGB: return 3;
    case PixelMode::RGBA: return 4;
    case PixelMode::I: return 1;
    case PixelMode::Mono: return 1;
    case PixelMode::CMYK: return 4;
  }
  return 1;
}

namespace {

void check_image(const Image& image, const char* what) {
  if (image.width <= 0 || image.height <= 0)
    throw Error(ErrorCode::InvalidArgument, std::string(what) + ": image has no pixels (" +
                                                std::to_string(image.width) + "x" + std::to_string(image.height) + ")");
  const size_t n = static_cast<size_t>(image.width) * static_cast<size_t>(image.height);
  const bool ok = image.mode == PixelMode::I ? image.pixels32.size() == n
                                             : image.pixels.size() == n * pixel_mode_channels(image.mode);
  if (!ok)
    throw Error(ErrorCode::InvalidArgument, std::string(what) + ": pixel buffer does not match a " +
                                                std::to_string(image.width) + "x" + std::to_string(image.height) + " " +
                                                pixel_mode_name(image.mode) + " image");
}

void check_resolution(int n, const char* what) {
  if (n <= 0 || n > 65536)
    throw Error(ErrorCode::InvalidArgument, std::string(what) + ": resolution " + std::to_string(n) +
                                                " must be between 1 and 65536");
}

// Python's int(round(d / 2.0)) for an integer d >= 0 (round half to even).
int half_round_even(int d) {
  const int q = d / 2;
  if (d % 2 == 0) return q;
  return (q % 2 == 0) ? q : q + 1;
}

// PIL crop with a box that may extend outside the image, in the image's own mode; the outside is
// `fill` in every band (torchvision's pad fill: an int repeated over the bands; mode 1 stores 255
// for any non-zero value).
Image crop_box(const Image& image, int left, int top, int w, int h, int fill = 0) {
  Image out;
  out.width = w;
  out.height = h;
  out.mode = image.mode;
  out.palette = image.palette;
  out.palette_alpha = image.palette_alpha;
  const int C = pixel_mode_channels(image.mode);
  if (image.mode == PixelMode::I) {
    out.pixels32.assign(static_cast<size_t>(w) * h, fill);
  } else {
    uint8_t v = static_cast<uint8_t>(fill <= 0 ? 0 : (fill >= 255 ? 255 : fill));
    if (image.mode == PixelMode::Mono && v != 0) v = 255;
    out.pixels.assign(static_cast<size_t>(w) * h * C, v);
  }
  const int x_begin = std::max(0, -left), x_end = std::min(w, image.width - left);
  if (x_end <= x_begin) return out;
  for (int y = 0; y < h; ++y) {
    const int sy = top + y;
    if (sy < 0 || sy >= image.height) continue;
    const size_t src_off = static_cast<size_t>(sy) * image.width + (left + x_begin);
    const size_t dst_off = static_cast<size_t>(y) * w + x_begin;
    const size_t count = static_cast<size_t>(x_end - x_begin);
    if (image.mode == PixelMode::I)
      std::memcpy(&out.pixels32[dst_off], &image.pixels32[src_off], count * sizeof(int32_t));
    else
      std::memcpy(&out.pixels[dst_off * C], &image.pixels[src_off * C], count * C);
  }
  return out;
}

inline uint8_t clip_i32(int32_t v) { return static_cast<uint8_t>(v <= 0 ? 0 : (v >= 255 ? 255 : v)); }

inline uint8_t muldiv255(int a, int b) {
  const int tmp = a * b + 128;
  return static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
}

}  // namespace

PreprocessGeometry preprocess_geometry(int width, int height, int resolution) {
  check_resolution(resolution, "preprocess");
  if (width <= 0 || height <= 0)
    throw Error(ErrorCode::InvalidArgument, "preprocess: image size " + std::to_string(width) + "x" +
                                                std::to_string(height) + " has no pixels");
  PreprocessGeometry g;
  const int64_t shorter = std::min(width, height), longer = std::max(width, height);
  // torchvision: int(size * long / short), a correctly rounded double quotient truncated.
  const double q = static_cast<double>(static_cast<int64_t>(resolution) * longer) / static_cast<double>(shorter);
  if (q > 1e9) throw Error(ErrorCode::InvalidArgument, "preprocess: resized image would be too large");
  const int new_long = static_cast<int>(q);
  if (width <= height) {
    g.resized_width = resolution;
    g.resized_height = new_long;
  } else {
    g.resized_width = new_long;
    g.resized_height = resolution;
  }
  auto offset = [&](int size) {  // torchvision center_crop: pad (zeros) when smaller, then crop
    if (resolution > size) return -((resolution - size) / 2);
    return half_round_even(size - resolution);
  };
  g.crop_left = offset(g.resized_width);
  g.crop_top = offset(g.resized_height);
  g.crop_right = g.crop_left + resolution;
  g.crop_bottom = g.crop_top + resolution;
  return g;
}

Image resize_short_side(const Image& image, int size) {
  check_image(image, "resize");
  const PreprocessGeometry g = preprocess_geometry(image.width, image.height, size);
  if (g.resized_width == image.width && g.resized_height == image.height) return image;
  return resize_bicubic(image, g.resized_width, g.resized_height);
}

Image center_crop(const Image& image, int size) {
  check_image(image, "center_crop");
  check_resolution(size, "center_crop");
  int left, top;
  if (size > image.width) left = -((size - image.width) / 2);
  else left = half_round_even(image.width - size);
  if (size > image.height) top = -((size - image.height) / 2);
  else top = half_round_even(image.height - size);
  return crop_box(image, left, top, size, size);
}

Image convert_to_rgb(const Image& image) {
  check_image(image, "convert");
  Image out;
  out.width = image.width;
  out.height = image.height;
  out.mode = PixelMode::RGB;
  const size_t n = static_cast<size_t>(image.width) * image.height;
  out.pixels.resize(n * 3);
  uint8_t* o = out.pixels.data();
  const uint8_t* p = image.pixels.data();
  switch (image.mode) {
    case PixelMode::RGB:
      std::memcpy(o, p, n * 3);
      break;
    case PixelMode::RGBA:
      for (size_t i = 0; i < n; ++i) {
        o[3 * i] = p[4 * i];
        o[3 * i + 1] = p[4 * i + 1];
        o[3 * i + 2] = p[4 * i + 2];
      }
      break;
    case PixelMode::L:
    case PixelMode::Mono:
      for (size_t i = 0; i < n; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = p[i];
      break;
    case PixelMode::LA:
      for (size_t i = 0; i < n; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = p[2 * i];
      break;
    case PixelMode::I:
      for (size_t i = 0; i < n; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = clip_i32(image.pixels32[i]);
      break;
    case PixelMode::P: {
      uint8_t lut[256][3];
      const size_t entries = std::min<size_t>(image.palette.size() / 3, 256);
      for (size_t i = 0; i < 256; ++i) {
        for (int c = 0; c < 3; ++c)
          lut[i][c] = i < entries ? image.palette[3 * i + c] : static_cast<uint8_t>(i);
      }
      for (size_t i = 0; i < n; ++i) std::memcpy(o + 3 * i, lut[p[i]], 3);
      break;
    }
    case PixelMode::CMYK:
      // Pillow's cmyk2rgb: nk = 255 - k; channel = nk - nk * c / 255 (rounded as MULDIV255).
      for (size_t i = 0; i < n; ++i) {
        const int nk = 255 - p[4 * i + 3];
        for (int c = 0; c < 3; ++c) {
          const int v = nk - muldiv255(p[4 * i + c], nk);
          o[3 * i + c] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
        }
      }
      break;
  }
  return out;
}

namespace {

Image shortest_to_rgb8(const Image& image, int resolution, Interpolation interpolation) {
  const PreprocessGeometry g = preprocess_geometry(image.width, image.height, resolution);
  const bool inside = g.crop_left >= 0 && g.crop_top >= 0 && g.crop_right <= g.resized_width &&
                      g.crop_bottom <= g.resized_height;
  const bool unchanged = g.resized_width == image.width && g.resized_height == image.height;
  if (inside && !unchanged) {
    Image window;
    vision::resize_window(image, g.resized_width, g.resized_height, g.crop_left, g.crop_top, resolution,
                          resolution, window, interpolation);
    return convert_to_rgb(window);
  }
  const Image resized = unchanged ? image : resize_image(image, g.resized_width, g.resized_height, interpolation);
  return convert_to_rgb(crop_box(resized, g.crop_left, g.crop_top, resolution, resolution));
}

// Python's round() of a double to the nearest integer, ties to even.
int64_t round_half_even(double v) {
  const double r = std::nearbyint(v);  // the default rounding mode is to nearest, ties to even
  return static_cast<int64_t>(r);
}

Image longest_to_rgb8(const Image& image, int n, Interpolation interpolation, int fill) {
  // ResizeKeepRatio(n, longest=1): ratio = max(h / n, w / n); size = round(side / ratio) per side.
  const double ratio = std::max(static_cast<double>(image.height) / n, static_cast<double>(image.width) / n);
  const int64_t new_h = round_half_even(static_cast<double>(image.height) / ratio);
  const int64_t new_w = round_half_even(static_cast<double>(image.width) / ratio);
  if (new_h < 1 || new_w < 1 || new_h > 65536 || new_w > 65536)
    throw Error(ErrorCode::InvalidArgument, "preprocess: image " + std::to_string(image.width) + "x" +
                                                std::to_string(image.height) + " cannot be resized to a longest side of " +
                                                std::to_string(n) + " (a side would be " + std::to_string(new_w) + "x" +
                                                std::to_string(new_h) + ")");
  const bool unchanged = new_w == image.width && new_h == image.height;
  const Image resized = unchanged ? image : resize_image(image, static_cast<int>(new_w), static_cast<int>(new_h),
                                                         interpolation);
  // CenterCropOrPad(n, fill): pad each short side — left/top (n - size) // 2, the rest right/bottom —
  // with `fill` in the image's own mode, then center-crop what is larger than n.
  const int w = resized.width, h = resized.height;
  const int pad_left = n > w ? (n - w) / 2 : 0, pad_top = n > h ? (n - h) / 2 : 0;
  const int padded_w = n > w ? n : w, padded_h = n > h ? n : h;
  const int crop_left = half_round_even(padded_w - n), crop_top = half_round_even(padded_h - n);
  return convert_to_rgb(crop_box(resized, crop_left - pad_left, crop_top - pad_top, n, n, fill));
}

}  // namespace

const char* interpolation_name(Interpolation i) { return i == Interpolation::Bilinear ? "bilinear" : "bicubic"; }

const char* resize_mode_name(ResizeMode m) {
  switch (m) {
    case ResizeMode::Shortest: return "shortest";
    case ResizeMode::Squash: return "squash";
    case ResizeMode::Longest: return "longest";
  }
  return "?";
}

Interpolation parse_interpolation(const std::string& name, const std::string& what) {
  if (name == "bicubic") return Interpolation::Bicubic;
  if (name == "bilinear") return Interpolation::Bilinear;
  throw Error(ErrorCode::InvalidArgument, what + ": unknown interpolation '" + name + "' (expected bicubic or bilinear)");
}

ResizeMode parse_resize_mode(const std::string& name, const std::string& what) {
  if (name == "shortest") return ResizeMode::Shortest;
  if (name == "squash") return ResizeMode::Squash;
  if (name == "longest") return ResizeMode::Longest;
  throw Error(ErrorCode::InvalidArgument,
              what + ": unknown resize mode '" + name + "' (expected shortest, squash or longest)");
}

Image preprocess_to_rgb8(const Image& image, int resolution) {
  check_image(image, "preprocess");
  return shortest_to_rgb8(image, resolution, Interpolation::Bicubic);
}

Image preprocess_to_rgb8(const Image& image, const PreprocessConfig& config) {
  check_image(image, "preprocess");
  check_resolution(config.resolution, "preprocess");
  const int n = config.resolution;
  switch (config.resize_mode) {
    case ResizeMode::Shortest: return shortest_to_rgb8(image, n, config.interpolation);
    case ResizeMode::Squash: {
      if (image.width == n && image.height == n) return convert_to_rgb(image);
      Image window;
      vision::resize_window(image, n, n, 0, 0, n, n, window, config.interpolation);
      return convert_to_rgb(window);
    }
    case ResizeMode::Longest: return longest_to_rgb8(image, n, config.interpolation, config.fill_color);
  }
  throw Error(ErrorCode::InvalidArgument, "preprocess: unknown resize mode");
}

void preprocess(const Image& image, const PreprocessConfig& config, float* out) {
  for (int c = 0; c < 3; ++c) {
    if (!(config.std[c] != 0.0f) || !std::isfinite(config.std[c]) || !std::isfinite(config.mean[c]))
      throw Error(ErrorCode::InvalidArgument, "preprocess: std must be finite and non-zero, mean finite");
  }
  const Image rgb = preprocess_to_rgb8(image, config);
  const int n = config.resolution;
  const size_t plane = static_cast<size_t>(n) * n;
  // torchvision: ToTensor divides by 255 in float32, Normalize subtracts and divides in float32.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float x = static_cast<float>(v) / 255.0f;
      lut[c][v] = (x - config.mean[c]) / config.std[c];
    }
  }
  const uint8_t* p = rgb.pixels.data();
  for (size_t i = 0; i < plane; ++i) {
    out[i] = lut[0][p[3 * i]];
    out[plane + i] = lut[1][p[3 * i + 1]];
    out[2 * plane + i] = lut[2][p[3 * i + 2]];
  }
}

std::vector<float> preprocess(const Image& image, const PreprocessConfig& config) {
  check_resolution(config.resolution, "preprocess");
  std::vector<float> out(static_cast<size_t>(3) * config.resolution * config.resolution);
  preprocess(image, config, out.data());
  return out;
}

}  // namespace clipkit
