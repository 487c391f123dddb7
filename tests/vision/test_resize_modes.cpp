// open_clip's resize modes and bilinear resampling, composed from the parts the golden tests pin
// down (Pillow-exact resize, convert('RGB')): squash = resize to n x n; longest = long side to n
// keeping the ratio (Python rounding), then centred padding with fill_color in the image's own
// mode before convert('RGB'); bilinear = Pillow's triangle filter, support scaled by the downscale.
#include <gtest/gtest.h>

#include <cstring>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

Image image(const std::string& name) { return decode_image_file(test::data_path("images/" + name)); }

PreprocessConfig config(int n, ResizeMode mode, Interpolation interp = Interpolation::Bicubic, int fill = 0) {
  PreprocessConfig c;
  c.resolution = n;
  c.resize_mode = mode;
  c.interpolation = interp;
  c.fill_color = fill;
  return c;
}

// Rows [y0, y0 + h) x columns [x0, x0 + w) of `big` equal `small` (both RGB).
void expect_window(const Image& big, const Image& small, int x0, int y0) {
  for (int y = 0; y < small.height; ++y)
    ASSERT_EQ(0, std::memcmp(&big.pixels[(static_cast<size_t>(y0 + y) * big.width + x0) * 3],
                             &small.pixels[static_cast<size_t>(y) * small.width * 3], small.width * 3u))
        << "row " << y;
}

void expect_fill(const Image& img, int x0, int y0, int w, int h, const uint8_t rgb[3]) {
  for (int y = y0; y < y0 + h; ++y)
    for (int x = x0; x < x0 + w; ++x)
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(img.pixels[(static_cast<size_t>(y) * img.width + x) * 3 + c], rgb[c]) << x << "," << y;
}

}  // namespace

TEST(ResizeModes, NamesRoundTripAndBadNamesAreRefused) {
  for (ResizeMode m : {ResizeMode::Shortest, ResizeMode::Squash, ResizeMode::Longest})
    EXPECT_EQ(parse_resize_mode(resize_mode_name(m)), m);
  for (Interpolation i : {Interpolation::Bicubic, Interpolation::Bilinear})
    EXPECT_EQ(parse_interpolation(interpolation_name(i)), i);
  try {
    parse_resize_mode("crop", "--resize-mode");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("--resize-mode"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("crop"), std::string::npos);
  }
  EXPECT_THROW(parse_interpolation("lanczos"), Error);
}

TEST(ResizeModes, DefaultsAreOpenAIsTransform) {
  const PreprocessConfig c;
  EXPECT_EQ(c.resize_mode, ResizeMode::Shortest);
  EXPECT_EQ(c.interpolation, Interpolation::Bicubic);
  EXPECT_EQ(c.fill_color, 0);
  const Image img = image("01_chelsea_q90_progressive.jpg");
  const Image a = preprocess_to_rgb8(img, 40), b = preprocess_to_rgb8(img, config(40, ResizeMode::Shortest));
  EXPECT_EQ(a.pixels, b.pixels);
}

TEST(ResizeModes, SquashIsAResizeToNByN) {
  for (const char* name : {"02_coffee.png", "05_rgba_alpha.png", "07_tall_immuno.png", "11_palette.png"}) {
    SCOPED_TRACE(name);
    const Image img = image(name);
    for (Interpolation interp : {Interpolation::Bicubic, Interpolation::Bilinear}) {
      const Image got = preprocess_to_rgb8(img, config(37, ResizeMode::Squash, interp));
      EXPECT_EQ(got.pixels, convert_to_rgb(resize_image(img, 37, 37, interp)).pixels);
    }
  }
  // Already n x n: no resampling at all.
  const Image px = image("08_pixel_1x1.png");
  EXPECT_EQ(preprocess_to_rgb8(px, config(1, ResizeMode::Squash)).pixels, convert_to_rgb(px).pixels);
}

TEST(ResizeModes, LongestResizesTheLongSideAndPadsTheShortOne) {
  // 240 x 160 to 64: ratio max(160/64, 240/64) = 3.75 -> 64 x round(42.67) = 64 x 43; the 21 rows
  // of padding split 10 above, 11 below.
  const Image img = image("02_coffee.png");
  const uint8_t zero[3] = {0, 0, 0}, gray[3] = {77, 77, 77};
  const Image got = preprocess_to_rgb8(img, config(64, ResizeMode::Longest));
  ASSERT_EQ(got.width, 64);
  ASSERT_EQ(got.height, 64);
  expect_window(got, convert_to_rgb(resize_bicubic(img, 64, 43)), 0, 10);
  expect_fill(got, 0, 0, 64, 10, zero);
  expect_fill(got, 0, 53, 64, 11, zero);
  const Image filled = preprocess_to_rgb8(img, config(64, ResizeMode::Longest, Interpolation::Bilinear, 77));
  expect_window(filled, convert_to_rgb(resize_image(img, 64, 43, Interpolation::Bilinear)), 0, 10);
  expect_fill(filled, 0, 0, 64, 10, gray);
  expect_fill(filled, 0, 53, 64, 11, gray);
  // 30 x 300 to 28: 3 x 28 (round(2.8)), padded 12 left and 13 right.
  const Image tall = image("07_tall_immuno.png");
  const Image t = preprocess_to_rgb8(tall, config(28, ResizeMode::Longest, Interpolation::Bicubic, 255));
  const uint8_t white[3] = {255, 255, 255};
  expect_window(t, convert_to_rgb(resize_bicubic(tall, 3, 28)), 12, 0);
  expect_fill(t, 0, 0, 12, 28, white);
  expect_fill(t, 15, 0, 13, 28, white);
}

TEST(ResizeModes, LongestPadsInTheImagesOwnMode) {
  // A palette image is padded with palette index fill_color (then expanded by convert('RGB')).
  const Image pal = image("11_palette.png");  // 120 x 90 -> 48 x 36, 6 rows above and below
  ASSERT_EQ(pal.mode, PixelMode::P);
  const int index = 3;
  const uint8_t rgb[3] = {pal.palette[3 * index], pal.palette[3 * index + 1], pal.palette[3 * index + 2]};
  const Image got = preprocess_to_rgb8(pal, config(48, ResizeMode::Longest, Interpolation::Bicubic, index));
  expect_window(got, convert_to_rgb(resize_bicubic(pal, 48, 36)), 0, 6);
  expect_fill(got, 0, 0, 48, 6, rgb);
  expect_fill(got, 0, 42, 48, 6, rgb);
  // RGBA: every band (alpha too) takes the fill, and convert('RGB') drops the alpha.
  const Image rgba = image("05_rgba_alpha.png");  // 150 x 100 -> 30 x 20, 5 rows above and below
  const uint8_t v[3] = {9, 9, 9};
  const Image r = preprocess_to_rgb8(rgba, config(30, ResizeMode::Longest, Interpolation::Bicubic, 9));
  expect_window(r, convert_to_rgb(resize_bicubic(rgba, 30, 20)), 0, 5);
  expect_fill(r, 0, 0, 30, 5, v);
  expect_fill(r, 0, 25, 30, 5, v);
}

TEST(ResizeModes, BilinearIsPillowsTriangleFilter) {
  // Upscaling 2 pixels to 4 with Pillow's bilinear filter (support 1, centres at (x + 0.5) / 2):
  // output 0 and 3 copy the edge pixels, outputs 1 and 2 weigh them 3:1 and 1:3.
  Image two;
  two.width = 2;
  two.height = 1;
  two.mode = PixelMode::L;
  two.pixels = {0, 200};
  const Image up = resize_image(two, 4, 1, Interpolation::Bilinear);
  EXPECT_EQ(up.pixels, (std::vector<uint8_t>{0, 50, 150, 200}));
  // Bicubic overshoots at the same step (a = -0.5): the outputs differ.
  EXPECT_NE(resize_image(two, 4, 1, Interpolation::Bicubic).pixels, up.pixels);
  // Downscaling 4 -> 2 widens the triangle to support 2: output 0 (centre 1) takes pixels 0, 1, 2
  // with weights 3 : 3 : 1, output 1 (centre 3) pixels 1, 2, 3 with 1 : 3 : 3 (Pillow's window ends
  // at int(centre + support + 0.5)): 200 / 7 and 1200 / 7, rounded.
  Image four = two;
  four.width = 4;
  four.pixels = {0, 0, 200, 200};
  EXPECT_EQ(resize_image(four, 2, 1, Interpolation::Bilinear).pixels, (std::vector<uint8_t>{29, 171}));
}
