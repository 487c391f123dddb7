// libFuzzer target that reaches each decoder directly: the first byte picks a format whose
// signature is prepended to the rest of the input (so mutations go into the headers and data
// rather than into the signature).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const char* const kMagic[] = {"\xFF\xD8\xFF", "\x89PNG\r\n\x1a\n", "GIF89a", "BM", "RIFF\x10\x00\x00\x00WEBPVP8"};
  static const size_t kLen[] = {3, 8, 6, 2, 15};
  const unsigned f = data[0] % 5;
  std::vector<uint8_t> buf(kLen[f] + size - 1);
  std::memcpy(buf.data(), kMagic[f], kLen[f]);
  if (size > 1) std::memcpy(buf.data() + kLen[f], data + 1, size - 1);
  clipkit::DecodeOptions opt;
  opt.max_pixels = 1u << 20;
  try {
    const clipkit::Image img = clipkit::decode_image_memory(buf.data(), buf.size(), "fuzz", opt);
    (void)clipkit::preprocess_to_rgb8(img, 9);
  } catch (const clipkit::Error&) {
  }
  return 0;
}
