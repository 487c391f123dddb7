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

namespace {

// A version-1 .npy with the given header text (padded to `header_len` bytes) and data bytes.
std::string npy_with_header(const std::string& header, size_t header_len, const std::string& data) {
  std::string h = header;
  h.append(header_len - 1 - h.size(), ' ');
  h += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(h.size() & 0xff));
  out.push_back(static_cast<char>(h.size() >> 8));
  return out + h + data;
}

std::string npy_error(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  try {
    read_npy(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Npy, HostileShapesAreFormatErrors) {
  // Shapes whose element count overflows int64, dimensions too long for stoll, or a product
  // larger than the file: each one a Format error naming the file, never a huge view.
  const std::string path = test::temp_dir() + "/h.npy";
  const std::string data(64, '\0');
  for (const char* shape : {"(4294967296, 4294967296, 16)", "(99999999999999999999999999,)", "(3037000500, 3037000500)",
                            "(17,)", "(1, 2, 3, 4, 5)"}) {
    const std::string header = std::string("{'descr': '<f4', 'fortran_order': False, 'shape': ") + shape + ", }";
    const std::string msg = npy_error(path, npy_with_header(header, 118, data));
    EXPECT_FALSE(msg.empty()) << shape;
  }
  EXPECT_NE(npy_error(path, npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                                                std::string(40, '1') + ",), }",
                                            118, data))
                .find("exceeds the file size"),
            std::string::npos);
  // 33 dimensions of 1
  std::string many = "(";
  for (int i = 0; i < 33; ++i) many += "1, ";
  many += ")";
  EXPECT_NE(npy_error(path, npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': " + many + ", }", 246, data))
                .find("32 dimensions"),
            std::string::npos);
}

TEST(Npy, OddHeaderLengthReadsAlignedValues) {
  // a header length that leaves the data unaligned (legal for a hand-written file): the values
  // are copied, not viewed misaligned
  const std::string path = test::temp_dir() + "/odd.npy";
  const float vals[3] = {1.5f, -2.0f, 3.25f};
  const std::string data(reinterpret_cast<const char*>(vals), sizeof vals);
  const std::string bytes = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 61, data);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  const Tensor t = read_npy(path);
  EXPECT_EQ(t.shape, (Shape{3}));
  EXPECT_EQ(t.to_f32(), (std::vector<float>{1.5f, -2.0f, 3.25f}));
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
