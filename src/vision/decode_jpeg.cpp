// JPEG via libjpeg-turbo with the decoder settings Pillow uses by default: islow DCT, fancy
// upsampling, output RGB for 3-component, gray for 1-component and (inverted, Adobe style) CMYK
// for 4-component files. The data source suspends at the end of the data, as Pillow's does: a
// file is "truncated" exactly when libjpeg needs bytes past its end before every scanline is
// out (a missing EOI after complete scan data is therefore accepted or not just as Pillow
// does); corrupt-data warnings are not errors.
#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>

#include "clipkit/error.h"
#include "vision/internal.h"

namespace clipkit::vision {
namespace {

struct JpegContext {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  jpeg_source_mgr src;
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  const uint8_t* data;
  size_t size;
  bool eof_hit;
  bool created;
  // header results
  int width, height, components;
  // APP1 EXIF orientation
  int orientation;
  // decode target
  uint8_t* out;
  int out_channels;
  J_COLOR_SPACE out_space;
  int rows_done;
  int scale_denom;  // libjpeg's DCT scaling: output 1/scale_denom of the size
};

JpegContext* ctx_of(j_common_ptr c) { return reinterpret_cast<JpegContext*>(c->client_data); }

void on_error_exit(j_common_ptr c) {
  JpegContext* ctx = ctx_of(c);
  (*c->err->format_message)(c, ctx->message);
  std::longjmp(ctx->jump, 1);
}
void on_output_message(j_common_ptr) {}  // the library never prints

void src_init(j_decompress_ptr) {}
boolean src_fill(j_decompress_ptr d) {
  // All data was given up front: asking for more means the file ends too early. Suspend.
  JpegContext* ctx = ctx_of(reinterpret_cast<j_common_ptr>(d));
  ctx->eof_hit = true;
  return FALSE;
}
void src_skip(j_decompress_ptr d, long n) {
  if (n <= 0) return;
  jpeg_source_mgr* s = d->src;
  if (static_cast<size_t>(n) > s->bytes_in_buffer) {
    JpegContext* ctx = ctx_of(reinterpret_cast<j_common_ptr>(d));
    s->next_input_byte += s->bytes_in_buffer;
    s->bytes_in_buffer = 0;
    ctx->eof_hit = true;
    return;
  }
  s->next_input_byte += n;
  s->bytes_in_buffer -= static_cast<size_t>(n);
}
void src_term(j_decompress_ptr) {}

void on_progress(j_common_ptr c) {
  // A progressive file with an absurd number of scans is rejected (denial of service guard).
  if (c->is_decompressor) {
    auto* d = reinterpret_cast<j_decompress_ptr>(c);
    if (d->input_scan_number > 1000) {
      JpegContext* ctx = ctx_of(c);
      std::snprintf(ctx->message, sizeof ctx->message, "more than 1000 progressive scans");
      std::longjmp(ctx->jump, 1);
    }
  }
}

int orientation_from_markers(j_decompress_ptr d) {
  for (jpeg_saved_marker_ptr m = d->marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1 || m->data_length < 14) continue;
    if (std::memcmp(m->data, "Exif\0\0", 6) != 0) continue;
    return exif_orientation_from_tiff(m->data + 6, m->data_length - 6);
  }
  return 0;
}

// Stage 1: header. Returns false on a libjpeg error (message in ctx->message).
bool read_header(JpegContext* ctx) {
  if (setjmp(ctx->jump)) return false;
  j_decompress_ptr d = &ctx->cinfo;
  d->err = jpeg_std_error(&ctx->err);
  ctx->err.error_exit = on_error_exit;
  ctx->err.output_message = on_output_message;
  d->client_data = ctx;
  jpeg_create_decompress(d);
  ctx->created = true;
  ctx->src.init_source = src_init;
  ctx->src.fill_input_buffer = src_fill;
  ctx->src.skip_input_data = src_skip;
  ctx->src.resync_to_restart = jpeg_resync_to_restart;
  ctx->src.term_source = src_term;
  ctx->src.next_input_byte = ctx->data;
  ctx->src.bytes_in_buffer = ctx->size;
  d->src = &ctx->src;
  ctx->progress.progress_monitor = on_progress;
  d->progress = &ctx->progress;
  jpeg_save_markers(d, JPEG_APP0 + 1, 0xFFFF);
  if (jpeg_read_header(d, TRUE) != JPEG_HEADER_OK) {
    ctx->eof_hit = true;
    return true;
  }
  ctx->width = static_cast<int>(d->image_width);
  ctx->height = static_cast<int>(d->image_height);
  ctx->components = d->num_components;
  ctx->orientation = orientation_from_markers(d);
  return true;
}

// Stage 2: pixels. Returns false on a libjpeg error.
bool read_pixels(JpegContext* ctx) {
  if (setjmp(ctx->jump)) return false;
  j_decompress_ptr d = &ctx->cinfo;
  d->out_color_space = ctx->out_space;
  d->dct_method = JDCT_ISLOW;
  d->scale_num = 1;
  d->scale_denom = static_cast<unsigned int>(ctx->scale_denom);
  d->do_fancy_upsampling = TRUE;
  if (!jpeg_start_decompress(d)) {  // suspended: the scans run past the end of the data
    ctx->rows_done = 0;
    return true;
  }
  if (static_cast<int>(d->output_components) != ctx->out_channels ||
      static_cast<int>(d->output_width) != ctx->width || static_cast<int>(d->output_height) != ctx->height) {
    std::snprintf(ctx->message, sizeof ctx->message, "unexpected decoder output layout");
    return false;
  }
  const size_t stride = static_cast<size_t>(ctx->width) * ctx->out_channels;
  JSAMPROW rows[16];
  while (d->output_scanline < d->output_height) {
    const JDIMENSION first = d->output_scanline;
    const JDIMENSION n = std::min<JDIMENSION>(16, d->output_height - first);
    for (JDIMENSION i = 0; i < n; ++i) rows[i] = ctx->out + static_cast<size_t>(first + i) * stride;
    if (jpeg_read_scanlines(d, rows, n) == 0) break;  // suspended
  }
  ctx->rows_done = static_cast<int>(d->output_scanline);
  // Pillow also finishes the decompression: errors there count, running out of data does not.
  if (ctx->rows_done == ctx->height) jpeg_finish_decompress(d);
  return true;
}

struct Destroyer {
  JpegContext* ctx;
  ~Destroyer() {
    if (ctx->created) jpeg_destroy_decompress(&ctx->cinfo);
  }
};

}  // namespace

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options,
                  int* orientation) {
  std::vector<JpegContext> holder(1);  // zero-initialised, heap allocated
  JpegContext* ctx = holder.data();
  std::memset(static_cast<void*>(ctx), 0, sizeof(JpegContext));
  ctx->data = data;
  ctx->size = size;
  Destroyer destroyer{ctx};
  if (!read_header(ctx)) throw Error(ErrorCode::Format, name + ": corrupt JPEG: " + ctx->message);
  if (ctx->eof_hit) throw Error(ErrorCode::Format, name + ": JPEG file is truncated (header incomplete)");
  Image img;
  switch (ctx->components) {
    case 1: img.mode = PixelMode::L; ctx->out_space = JCS_GRAYSCALE; ctx->out_channels = 1; break;
    case 3: img.mode = PixelMode::RGB; ctx->out_space = JCS_RGB; ctx->out_channels = 3; break;
    case 4: img.mode = PixelMode::CMYK; ctx->out_space = JCS_CMYK; ctx->out_channels = 4; break;
    default:
      throw Error(ErrorCode::Format, name + ": unsupported JPEG with " + std::to_string(ctx->components) +
                                         " components");
  }
  check_dimensions(ctx->width, ctx->height, name, options);
  ctx->scale_denom = 1;
  if (options.reduce_to_min_side > 0) {
    for (int s : {8, 4, 2}) {  // libjpeg's scaled size: ceil(side / s)
      const int w = (ctx->width + s - 1) / s, h = (ctx->height + s - 1) / s;
      if (std::min(w, h) >= options.reduce_to_min_side) {
        ctx->scale_denom = s;
        ctx->width = w;
        ctx->height = h;
        break;
      }
    }
  }
  img.width = ctx->width;
  img.height = ctx->height;
  allocate_pixels(img);
  ctx->out = img.pixels.data();
  if (!read_pixels(ctx)) throw Error(ErrorCode::Format, name + ": corrupt JPEG: " + ctx->message);
  if (ctx->rows_done < img.height)
    throw Error(ErrorCode::Format, name + ": JPEG file is truncated (" + std::to_string(ctx->rows_done) + " of " +
                                       std::to_string(img.height) + " rows decoded)");
  // Finishing only reads up to the EOI marker; its absence is not an error once every row is in.
  if (img.mode == PixelMode::CMYK) {
    for (auto& v : img.pixels) v = static_cast<uint8_t>(255 - v);  // Pillow's "CMYK;I" raw mode
  }
  if (orientation) *orientation = ctx->orientation;
  return img;
}

}  // namespace clipkit::vision
