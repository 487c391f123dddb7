// Thumbnails (the server's web page, the evaluation report's gallery): their size and WebP encoding.
#include <gtest/gtest.h>
#include <webp/decode.h>

#include "clipkit/image.h"
#include "vision/thumbnail.h"

using namespace clipkit;

TEST(Thumbnails, SizeAndEncoding) {
  int w = 0, h = 0;
  vision::thumbnail_size(1000, 500, 256, &w, &h);
  EXPECT_EQ(w, 256);
  EXPECT_EQ(h, 128);
  vision::thumbnail_size(300, 1000, 256, &w, &h);  // 300 * 0.256 = 76.8
  EXPECT_EQ(w, 77);
  EXPECT_EQ(h, 256);
  vision::thumbnail_size(2000, 3, 256, &w, &h);  // never below one pixel
  EXPECT_EQ(w, 256);
  EXPECT_EQ(h, 1);
  vision::thumbnail_size(100, 50, 256, &w, &h);  // never enlarged
  EXPECT_EQ(w, 100);
  EXPECT_EQ(h, 50);
  Image img;
  img.width = 600;
  img.height = 300;
  img.mode = PixelMode::L;
  img.pixels.assign(600 * 300, 128);
  const std::string webp = vision::encode_thumbnail(img, 256);
  ASSERT_TRUE(WebPGetInfo(reinterpret_cast<const uint8_t*>(webp.data()), webp.size(), &w, &h));
  EXPECT_EQ(w, 256);
  EXPECT_EQ(h, 128);
}
