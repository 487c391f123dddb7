// Internals of the image pipeline: format sniffing, the per-format decoders, EXIF parsing and
// the Pillow-exact resampling kernels. Public API: include/clipkit/image.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "clipkit/image.h"

namespace clipkit::vision {

enum class ImageFormat { Unknown, Jpeg, Png, Gif, Bmp, Webp };
ImageFormat detect_format(const uint8_t* data, size_t size);

// Every decoder checks the header dimensions with this before allocating pixels: zero size is a
// Format error, more than options.max_pixels a Limit error; both name the file.
void check_dimensions(int64_t width, int64_t height, const std::string& name, const DecodeOptions& options);
// Allocates the pixel storage of `img` for its width/height/mode.
void allocate_pixels(Image& img);

// Each decoder returns the image in its own mode and, through `orientation`, the EXIF
// orientation tag (0 when absent or unreadable).
Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options,
                  int* orientation);
Image decode_png(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options,
                 int* orientation);
Image decode_gif(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options);
Image decode_bmp(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options);
Image decode_webp(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& options,
                  int* orientation);

// Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF blob (starting at the byte-order
// mark); 0 when absent or malformed. Never reads out of bounds.
int exif_orientation_from_tiff(const uint8_t* tiff, size_t size);

// Resizes `src` to out_w x out_h the way Pillow's Image.resize(BICUBIC or BILINEAR) does for its
// mode and writes only the window [x0, x0 + w) x [y0, y0 + h) of the result (which must lie inside
// it) to `dst` (same mode; palette copied). Exact for every pixel of the window.
void resize_window(const Image& src, int out_w, int out_h, int x0, int y0, int w, int h, Image& dst,
                   Interpolation interpolation = Interpolation::Bicubic);

}  // namespace clipkit::vision
