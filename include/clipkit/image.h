// clipkit/image.h — image decoding and CLIP preprocessing, pixel-exact to Pillow + torchvision.
//
//   clipkit::Image img = clipkit::decode_image_file("cat.jpg");     // in the file's own mode
//   std::vector<float> chw = clipkit::preprocess(img, {});          // [3, 224, 224], normalised
//
// Decoding keeps the image in its own mode, as Pillow's Image.open does (L, LA, P + palette,
// RGB, RGBA, I for 16-bit grayscale). Preprocessing follows clip.clip._transform by default: bicubic
// resize of the short side (Pillow's fixed-point, antialiased algorithm, in the image's own mode),
// center crop, convert('RGB'), /255, (x - mean) / std, float32 CHW; open_clip's other resize modes
// (squash, longest with padding) and bilinear resampling are selected through PreprocessConfig.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace clipkit {

enum class PixelMode {
  L,     // 8-bit gray
  LA,    // 8-bit gray + alpha
  P,     // 8-bit palette index (palette holds RGB triplets; optional per-index alpha)
  RGB,   // 8-bit RGB
  RGBA,  // 8-bit RGB + alpha
  I,     // 32-bit signed gray (Pillow's mode for 16-bit grayscale PNG)
  Mono,  // Pillow mode "1": bilevel, stored one byte per pixel as 0 or 255 (1-bit gray PNG, BMP)
  CMYK,  // 8-bit CMYK as Pillow stores it for 4-component JPEG (Adobe inverted values undone)
};
const char* pixel_mode_name(PixelMode m);  // "L", "LA", "P", "RGB", "RGBA", "I", "1", "CMYK"
int pixel_mode_channels(PixelMode m);      // 1, 2, 1, 3, 4, 1, 1, 4

struct Image {
  int width = 0;
  int height = 0;
  PixelMode mode = PixelMode::RGB;
  std::vector<uint8_t> pixels;       // 8-bit modes: height * width * channels, row-major interleaved
  std::vector<int32_t> pixels32;     // mode I: height * width
  std::vector<uint8_t> palette;      // mode P: RGB triplets (up to 256 * 3)
  std::vector<uint8_t> palette_alpha;  // mode P with tRNS: alpha per palette index (may be empty)
  // Palette indices at or beyond palette.size() / 3 map to gray (i, i, i), as in Pillow.
};

struct DecodeOptions {
  uint64_t max_pixels = 100'000'000;    // refuse larger images before allocating
  bool apply_exif_orientation = false;  // the reference ignores EXIF orientation
  // JPEG only: decode at 1/2, 1/4 or 1/8 of the size with libjpeg's DCT scaling, the smallest of
  // them whose sides both stay at least this long (0 = always full size, the exact path). Much
  // faster on camera-sized photos; the pixels then differ slightly from a full decode + resize.
  int reduce_to_min_side = 0;
};

// Decodes JPEG, PNG, WebP, BMP or GIF (first frame); the format is detected from the bytes.
// Throws Error (Format / Limit / NotFound / Io) naming the file and the problem. Size limits are
// checked from the header, before any pixel buffer is allocated.
Image decode_image_file(const std::string& path, const DecodeOptions& options = {});
Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name,
                          const DecodeOptions& options = {});

// Pillow's resampling filter for the resize (P and 1 images always use NEAREST, as in Pillow).
enum class Interpolation { Bicubic, Bilinear };
// How the image is brought to n x n (open_clip's preprocess_cfg resize_mode):
//  Shortest: short side to n (torchvision Resize(n)), then CenterCrop(n) — OpenAI's transform;
//  Squash:   both sides to n, aspect ratio ignored (Resize((n, n))), no crop;
//  Longest:  long side to n keeping the aspect ratio (sides round(side / scale)), then centred
//            padding to n x n with fill_color in the image's own mode (open_clip's ResizeKeepRatio
//            with longest=1 followed by CenterCropOrPad).
enum class ResizeMode { Shortest, Squash, Longest };
const char* interpolation_name(Interpolation i);  // "bicubic", "bilinear"
const char* resize_mode_name(ResizeMode m);       // "shortest", "squash", "longest"
// Parse the names above; throw Error(InvalidArgument) naming `what` and the accepted values.
Interpolation parse_interpolation(const std::string& name, const std::string& what = "interpolation");
ResizeMode parse_resize_mode(const std::string& name, const std::string& what = "resize_mode");

// Defaults are OpenAI's transform: 224 px, shortest side + center crop, bicubic, CLIP mean/std.
struct PreprocessConfig {
  int resolution = 224;
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};
  Interpolation interpolation = Interpolation::Bicubic;
  ResizeMode resize_mode = ResizeMode::Shortest;
  int fill_color = 0;  // Longest: the padding value of every band (a palette index for P images)
};

// Pillow's Image.resize(size, BICUBIC) in the image's own mode (P uses NEAREST, RGBA/LA are
// resized premultiplied), reproduced bit for bit.
Image resize_bicubic(const Image& image, int width, int height);
// Pillow's Image.resize(size, filter) with the given filter, same rules; an unchanged size is a copy.
Image resize_image(const Image& image, int width, int height, Interpolation filter);
// torchvision Resize(n): short side to n, long side int(n * long / short); unchanged size is a no-op.
Image resize_short_side(const Image& image, int size);
// torchvision CenterCrop(n) with Python's round-half-to-even offsets and zero padding when smaller.
Image center_crop(const Image& image, int size);
// Pillow's convert("RGB"): alpha dropped, palette expanded, gray replicated, I clipped to 0..255.
Image convert_to_rgb(const Image& image);

// The whole chain: resize → crop/pad → RGB → /255 → normalise, following config.resize_mode and
// config.interpolation. Writes 3 * n * n floats (CHW) to `out`.
void preprocess(const Image& image, const PreprocessConfig& config, float* out);
std::vector<float> preprocess(const Image& image, const PreprocessConfig& config);
// The resized + cropped 8-bit RGB image (before normalisation), for checks and debugging.
Image preprocess_to_rgb8(const Image& image, int resolution);  // OpenAI's transform (shortest, bicubic)
Image preprocess_to_rgb8(const Image& image, const PreprocessConfig& config);

// Geometry of the reference transform for an image of the given size: the size after
// Resize(resolution) and the CenterCrop box [left, top, right, bottom] in that resized image
// (left/top may be negative when the crop pads).
struct PreprocessGeometry {
  int resized_width = 0, resized_height = 0;
  int crop_left = 0, crop_top = 0, crop_right = 0, crop_bottom = 0;
};
PreprocessGeometry preprocess_geometry(int width, int height, int resolution);

// Applies EXIF orientation tag value 1..8 (as ImageOps.exif_transpose); other values: unchanged.
Image apply_orientation(const Image& image, int orientation);

}  // namespace clipkit
