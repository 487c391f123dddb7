// GIF, first frame, the way Pillow 9.4 opens it: mode P with the frame's palette (local, else
// global), or L when there is no palette or it is the identity gray ramp. The canvas is the
// logical screen (grown to hold the frame), filled with the frame's transparent index if it has
// one, else 0; the frame is drawn at its offset.
#include <gif_lib.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "clipkit/error.h"
#include "vision/internal.h"

namespace clipkit::vision {
namespace {

// Reads the file; a read starting at its end gets a block terminator and the trailer (once), so
// that a file cut after the frame's last data sub-block still decodes (Pillow stops reading as soon as
// every pixel is in), while a cut inside the pixel data remains an error.
struct Reader {
  const uint8_t* data;
  size_t size;
  size_t pos;
  size_t synthetic;
};

int read_fn(GifFileType* gif, GifByteType* out, int n) {
  static const GifByteType kTail[2] = {0x00, 0x3B};
  auto* r = static_cast<Reader*>(gif->UserData);
  if (n <= 0) return 0;
  size_t want = static_cast<size_t>(n);
  const size_t got = std::min(want, r->size - r->pos);
  std::memcpy(out, r->data + r->pos, got);
  r->pos += got;
  size_t total = got;
  want -= got;
  while (got == 0 && want > 0 && r->synthetic < 2) {  // only for reads that start at the end
    out[total++] = kTail[r->synthetic++];
    --want;
  }
  return static_cast<int>(total);
}

std::string gif_error(int code) {
  const char* s = GifErrorString(code);
  return s ? s : "unknown error";
}

// Pillow's _is_palette_needed: false when entry i is (i, i, i) for every entry.
bool palette_needed(const ColorMapObject* map) {
  for (int i = 0; i < map->ColorCount; ++i) {
    const GifColorType& c = map->Colors[i];
    if (!(c.Red == i && c.Green == i && c.Blue == i)) return true;
  }
  return false;
}

struct Closer {
  GifFileType* gif;
  ~Closer() {
    if (gif) {
      int err = 0;
      DGifCloseFile(gif, &err);
    }
  }
};

}  // namespace

Image decode_gif(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options) {
  Reader reader{data, size, 0, 0};
  int err = 0;
  GifFileType* gif = DGifOpen(&reader, read_fn, &err);
  if (!gif) throw Error(ErrorCode::Format, name + ": corrupt GIF: " + gif_error(err));
  Closer closer{gif};
  int transparency = -1;
  for (;;) {
    GifRecordType type;
    if (DGifGetRecordType(gif, &type) == GIF_ERROR)
      throw Error(ErrorCode::Format, name + ": corrupt or truncated GIF: " + gif_error(gif->Error));
    if (type == TERMINATE_RECORD_TYPE) throw Error(ErrorCode::Format, name + ": GIF file contains no image");
    if (type == EXTENSION_RECORD_TYPE) {
      int code = 0;
      GifByteType* ext = nullptr;
      if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR)
        throw Error(ErrorCode::Format, name + ": corrupt or truncated GIF: " + gif_error(gif->Error));
      if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4) {
        if (ext[1] & 1) transparency = ext[4];
        else transparency = -1;
      }
      while (ext) {
        if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR)
          throw Error(ErrorCode::Format, name + ": corrupt or truncated GIF: " + gif_error(gif->Error));
      }
      continue;
    }
    if (type != IMAGE_DESC_RECORD_TYPE) continue;
    if (DGifGetImageDesc(gif) == GIF_ERROR)
      throw Error(ErrorCode::Format, name + ": corrupt or truncated GIF: " + gif_error(gif->Error));
    const GifImageDesc& d = gif->Image;
    const int64_t x0 = d.Left, y0 = d.Top, fw = d.Width, fh = d.Height;
    const int64_t canvas_w = std::max<int64_t>(gif->SWidth, x0 + fw);
    const int64_t canvas_h = std::max<int64_t>(gif->SHeight, y0 + fh);
    check_dimensions(canvas_w, canvas_h, name, options);
    const ColorMapObject* map = d.ColorMap ? d.ColorMap : gif->SColorMap;
    Image img;
    img.width = static_cast<int>(canvas_w);
    img.height = static_cast<int>(canvas_h);
    if (map && map->Colors && map->ColorCount > 0 && palette_needed(map)) {
      img.mode = PixelMode::P;
      for (int i = 0; i < map->ColorCount && i < 256; ++i) {
        img.palette.push_back(map->Colors[i].Red);
        img.palette.push_back(map->Colors[i].Green);
        img.palette.push_back(map->Colors[i].Blue);
      }
      if (transparency >= 0) {
        img.palette_alpha.assign(std::max<size_t>(img.palette.size() / 3, static_cast<size_t>(transparency) + 1), 255);
        img.palette_alpha[static_cast<size_t>(transparency)] = 0;
      }
    } else {
      img.mode = PixelMode::L;
    }
    allocate_pixels(img);
    if (transparency >= 0) std::fill(img.pixels.begin(), img.pixels.end(), static_cast<uint8_t>(transparency));
    if (fw > 0 && fh > 0) {
      std::vector<GifPixelType> line(static_cast<size_t>(fw));
      auto put_row = [&](int64_t row) {
        if (DGifGetLine(gif, line.data(), static_cast<int>(fw)) == GIF_ERROR)
          throw Error(ErrorCode::Format, name + ": corrupt or truncated GIF image data: " + gif_error(gif->Error));
        std::memcpy(&img.pixels[static_cast<size_t>(y0 + row) * img.width + x0], line.data(),
                    static_cast<size_t>(fw));
      };
      if (d.Interlace) {
        static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
        for (int pass = 0; pass < 4; ++pass)
          for (int64_t row = start[pass]; row < fh; row += step[pass]) put_row(row);
      } else {
        for (int64_t row = 0; row < fh; ++row) put_row(row);
      }
    }
    return img;
  }
}

}  // namespace clipkit::vision
