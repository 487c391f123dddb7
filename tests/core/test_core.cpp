#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "clipkit/embeddings.h"
#include "clipkit/error.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "core/npy.h"
#include "support/test_support.h"

using namespace clipkit;

TEST(Half, RoundTripsEveryHalfValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_half(f), h) << "half bits " << h;
  }
}

TEST(Half, RoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(1.0f + 1.0f / 2048.0f), 0x3c00);            // halfway, even stays
  EXPECT_EQ(float_to_half(1.0f + 3.0f / 2048.0f), 0x3c02);            // halfway, odd rounds up
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);                         // overflows to inf
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);            // smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);            // halfway to zero, even
  EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(bf16_to_float(float_to_bf16(3.0f)), 3.0f);
}

TEST(Embeddings, NormalizeMakesUnitRowsAndKeepsZeroRows) {
  Embeddings e(2, 3);
  e.data = {3, 4, 0, 0, 0, 0};
  e.normalize();
  EXPECT_FLOAT_EQ(e.row(0)[0], 0.6f);
  EXPECT_FLOAT_EQ(e.row(0)[1], 0.8f);
  EXPECT_EQ(e.row(1)[0], 0.0f);
}

TEST(Npy, WritesAndReadsBack) {
  const std::string dir = test::temp_dir();
  std::vector<float> v(2 * 3 * 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f;
  write_npy(dir + "/a.npy", {2, 3, 4}, v.data());
  Tensor t = read_npy(dir + "/a.npy");
  EXPECT_EQ(t.shape, (Shape{2, 3, 4}));
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.to_f32(), v);
  const std::string bytes = read_file(dir + "/a.npy");
  EXPECT_EQ((bytes.size() - v.size() * 4) % 64, 0u);  // header aligned to 64 bytes
  EXPECT_NE(bytes.find("'shape': (2, 3, 4)"), std::string::npos);
}

TEST(Npy, OneDimensionalShapeHasTrailingComma) {
  const std::string s = npy_encode(DType::I32, {5}, std::vector<int32_t>(5, 1).data());
  EXPECT_NE(s.find("'shape': (5,)"), std::string::npos);
}

TEST(Npy, TruncatedFileIsAFormatError) {
  const std::string dir = test::temp_dir();
  std::vector<float> v(100, 1.0f);
  const std::string bytes = npy_encode(DType::F32, {100}, v.data());
  std::ofstream(dir + "/t.npy", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 10));
  try {
    read_npy(dir + "/t.npy");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
  }
}

TEST(MappedFile, MissingFileNamesThePath) {
  try {
    MappedFile::open("/nonexistent/clipkit-file");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/clipkit-file"), std::string::npos);
  }
}

TEST(AtomicWrite, ReplacesContentAndLeavesNoTemporaryFiles) {
  const std::string dir = test::temp_dir();
  write_file_atomic(dir + "/f", "one", 3);
  write_file_atomic(dir + "/f", "second", 6);
  EXPECT_EQ(read_file(dir + "/f"), "second");
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++n; }
  EXPECT_EQ(n, 1);
}
