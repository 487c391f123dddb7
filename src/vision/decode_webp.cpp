// WebP (first frame) through libwebp's animation decoder, as Pillow 9.4 does: RGBA output,
// mode RGBA when the file reports alpha, else RGB.
#include <webp/decode.h>
#include <webp/demux.h>

#include <cstring>

#include "clipkit/error.h"
#include "vision/internal.h"

namespace clipkit::vision {

Image decode_webp(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options,
                  int* orientation) {
  WebPBitstreamFeatures features;
  const VP8StatusCode st = WebPGetFeatures(data, size, &features);
  if (st == VP8_STATUS_NOT_ENOUGH_DATA) throw Error(ErrorCode::Format, name + ": WebP file is truncated");
  if (st != VP8_STATUS_OK) throw Error(ErrorCode::Format, name + ": corrupt WebP header");
  WebPData wd{data, size};
  WebPDemuxer* demux = WebPDemux(&wd);
  if (!demux) throw Error(ErrorCode::Format, name + ": corrupt or truncated WebP file");
  const int64_t cw = WebPDemuxGetI(demux, WEBP_FF_CANVAS_WIDTH), ch = WebPDemuxGetI(demux, WEBP_FF_CANVAS_HEIGHT);
  int orient = 0;
  WebPChunkIterator it;
  if (WebPDemuxGetChunk(demux, "EXIF", 1, &it)) {
    const uint8_t* p = it.chunk.bytes;
    size_t n = it.chunk.size;
    if (n >= 6 && std::memcmp(p, "Exif\0\0", 6) == 0) {
      p += 6;
      n -= 6;
    }
    orient = exif_orientation_from_tiff(p, n);
    WebPDemuxReleaseChunkIterator(&it);
  }
  WebPDemuxDelete(demux);
  check_dimensions(cw, ch, name, options);
  check_dimensions(features.width, features.height, name, options);

  WebPAnimDecoderOptions opts;
  if (!WebPAnimDecoderOptionsInit(&opts)) throw Error(ErrorCode::Internal, name + ": cannot set up the WebP decoder");
  opts.color_mode = MODE_RGBA;
  opts.use_threads = 0;
  WebPAnimDecoder* dec = WebPAnimDecoderNew(&wd, &opts);
  if (!dec) throw Error(ErrorCode::Format, name + ": corrupt or truncated WebP file");
  struct Closer {
    WebPAnimDecoder* d;
    ~Closer() { WebPAnimDecoderDelete(d); }
  } closer{dec};
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(dec, &info)) throw Error(ErrorCode::Format, name + ": corrupt WebP file");
  check_dimensions(info.canvas_width, info.canvas_height, name, options);
  uint8_t* buf = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(dec, &buf, &timestamp) || !buf)
    throw Error(ErrorCode::Format, name + ": corrupt or truncated WebP image data");
  Image img;
  img.width = static_cast<int>(info.canvas_width);
  img.height = static_cast<int>(info.canvas_height);
  img.mode = features.has_alpha ? PixelMode::RGBA : PixelMode::RGB;
  allocate_pixels(img);
  const size_t n = static_cast<size_t>(img.width) * img.height;
  if (img.mode == PixelMode::RGBA) {
    std::memcpy(img.pixels.data(), buf, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) std::memcpy(&img.pixels[3 * i], buf + 4 * i, 3);
  }
  if (orientation) *orientation = orient;
  return img;
}

}  // namespace clipkit::vision
