// DecodeOptions::reduce_to_min_side (the CLI's --fast-decode): libjpeg's DCT scaling picks the
// smallest of 1/2, 1/4 and 1/8 that keeps both sides at least the minimum; other formats and a
// minimum of 0 decode at full size, unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "clipkit/image.h"
#include "support/test_support.h"

namespace clipkit {
namespace {

using test::data_path;

TEST(FastDecode, JpegScaleKeepsBothSidesAtLeastTheMinimum) {
  const std::string f = data_path("images/03_rocket_q75.jpg");  // 640 x 427
  const Image exact = decode_image_file(f);
  ASSERT_EQ(exact.width, 640);
  ASSERT_EQ(exact.height, 427);
  struct Case {
    int min_side, width, height;
  };
  for (const Case c : {Case{0, 640, 427}, Case{50, 80, 54}, Case{54, 80, 54}, Case{55, 160, 107}, Case{107, 160, 107},
                       Case{108, 320, 214}, Case{214, 320, 214}, Case{215, 640, 427}}) {
    DecodeOptions o;
    o.reduce_to_min_side = c.min_side;
    const Image img = decode_image_file(f, o);
    EXPECT_EQ(img.width, c.width) << c.min_side;
    EXPECT_EQ(img.height, c.height) << c.min_side;
    EXPECT_EQ(img.pixels.size(), static_cast<size_t>(c.width) * c.height * 3) << c.min_side;
    if (c.width == 640) EXPECT_EQ(img.pixels, exact.pixels) << c.min_side;  // full size: the exact decode
  }
}

TEST(FastDecode, OtherFormatsDecodeAtFullSize) {
  DecodeOptions o;
  o.reduce_to_min_side = 10;
  const Image a = decode_image_file(data_path("images/00_astronaut.png"), o);
  const Image b = decode_image_file(data_path("images/00_astronaut.png"));
  EXPECT_EQ(a.width, 200);
  EXPECT_EQ(a.pixels, b.pixels);
}

TEST(FastDecode, PreprocessedImageStaysCloseToTheExactOne) {
  // At twice the model's resolution (what --fast-decode asks for), the tensor CLIP sees moves little.
  PreprocessConfig cfg;
  cfg.resolution = 64;
  for (const char* name : {"images/01_chelsea_q90_progressive.jpg", "images/03_rocket_q75.jpg", "vision/bench_1024x768.jpg"}) {
    DecodeOptions o;
    o.reduce_to_min_side = 2 * cfg.resolution;
    const Image full = decode_image_file(data_path(name));
    const Image reduced = decode_image_file(data_path(name), o);
    EXPECT_LT(reduced.width, full.width) << name;  // the scaling was used
    EXPECT_GE(std::min(reduced.width, reduced.height), 2 * cfg.resolution) << name;
    const std::vector<float> fast = preprocess(reduced, cfg);
    const std::vector<float> exact = preprocess(full, cfg);
    const double c = test::cosine(fast.data(), exact.data(), exact.size());
    RecordProperty(name, std::to_string(c));
    std::printf("%s: pixel cosine to the exact path %.6f\n", name, c);
    EXPECT_GE(c, 0.995) << name;
  }
}

}  // namespace
}  // namespace clipkit
