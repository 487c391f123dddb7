// Pillow-exact resizing (Pillow 9.4 Image.resize semantics).
//
// Bicubic (a = -0.5, support 2) and bilinear (triangle, support 1): separable convolution whose
// support grows with the downscale factor.
// Coefficients are computed in double, normalised per output pixel, and for 8-bit images turned
// into 22-bit fixed point; accumulators start at 1 << 21 and are shifted and clamped to uint8.
// The horizontal pass runs first (only if the width changes) into an 8-bit buffer, then the
// vertical pass (only if the height changes). RGBA/LA are resized premultiplied and
// un-premultiplied afterwards with Pillow's integer rounding; mode I uses double coefficients
// and rounds half away from zero; P and 1 use Pillow's nearest-neighbour affine scaling.
//
// Only the requested window of the output is computed; every pixel in it equals the
// corresponding pixel of the full resize.

// The coefficients and the mode-I sums must not be contracted into fused multiply-adds: the
// reference evaluates them with separately rounded operations.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "clipkit/error.h"
#include "vision/internal.h"

namespace clipkit::vision {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double bilinear(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_of(Interpolation i) {
  return i == Interpolation::Bilinear ? Filter{bilinear, 1.0} : Filter{bicubic, 2.0};
}

// Per output index: first source index, number of taps, normalised weights (ksize each).
struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<double> k;
  std::vector<int32_t> fixed;
};

Coeffs precompute(int in_size, int out_size, const Filter& filter) {
  Coeffs c;
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter.support * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0.0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &c.k[static_cast<size_t>(xx) * c.ksize];
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = filter.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    c.first[xx] = xmin;
    c.count[xx] = xmax < 0 ? 0 : xmax;
  }
  return c;
}

void make_fixed(Coeffs& c) {
  c.fixed.resize(c.k.size());
  for (size_t i = 0; i < c.k.size(); ++i) {
    const double v = c.k[i];
    c.fixed[i] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                       : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
  }
}

inline uint8_t clip8(int32_t v) {
  const int32_t s = v >> kPrecisionBits;
  return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

// Horizontal 8-bit pass: rows [0, rows) of `src` (row stride src_stride bytes) to output columns
// [x0, x0 + w) into dst (stride w * C).
template <int C>
void horizontal_u8(const uint8_t* src, size_t src_stride, int rows, const Coeffs& c, int x0, int w, uint8_t* dst) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src + static_cast<size_t>(y) * src_stride;
    uint8_t* out = dst + static_cast<size_t>(y) * w * C;
    for (int xx = 0; xx < w; ++xx) {
      const int ox = x0 + xx;
      const int xmin = c.first[ox], n = c.count[ox];
      const int32_t* k = &c.fixed[static_cast<size_t>(ox) * c.ksize];
      const uint8_t* p = in + static_cast<size_t>(xmin) * C;
      int32_t s[C];
      for (int ch = 0; ch < C; ++ch) s[ch] = 1 << (kPrecisionBits - 1);
      for (int x = 0; x < n; ++x) {
        const int32_t kv = k[x];
        for (int ch = 0; ch < C; ++ch) s[ch] += p[x * C + ch] * kv;
      }
      for (int ch = 0; ch < C; ++ch) out[xx * C + ch] = clip8(s[ch]);
    }
  }
}

// Vertical 8-bit pass: output rows [y0, y0 + h); source row r of the coefficients is row
// (r - row_offset) of src. Row width `w` pixels of C channels.
template <int C>
void vertical_u8(const uint8_t* src, size_t src_stride, int row_offset, const Coeffs& c, int y0, int h, int w,
                 uint8_t* dst) {
  const int n_values = w * C;
  std::vector<int32_t> acc(static_cast<size_t>(n_values));
  for (int yy = 0; yy < h; ++yy) {
    const int oy = y0 + yy;
    const int ymin = c.first[oy] - row_offset, n = c.count[oy];
    const int32_t* k = &c.fixed[static_cast<size_t>(oy) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < n; ++y) {
      const uint8_t* in = src + static_cast<size_t>(ymin + y) * src_stride;
      const int32_t kv = k[y];
      int32_t* a = acc.data();
      for (int i = 0; i < n_values; ++i) a[i] += in[i] * kv;
    }
    uint8_t* out = dst + static_cast<size_t>(yy) * n_values;
    for (int i = 0; i < n_values; ++i) out[i] = clip8(acc[i]);
  }
}

void horizontal_dispatch(int C, const uint8_t* src, size_t stride, int rows, const Coeffs& c, int x0, int w,
                         uint8_t* dst) {
  switch (C) {
    case 1: horizontal_u8<1>(src, stride, rows, c, x0, w, dst); break;
    case 2: horizontal_u8<2>(src, stride, rows, c, x0, w, dst); break;
    case 3: horizontal_u8<3>(src, stride, rows, c, x0, w, dst); break;
    default: horizontal_u8<4>(src, stride, rows, c, x0, w, dst); break;
  }
}

void vertical_dispatch(int C, const uint8_t* src, size_t stride, int row_offset, const Coeffs& c, int y0, int h,
                       int w, uint8_t* dst) {
  switch (C) {
    case 1: vertical_u8<1>(src, stride, row_offset, c, y0, h, w, dst); break;
    case 2: vertical_u8<2>(src, stride, row_offset, c, y0, h, w, dst); break;
    case 3: vertical_u8<3>(src, stride, row_offset, c, y0, h, w, dst); break;
    default: vertical_u8<4>(src, stride, row_offset, c, y0, h, w, dst); break;
  }
}

// Source rows [r0, r1) needed for output rows [y0, y0 + h).
void needed_rows(const Coeffs& c, int y0, int h, int* r0, int* r1) {
  *r0 = c.first[y0];
  *r1 = *r0;
  for (int y = y0; y < y0 + h; ++y) {
    *r0 = std::min(*r0, c.first[y]);
    *r1 = std::max(*r1, c.first[y] + c.count[y]);
  }
}

// 8-bit resize of interleaved C-channel pixels; window output to dst (h rows of w * C).
void resize_u8(const uint8_t* src, int in_w, int in_h, int C, int out_w, int out_h, int x0, int y0, int w, int h,
               uint8_t* dst, const Filter& filter) {
  const bool need_h = out_w != in_w, need_v = out_h != in_h;
  const size_t in_stride = static_cast<size_t>(in_w) * C;
  Coeffs cv;
  int r0 = y0, r1 = y0 + h;
  if (need_v) {
    cv = precompute(in_h, out_h, filter);
    make_fixed(cv);
    needed_rows(cv, y0, h, &r0, &r1);
  }
  std::vector<uint8_t> temp;
  const uint8_t* mid = nullptr;
  size_t mid_stride = 0;
  if (need_h) {
    Coeffs ch = precompute(in_w, out_w, filter);
    make_fixed(ch);
    temp.resize(static_cast<size_t>(r1 - r0) * w * C);
    horizontal_dispatch(C, src + static_cast<size_t>(r0) * in_stride, in_stride, r1 - r0, ch, x0, w, temp.data());
    mid = temp.data();
    mid_stride = static_cast<size_t>(w) * C;
  } else {
    mid = src + static_cast<size_t>(r0) * in_stride + static_cast<size_t>(x0) * C;
    mid_stride = in_stride;
  }
  if (need_v) {
    vertical_dispatch(C, mid, mid_stride, r0, cv, y0, h, w, dst);
  } else {
    for (int y = 0; y < h; ++y)
      std::memcpy(dst + static_cast<size_t>(y) * w * C, mid + static_cast<size_t>(y) * mid_stride,
                  static_cast<size_t>(w) * C);
  }
}

inline int32_t round_up(double v) {
  // Pillow's ROUND_UP: half away from zero (0.5F promoted to double); clamped to stay defined.
  double r = v >= 0.0 ? v + 0.5 : v - 0.5;
  if (r >= 2147483647.0) return 2147483647;
  if (r <= -2147483648.0) return static_cast<int32_t>(-2147483647 - 1);
  return static_cast<int32_t>(r);
}

// Mode I: double accumulation, rounded to int32 after each pass.
void resize_i32(const int32_t* src, int in_w, int in_h, int out_w, int out_h, int x0, int y0, int w, int h,
                int32_t* dst, const Filter& filter) {
  const bool need_h = out_w != in_w, need_v = out_h != in_h;
  Coeffs cv;
  int r0 = y0, r1 = y0 + h;
  if (need_v) {
    cv = precompute(in_h, out_h, filter);
    needed_rows(cv, y0, h, &r0, &r1);
  }
  std::vector<int32_t> temp;
  const int32_t* mid;
  size_t mid_stride;
  if (need_h) {
    Coeffs ch = precompute(in_w, out_w, filter);
    temp.resize(static_cast<size_t>(r1 - r0) * w);
    for (int y = r0; y < r1; ++y) {
      const int32_t* in = src + static_cast<size_t>(y) * in_w;
      for (int xx = 0; xx < w; ++xx) {
        const int ox = x0 + xx;
        const double* k = &ch.k[static_cast<size_t>(ox) * ch.ksize];
        double ss = 0.0;
        for (int x = 0; x < ch.count[ox]; ++x) ss += in[x + ch.first[ox]] * k[x];
        temp[static_cast<size_t>(y - r0) * w + xx] = round_up(ss);
      }
    }
    mid = temp.data();
    mid_stride = static_cast<size_t>(w);
  } else {
    mid = src + static_cast<size_t>(r0) * in_w + x0;
    mid_stride = static_cast<size_t>(in_w);
  }
  for (int yy = 0; yy < h; ++yy) {
    int32_t* out = dst + static_cast<size_t>(yy) * w;
    if (!need_v) {
      std::memcpy(out, mid + static_cast<size_t>(yy) * mid_stride, sizeof(int32_t) * w);
      continue;
    }
    const int oy = y0 + yy;
    const double* k = &cv.k[static_cast<size_t>(oy) * cv.ksize];
    const int ymin = cv.first[oy] - r0;
    for (int xx = 0; xx < w; ++xx) {
      double ss = 0.0;
      for (int y = 0; y < cv.count[oy]; ++y) ss += mid[static_cast<size_t>(ymin + y) * mid_stride + xx] * k[y];
      out[xx] = round_up(ss);
    }
  }
}

// Pillow's nearest-neighbour scale (ImagingScaleAffine): positions stepped by a running double
// sum from half a step, truncated; out-of-range positions give 0.
std::vector<int> nearest_table(int in_size, int out_size) {
  std::vector<int> t(static_cast<size_t>(out_size));
  const double a = static_cast<double>(static_cast<float>(in_size) - 0.0f) / out_size;
  double pos = 0.0 + a * 0.5;
  for (int i = 0; i < out_size; ++i) {
    const int v = pos < 0.0 ? -1 : static_cast<int>(pos);
    t[static_cast<size_t>(i)] = (v >= 0 && v < in_size) ? v : -1;
    pos += a;
  }
  return t;
}

template <typename T>
void resize_nearest(const T* src, int in_w, int in_h, int C, int out_w, int out_h, int x0, int y0, int w, int h,
                    T* dst) {
  const std::vector<int> xt = nearest_table(in_w, out_w), yt = nearest_table(in_h, out_h);
  for (int yy = 0; yy < h; ++yy) {
    T* out = dst + static_cast<size_t>(yy) * w * C;
    const int sy = yt[static_cast<size_t>(y0 + yy)];
    for (int xx = 0; xx < w; ++xx) {
      const int sx = xt[static_cast<size_t>(x0 + xx)];
      for (int ch = 0; ch < C; ++ch)
        out[xx * C + ch] = (sx < 0 || sy < 0) ? T(0) : src[(static_cast<size_t>(sy) * in_w + sx) * C + ch];
    }
  }
}

inline uint8_t muldiv255(unsigned a, unsigned b) {
  const unsigned tmp = a * b + 128;
  return static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
}

// RGBA -> RGBa / LA -> La (Pillow's premultiplication).
std::vector<uint8_t> premultiply(const std::vector<uint8_t>& px, int C) {
  std::vector<uint8_t> out(px.size());
  const size_t n = px.size() / C;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &px[i * C];
    uint8_t* o = &out[i * C];
    const unsigned alpha = p[C - 1];
    for (int ch = 0; ch < C - 1; ++ch) o[ch] = muldiv255(p[ch], alpha);
    o[C - 1] = p[C - 1];
  }
  return out;
}

// RGBa -> RGBA / La -> LA: 255 * v / alpha truncated and clipped; alpha 0 and 255 unchanged.
void unpremultiply(uint8_t* px, size_t n, int C) {
  for (size_t i = 0; i < n; ++i) {
    uint8_t* p = px + i * C;
    const unsigned alpha = p[C - 1];
    if (alpha == 255 || alpha == 0) continue;
    for (int ch = 0; ch < C - 1; ++ch) {
      const unsigned v = (255u * p[ch]) / alpha;
      p[ch] = static_cast<uint8_t>(v > 255 ? 255 : v);
    }
  }
}

}  // namespace

void resize_window(const Image& src, int out_w, int out_h, int x0, int y0, int w, int h, Image& dst,
                   Interpolation interpolation) {
  const Filter filter = filter_of(interpolation);
  if (out_w <= 0 || out_h <= 0)
    throw Error(ErrorCode::InvalidArgument, "resize: target size " + std::to_string(out_w) + "x" +
                                                std::to_string(out_h) + " must be positive");
  if (src.width <= 0 || src.height <= 0) throw Error(ErrorCode::InvalidArgument, "resize: empty image");
  if (x0 < 0 || y0 < 0 || w < 0 || h < 0 || x0 + w > out_w || y0 + h > out_h)
    throw Error(ErrorCode::InvalidArgument, "resize: window outside the output image");
  const int C = pixel_mode_channels(src.mode);
  dst = Image();
  dst.width = w;
  dst.height = h;
  dst.mode = src.mode;
  dst.palette = src.palette;
  dst.palette_alpha = src.palette_alpha;
  const bool same = out_w == src.width && out_h == src.height;
  if (src.mode == PixelMode::I) {
    if (src.pixels32.size() != static_cast<size_t>(src.width) * src.height)
      throw Error(ErrorCode::InvalidArgument, "resize: mode I image without 32-bit pixel data");
    dst.pixels32.resize(static_cast<size_t>(w) * h);
    if (w == 0 || h == 0) return;
    resize_i32(src.pixels32.data(), src.width, src.height, out_w, out_h, x0, y0, w, h, dst.pixels32.data(), filter);
    return;
  }
  if (src.pixels.size() != static_cast<size_t>(src.width) * src.height * C)
    throw Error(ErrorCode::InvalidArgument, "resize: pixel buffer does not match the image size");
  dst.pixels.resize(static_cast<size_t>(w) * h * C);
  if (w == 0 || h == 0) return;
  if (src.mode == PixelMode::P || src.mode == PixelMode::Mono) {
    resize_nearest<uint8_t>(src.pixels.data(), src.width, src.height, C, out_w, out_h, x0, y0, w, h,
                            dst.pixels.data());
    return;
  }
  if ((src.mode == PixelMode::RGBA || src.mode == PixelMode::LA) && !same) {
    const std::vector<uint8_t> pre = premultiply(src.pixels, C);
    resize_u8(pre.data(), src.width, src.height, C, out_w, out_h, x0, y0, w, h, dst.pixels.data(), filter);
    unpremultiply(dst.pixels.data(), static_cast<size_t>(w) * h, C);
    return;
  }
  resize_u8(src.pixels.data(), src.width, src.height, C, out_w, out_h, x0, y0, w, h, dst.pixels.data(), filter);
}

}  // namespace clipkit::vision

namespace clipkit {

Image resize_bicubic(const Image& image, int width, int height) {
  return resize_image(image, width, height, Interpolation::Bicubic);
}

Image resize_image(const Image& image, int width, int height, Interpolation filter) {
  Image out;
  vision::resize_window(image, width, height, 0, 0, width, height, out, filter);
  return out;
}

}  // namespace clipkit
