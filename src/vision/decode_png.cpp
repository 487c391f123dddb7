// PNG via libpng, into Pillow's modes: 1-bit gray -> "1", 2/4/8-bit gray -> L (scaled to 0..255),
// 16-bit gray -> I (0..65535), gray+alpha -> LA (16-bit: RGBA from the high bytes), palette -> P
// (+ tRNS alpha per entry), RGB / RGBA (16-bit: the high byte of each sample, as Pillow's
// "RGB;16B"/"RGBA;16B" unpackers). Transparency of gray/RGB images (tRNS) does not change the mode.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "clipkit/error.h"
#include "vision/internal.h"

namespace clipkit::vision {
namespace {

struct PngContext {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  char message[256] = {0};
  bool truncated = false;
  bool reading_rows = false;
  png_uint_32 height = 0;
  bool interlaced = false;
};

// True once libpng has delivered every row (it then only reads the rest of the last IDAT chunk).
bool all_rows_done(PngContext* ctx) {
  if (!ctx->reading_rows) return false;
  if (ctx->interlaced) return png_get_current_pass_number(ctx->png) >= 7;
  return png_get_current_row_number(ctx->png) >= ctx->height;
}

void on_png_error(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->message, sizeof ctx->message, "%s", msg ? msg : "unknown error");
  png_longjmp(png, 1);
}
void on_png_warning(png_structp, png_const_charp) {}

void on_png_read(png_structp png, png_bytep out, png_size_t n) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->pos) {
    if (all_rows_done(ctx)) {
      // Pillow stops reading once the pixels are complete: a file cut after the image data
      // (in the last IDAT's checksum, or before IEND) still loads. Pad, and skip that checksum.
      png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
      const size_t have = ctx->size - ctx->pos;
      std::memcpy(out, ctx->data + ctx->pos, have);
      std::memset(out + have, 0, n - have);
      ctx->pos = ctx->size;
      return;
    }
    ctx->truncated = true;
    png_error(png, "file is truncated");
  }
  std::memcpy(out, ctx->data + ctx->pos, n);
  ctx->pos += n;
}

struct Header {
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  int orientation = 0;
  std::vector<uint8_t> palette, palette_alpha;
};

bool read_header(PngContext* ctx, Header* h) {
  if (setjmp(png_jmpbuf(ctx->png))) return false;
  png_set_read_fn(ctx->png, ctx, on_png_read);
  png_set_user_limits(ctx->png, 0x7FFFFFFF, 0x7FFFFFFF);
  png_read_info(ctx->png, ctx->info);
  png_get_IHDR(ctx->png, ctx->info, &h->width, &h->height, &h->bit_depth, &h->color_type, &h->interlace, nullptr,
               nullptr);
  if (h->color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp pal = nullptr;
    int n = 0;
    if (png_get_PLTE(ctx->png, ctx->info, &pal, &n) && pal) {
      for (int i = 0; i < n; ++i) {
        h->palette.push_back(pal[i].red);
        h->palette.push_back(pal[i].green);
        h->palette.push_back(pal[i].blue);
      }
    }
    png_bytep trans = nullptr;
    int nt = 0;
    if (png_get_tRNS(ctx->png, ctx->info, &trans, &nt, nullptr) && trans && nt > 0) {
      h->palette_alpha.assign(std::max<size_t>(h->palette.size() / 3, static_cast<size_t>(nt)), 255);
      for (int i = 0; i < nt; ++i) h->palette_alpha[static_cast<size_t>(i)] = trans[i];
    }
  }
#ifdef PNG_eXIf_SUPPORTED
  png_uint_32 exif_len = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(ctx->png, ctx->info, &exif_len, &exif) && exif)
    h->orientation = exif_orientation_from_tiff(exif, exif_len);
#endif
  return true;
}

bool read_rows(PngContext* ctx, png_bytep* rows) {
  if (setjmp(png_jmpbuf(ctx->png))) return false;
  if (png_get_bit_depth(ctx->png, ctx->info) < 8) png_set_packing(ctx->png);
  png_set_interlace_handling(ctx->png);
  png_read_update_info(ctx->png, ctx->info);
  ctx->height = png_get_image_height(ctx->png, ctx->info);
  ctx->interlaced = png_get_interlace_type(ctx->png, ctx->info) != PNG_INTERLACE_NONE;
  ctx->reading_rows = true;
  png_read_image(ctx->png, rows);
  return true;
}

struct Destroyer {
  PngContext* ctx;
  ~Destroyer() { png_destroy_read_struct(&ctx->png, &ctx->info, nullptr); }
};

}  // namespace

Image decode_png(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options,
                 int* orientation) {
  PngContext ctx;
  ctx.data = data;
  ctx.size = size;
  ctx.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
  if (!ctx.png) throw Error(ErrorCode::Internal, name + ": cannot create PNG decoder");
  Destroyer destroyer{&ctx};
  ctx.info = png_create_info_struct(ctx.png);
  if (!ctx.info) throw Error(ErrorCode::Internal, name + ": cannot create PNG decoder");
  Header h;
  if (!read_header(&ctx, &h)) {
    if (ctx.truncated) throw Error(ErrorCode::Format, name + ": PNG file is truncated (header incomplete)");
    throw Error(ErrorCode::Format, name + ": corrupt PNG: " + ctx.message);
  }
  check_dimensions(h.width, h.height, name, options);
  const int depth = h.bit_depth;
  Image img;
  img.width = static_cast<int>(h.width);
  img.height = static_cast<int>(h.height);
  int samples = 1;
  switch (h.color_type) {
    case PNG_COLOR_TYPE_GRAY:
      img.mode = depth == 1 ? PixelMode::Mono : (depth == 16 ? PixelMode::I : PixelMode::L);
      samples = 1;
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      img.mode = depth == 16 ? PixelMode::RGBA : PixelMode::LA;
      samples = 2;
      break;
    case PNG_COLOR_TYPE_PALETTE:
      img.mode = PixelMode::P;
      samples = 1;
      img.palette = h.palette;
      img.palette_alpha = h.palette_alpha;
      break;
    case PNG_COLOR_TYPE_RGB:
      img.mode = PixelMode::RGB;
      samples = 3;
      break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
      img.mode = PixelMode::RGBA;
      samples = 4;
      break;
    default:
      throw Error(ErrorCode::Format, name + ": unsupported PNG color type " + std::to_string(h.color_type));
  }
  // Raw rows as libpng delivers them: one byte per sample (bit depths < 8 unpacked), or two
  // big-endian bytes per sample at depth 16.
  const size_t bytes_per_sample = depth == 16 ? 2 : 1;
  const size_t row_bytes = static_cast<size_t>(img.width) * samples * bytes_per_sample;
  std::vector<uint8_t> raw;
  const bool direct = depth == 8;  // libpng's layout is already Pillow's
  allocate_pixels(img);
  uint8_t* base;
  if (direct) {
    base = img.pixels.data();
  } else {
    raw.resize(row_bytes * img.height);
    base = raw.data();
  }
  std::vector<png_bytep> rows(static_cast<size_t>(img.height));
  for (int y = 0; y < img.height; ++y) rows[static_cast<size_t>(y)] = base + static_cast<size_t>(y) * row_bytes;
  if (!read_rows(&ctx, rows.data())) {
    if (ctx.truncated) throw Error(ErrorCode::Format, name + ": PNG file is truncated");
    throw Error(ErrorCode::Format, name + ": corrupt PNG: " + ctx.message);
  }
  if (!direct) {
    const size_t n = static_cast<size_t>(img.width) * img.height;
    const uint8_t* r = raw.data();
    if (depth == 16) {
      switch (h.color_type) {
        case PNG_COLOR_TYPE_GRAY:
          for (size_t i = 0; i < n; ++i) img.pixels32[i] = (r[2 * i] << 8) | r[2 * i + 1];
          break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:  // Pillow: "LA;16B" -> RGBA (gray replicated, high bytes)
          for (size_t i = 0; i < n; ++i) {
            uint8_t* o = &img.pixels[4 * i];
            o[0] = o[1] = o[2] = r[4 * i];
            o[3] = r[4 * i + 2];
          }
          break;
        default:  // RGB / RGBA: high byte of every sample
          for (size_t i = 0; i < n * samples; ++i) img.pixels[i] = r[2 * i];
          break;
      }
    } else if (img.mode == PixelMode::P) {
      std::memcpy(img.pixels.data(), r, n);  // indices
    } else {
      // gray 1/2/4-bit: Pillow's "1", "L;2" (x85) and "L;4" (x17) unpackers
      const int scale = depth == 1 ? 255 : (depth == 2 ? 85 : 17);
      for (size_t i = 0; i < n; ++i) img.pixels[i] = static_cast<uint8_t>(r[i] * scale);
    }
  }
  if (orientation) *orientation = h.orientation;
  return img;
}

}  // namespace clipkit::vision
