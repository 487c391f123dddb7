// BMP / DIB, following Pillow 9.4's BmpImagePlugin: 1/4/8-bit palette images become P (or "1" /
// L when the palette is the black-white pair / the full gray ramp), 16-bit -> RGB (5-5-5, or
// 5-6-5 with BITFIELDS), 24-bit -> RGB, 32-bit -> RGB (alpha only with a BITFIELDS alpha mask),
// RLE8 / RLE4 decoded as Pillow does. Rows are bottom-up unless the height is negative.
#include <algorithm>
#include <cstring>
#include <vector>

#include "clipkit/error.h"
#include "vision/internal.h"

namespace clipkit::vision {
namespace {

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
unsigned le16(const uint8_t* p) { return p[0] | (p[1] << 8); }

enum class Raw { P1, P4, P8, L8, Mono1, BGR15, BGR16, BGR, BGRX, XBGR, ABGR, RGBA, BGRA };

struct Fail {
  const std::string& name;
  [[noreturn]] void operator()(const std::string& what) const {
    throw Error(ErrorCode::Format, name + ": " + what);
  }
};

}  // namespace

Image decode_bmp(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options) {
  Fail fail{name};
  if (size < 14 + 4) fail("BMP file is truncated (header incomplete)");
  uint32_t offset = le32(data + 10);
  size_t pos = 14;
  const uint32_t header_size = le32(data + pos);
  pos += 4;
  if (header_size != 12 && header_size != 40 && header_size != 64 && header_size != 108 && header_size != 124)
    fail("unsupported BMP header type (" + std::to_string(header_size) + ")");
  if (size - pos < header_size - 4) fail("BMP file is truncated (header incomplete)");
  const uint8_t* h = data + pos;
  pos += header_size - 4;
  int64_t width = 0, height = 0;
  unsigned bits = 0, palette_padding = 4;
  uint32_t compression = 0, colors = 0;
  bool top_down = false;
  uint32_t masks[4] = {0, 0, 0, 0};
  if (header_size == 12) {
    width = le16(h);
    height = le16(h + 2);
    bits = le16(h + 6);
    palette_padding = 3;
  } else {
    top_down = h[7] == 0xFF;
    width = le32(h);
    height = top_down ? (int64_t(1) << 32) - le32(h + 4) : le32(h + 4);
    bits = le16(h + 10);
    compression = le32(h + 12);
    colors = le32(h + 28);
    if (compression == 3) {  // BITFIELDS
      if (header_size - 4 >= 52) {
        for (int i = 0; i < 4; ++i) masks[i] = le32(h + 36 + 4 * i);
      } else {
        if (size - pos < 12) fail("BMP file is truncated (bit masks missing)");
        for (int i = 0; i < 3; ++i) masks[i] = le32(data + pos + 4 * i);
        pos += 12;
      }
    }
  }
  if (colors == 0) colors = bits < 32 ? (1u << bits) : 0;
  if (offset == 14 + header_size && bits <= 8) offset += 4 * colors;

  Raw raw;
  PixelMode mode;
  switch (bits) {
    case 1: raw = Raw::P1; mode = PixelMode::P; break;
    case 4: raw = Raw::P4; mode = PixelMode::P; break;
    case 8: raw = Raw::P8; mode = PixelMode::P; break;
    case 16: raw = Raw::BGR15; mode = PixelMode::RGB; break;
    case 24: raw = Raw::BGR; mode = PixelMode::RGB; break;
    case 32: raw = Raw::BGRX; mode = PixelMode::RGB; break;
    default: fail("unsupported BMP pixel depth (" + std::to_string(bits) + ")");
  }
  bool rle = false, rle4 = false;
  if (compression == 3) {
    auto is = [&](uint32_t r, uint32_t g, uint32_t b, uint32_t a) {
      return masks[0] == r && masks[1] == g && masks[2] == b && masks[3] == a;
    };
    if (bits == 32) {
      if (is(0xFF0000, 0xFF00, 0xFF, 0)) raw = Raw::BGRX;
      else if (is(0xFF000000, 0xFF0000, 0xFF00, 0)) raw = Raw::XBGR;
      else if (is(0xFF000000, 0xFF0000, 0xFF00, 0xFF)) { raw = Raw::ABGR; mode = PixelMode::RGBA; }
      else if (is(0xFF, 0xFF00, 0xFF0000, 0xFF000000)) { raw = Raw::RGBA; mode = PixelMode::RGBA; }
      else if (is(0xFF0000, 0xFF00, 0xFF, 0xFF000000)) { raw = Raw::BGRA; mode = PixelMode::RGBA; }
      else if (is(0, 0, 0, 0)) { raw = Raw::BGRA; mode = PixelMode::RGBA; }
      else fail("unsupported BMP bitfields layout");
    } else if (bits == 24 && masks[0] == 0xFF0000 && masks[1] == 0xFF00 && masks[2] == 0xFF) {
      raw = Raw::BGR;
    } else if (bits == 16 && masks[0] == 0xF800 && masks[1] == 0x7E0 && masks[2] == 0x1F) {
      raw = Raw::BGR16;
    } else if (bits == 16 && masks[0] == 0x7C00 && masks[1] == 0x3E0 && masks[2] == 0x1F) {
      raw = Raw::BGR15;
    } else {
      fail("unsupported BMP bitfields layout");
    }
  } else if (compression == 1 || compression == 2) {
    rle = true;
    rle4 = compression == 2;
  } else if (compression != 0) {
    fail("unsupported BMP compression (" + std::to_string(compression) + ")");
  }

  std::vector<uint8_t> palette;
  if (mode == PixelMode::P) {
    if (!(colors > 0 && colors <= 65536)) fail("unsupported BMP palette size (" + std::to_string(colors) + ")");
    const size_t pal_bytes = static_cast<size_t>(palette_padding) * colors;
    if (size - pos < pal_bytes) fail("BMP file is truncated (palette incomplete)");
    const uint8_t* pal = data + pos;
    bool gray = true;
    for (uint32_t i = 0; i < colors && gray; ++i) {
      const unsigned v = colors == 2 ? (i == 0 ? 0 : (i == 1 ? 255 : 256)) : i;
      if (v > 255 || !(pal[i * palette_padding] == v && pal[i * palette_padding + 1] == v &&
                       pal[i * palette_padding + 2] == v))
        gray = false;
    }
    if (gray) {
      if (colors == 2) {
        mode = PixelMode::Mono;
        raw = Raw::Mono1;
      } else {
        mode = PixelMode::L;
        if (raw == Raw::P8) raw = Raw::L8;
      }
    } else {
      for (uint32_t i = 0; i < colors && i < 256; ++i) {
        palette.push_back(pal[i * palette_padding + 2]);
        palette.push_back(pal[i * palette_padding + 1]);
        palette.push_back(pal[i * palette_padding + 0]);
      }
    }
  }
  if (mode == PixelMode::L && (raw == Raw::P1 || raw == Raw::P4)) {
    // Pillow would unpack these with the "L" raw mode (8 bits per pixel); not a real-world layout.
    fail("unsupported BMP layout (" + std::to_string(bits) + "-bit gray ramp)");
  }
  if (mode == PixelMode::Mono && bits != 1) fail("unsupported BMP layout (" + std::to_string(bits) + "-bit two-colour)");
  if (rle && !(bits == 8 || bits == 4)) fail("unsupported BMP layout (RLE with " + std::to_string(bits) + " bits)");
  if (rle && mode == PixelMode::Mono) fail("unsupported BMP layout (RLE two-colour)");

  check_dimensions(width, height, name, options);
  Image img;
  img.width = static_cast<int>(width);
  img.height = static_cast<int>(height);
  img.mode = mode;
  img.palette = std::move(palette);
  const size_t W = static_cast<size_t>(width), H = static_cast<size_t>(height);
  if (offset > size) fail("BMP file is truncated (no pixel data)");
  const uint8_t* px = data + offset;
  const size_t avail = size - offset;

  if (rle) {
    // Pillow's BmpRleDecoder: a linear stream of indices, rows stored bottom-up.
    const size_t total = W * H;
    std::vector<uint8_t> out;
    out.reserve(std::min<size_t>(total, 1u << 24));
    size_t p = 0, x = 0;
    while (out.size() < total) {
      if (avail - p < 2) break;
      const unsigned count = px[p], byte = px[p + 1];
      p += 2;
      if (count) {
        size_t n = count;
        if (x + n > W) n = x < W ? W - x : 0;
        for (size_t i = 0; i < n; ++i)
          out.push_back(rle4 ? static_cast<uint8_t>(i % 2 == 0 ? byte >> 4 : byte & 0x0F) : static_cast<uint8_t>(byte));
        x += n;
      } else if (byte == 0) {  // end of line
        while (out.size() % W != 0) out.push_back(0);
        x = 0;
      } else if (byte == 1) {  // end of bitmap
        break;
      } else if (byte == 2) {  // delta
        if (avail - p < 2) break;
        const size_t right = px[p], up = px[p + 1];
        p += 2;
        const size_t add = right + up * W;
        if (add > total - std::min(total, out.size())) {
          out.resize(total, 0);
          break;
        }
        out.insert(out.end(), add, 0);
        x = out.size() % W;
      } else {  // absolute run
        const size_t byte_count = rle4 ? byte / 2 : byte;
        const size_t got = std::min(byte_count, avail - p);
        for (size_t i = 0; i < got; ++i) {
          const uint8_t b = px[p + i];
          if (rle4) {
            out.push_back(static_cast<uint8_t>(b >> 4));
            out.push_back(static_cast<uint8_t>(b & 0x0F));
          } else {
            out.push_back(b);
          }
        }
        p += got;
        if (got < byte_count) break;
        x += byte;
        if ((offset + p) % 2 != 0) ++p;  // word alignment (relative to the file start)
        if (p > avail) p = avail;
      }
    }
    if (out.size() < total) fail("BMP RLE data is truncated (not enough image data)");
    allocate_pixels(img);
    for (size_t y = 0; y < H; ++y) {
      const size_t dst_row = top_down ? y : H - 1 - y;
      std::memcpy(&img.pixels[dst_row * W], &out[y * W], W);
    }
    return img;
  }

  const size_t stride = ((W * bits + 31) >> 3) & ~static_cast<size_t>(3);
  // Pillow needs every row, but not the padding after the last one stored; less is truncated.
  const size_t last_row = (W * bits + 7) / 8;
  if (stride != 0 && (avail < last_row || (avail - last_row) / stride < H - 1))
    fail("BMP file is truncated (pixel data incomplete)");
  allocate_pixels(img);
  const int C = pixel_mode_channels(mode);
  for (size_t y = 0; y < H; ++y) {
    const uint8_t* in = px + y * stride;  // the last stored row may lack its padding
    const size_t dst_row = top_down ? y : H - 1 - y;
    uint8_t* o = &img.pixels[dst_row * W * C];
    for (size_t x = 0; x < W; ++x) {
      switch (raw) {
        case Raw::P1:
        case Raw::Mono1: {
          const unsigned bit = (in[x >> 3] >> (7 - (x & 7))) & 1;
          o[x] = raw == Raw::Mono1 ? static_cast<uint8_t>(bit ? 255 : 0) : static_cast<uint8_t>(bit);
          break;
        }
        case Raw::P4: o[x] = static_cast<uint8_t>((x & 1) ? in[x >> 1] & 0x0F : in[x >> 1] >> 4); break;
        case Raw::P8:
        case Raw::L8: o[x] = in[x]; break;
        case Raw::BGR15: {
          const unsigned v = in[2 * x] | (in[2 * x + 1] << 8);
          o[3 * x] = static_cast<uint8_t>(((v >> 10) & 31) * 255 / 31);
          o[3 * x + 1] = static_cast<uint8_t>(((v >> 5) & 31) * 255 / 31);
          o[3 * x + 2] = static_cast<uint8_t>((v & 31) * 255 / 31);
          break;
        }
        case Raw::BGR16: {
          const unsigned v = in[2 * x] | (in[2 * x + 1] << 8);
          o[3 * x] = static_cast<uint8_t>(((v >> 11) & 31) * 255 / 31);
          o[3 * x + 1] = static_cast<uint8_t>(((v >> 5) & 63) * 255 / 63);
          o[3 * x + 2] = static_cast<uint8_t>((v & 31) * 255 / 31);
          break;
        }
        case Raw::BGR:
          o[3 * x] = in[3 * x + 2];
          o[3 * x + 1] = in[3 * x + 1];
          o[3 * x + 2] = in[3 * x];
          break;
        case Raw::BGRX:
          o[3 * x] = in[4 * x + 2];
          o[3 * x + 1] = in[4 * x + 1];
          o[3 * x + 2] = in[4 * x];
          break;
        case Raw::XBGR:
          o[3 * x] = in[4 * x + 3];
          o[3 * x + 1] = in[4 * x + 2];
          o[3 * x + 2] = in[4 * x + 1];
          break;
        case Raw::ABGR:
          o[4 * x] = in[4 * x + 3];
          o[4 * x + 1] = in[4 * x + 2];
          o[4 * x + 2] = in[4 * x + 1];
          o[4 * x + 3] = in[4 * x];
          break;
        case Raw::RGBA: std::memcpy(o + 4 * x, in + 4 * x, 4); break;
        case Raw::BGRA:
          o[4 * x] = in[4 * x + 2];
          o[4 * x + 1] = in[4 * x + 1];
          o[4 * x + 2] = in[4 * x];
          o[4 * x + 3] = in[4 * x + 3];
          break;
      }
    }
  }
  return img;
}

}  // namespace clipkit::vision
