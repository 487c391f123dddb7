// libFuzzer target: arbitrary bytes through format detection, every decoder and the CLIP
// preprocessing. Any outcome but a clipkit::Error or a valid image is a bug.
#include <cstddef>
#include <cstdint>

#include "clipkit/error.h"
#include "clipkit/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  clipkit::DecodeOptions opt;
  opt.max_pixels = 1u << 20;  // keep each run small
  opt.apply_exif_orientation = size > 0 && (data[size - 1] & 1);
  try {
    const clipkit::Image img = clipkit::decode_image_memory(data, size, "fuzz", opt);
    if (img.width <= 0 || img.height <= 0) __builtin_trap();
    clipkit::PreprocessConfig cfg;
    cfg.resolution = 13;
    const auto t = clipkit::preprocess(img, cfg);
    if (t.size() != 3u * 13 * 13) __builtin_trap();
  } catch (const clipkit::Error&) {
  }
  return 0;
}
