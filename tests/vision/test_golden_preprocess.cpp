// The reference fixtures: every image of tests/data/images through decode + preprocess must give
// the golden pixel_values of tiny-vit (resolution 64) — 8-bit pixels identical, floats within 1e-6.
#include <gtest/gtest.h>

#include <cmath>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "vision/vision_test_util.h"

namespace clipkit {
namespace {

struct Golden {
  nlohmann::json meta;
  std::vector<float> pixels;
  std::vector<int64_t> shape;
};

const Golden& golden() {
  static const Golden g = [] {
    Golden x;
    x.meta = nlohmann::json::parse(test::read_bytes(test::data_path("golden/tiny-vit.json")));
    x.pixels = test::golden_pixel_values(test::data_path("golden/tiny-vit.safetensors"), &x.shape);
    return x;
  }();
  return g;
}

const std::array<float, 3> kMean = {0.48145466f, 0.4578275f, 0.40821073f};
const std::array<float, 3> kStd = {0.26862954f, 0.26130258f, 0.27577711f};

TEST(GoldenPreprocess, ShapeOfFixture) {
  const auto& g = golden();
  ASSERT_EQ(g.shape, (std::vector<int64_t>{12, 3, 64, 64}));
  ASSERT_EQ(g.meta.at("images").size(), 12u);
}

class GoldenImage : public ::testing::TestWithParam<int> {};

TEST_P(GoldenImage, DecodeGeometryPixelsAndTensor) {
  const auto& g = golden();
  const int i = GetParam();
  const auto& info = g.meta.at("images").at(static_cast<size_t>(i));
  const std::string file = info.at("file");
  SCOPED_TRACE(file);
  const Image img = decode_image_file(test::data_path(file));
  EXPECT_EQ(pixel_mode_name(img.mode), info.at("mode").get<std::string>());
  EXPECT_EQ(img.width, info.at("size")[0].get<int>());
  EXPECT_EQ(img.height, info.at("size")[1].get<int>());

  const int n = 64;
  const PreprocessGeometry geo = preprocess_geometry(img.width, img.height, n);
  EXPECT_EQ(geo.resized_width, info.at("resized_size")[0].get<int>());
  EXPECT_EQ(geo.resized_height, info.at("resized_size")[1].get<int>());
  EXPECT_EQ(geo.crop_left, info.at("crop_box")[0].get<int>());
  EXPECT_EQ(geo.crop_top, info.at("crop_box")[1].get<int>());
  EXPECT_EQ(geo.crop_right, info.at("crop_box")[2].get<int>());
  EXPECT_EQ(geo.crop_bottom, info.at("crop_box")[3].get<int>());

  // 8-bit pixels recovered from the golden floats: x * std + mean, * 255, rounded (exact).
  const float* ref = g.pixels.data() + static_cast<size_t>(i) * 3 * n * n;
  const Image rgb = preprocess_to_rgb8(img, n);
  ASSERT_EQ(rgb.mode, PixelMode::RGB);
  ASSERT_EQ(rgb.width, n);
  ASSERT_EQ(rgb.height, n);
  int mismatches = 0;
  for (int c = 0; c < 3; ++c) {
    for (int p = 0; p < n * n; ++p) {
      const double v = (static_cast<double>(ref[c * n * n + p]) * kStd[c] + kMean[c]) * 255.0;
      const int expected = static_cast<int>(std::lround(v));
      ASSERT_LT(std::fabs(v - expected), 0.01) << "golden value is not an 8-bit level";
      if (rgb.pixels[static_cast<size_t>(p) * 3 + c] != expected) ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0);

  PreprocessConfig cfg;
  cfg.resolution = n;
  const std::vector<float> out = preprocess(img, cfg);
  ASSERT_EQ(out.size(), static_cast<size_t>(3 * n * n));
  const double diff = test::max_abs_diff(out.data(), ref, out.size());
  EXPECT_LE(diff, 1e-6);
  EXPECT_EQ(diff, 0.0) << "expected bit-exact float32 normalisation";
}

INSTANTIATE_TEST_SUITE_P(AllFixtureImages, GoldenImage, ::testing::Range(0, 12));

TEST(GoldenPreprocess, StepByStepEqualsFusedPath) {
  // resize_short_side -> center_crop -> convert_to_rgb must equal the fused window path.
  for (const auto& info : golden().meta.at("images")) {
    const std::string file = info.at("file");
    SCOPED_TRACE(file);
    const Image img = decode_image_file(test::data_path(file));
    const Image a = convert_to_rgb(center_crop(resize_short_side(img, 64), 64));
    const Image b = preprocess_to_rgb8(img, 64);
    EXPECT_EQ(a.pixels, b.pixels);
  }
}

}  // namespace
}  // namespace clipkit
