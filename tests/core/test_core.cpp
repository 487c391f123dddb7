#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

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

TEST(ErrorCodeName, EveryCodeHasItsOwnName) {
  const ErrorCode codes[] = {ErrorCode::InvalidArgument, ErrorCode::NotFound, ErrorCode::Io,       ErrorCode::Format,
                             ErrorCode::Shape,           ErrorCode::Limit,    ErrorCode::Mismatch, ErrorCode::Internal};
  const std::string fallback = error_code_name(static_cast<ErrorCode>(99));  // a value outside the enum
  std::set<std::string> names;
  for (ErrorCode c : codes) {
    const std::string n = error_code_name(c);
    EXPECT_FALSE(n.empty());
    EXPECT_NE(n, fallback) << static_cast<int>(c);
    names.insert(n);
  }
  EXPECT_EQ(names.size(), std::size(codes));
}

namespace {

template <class T>
Tensor tensor_of(DType dtype, const std::vector<T>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return Tensor::from_bytes(dtype, {static_cast<int64_t>(values.size())}, std::move(bytes));
}

template <class T>
std::vector<float> as_floats(const std::vector<T>& values) {
  return std::vector<float>(values.begin(), values.end());
}

}  // namespace

TEST(Tensor, EveryDTypeWidensToF32LikeACast) {
  const std::vector<double> f64{1.5, -2.25, 1e30, 0.1};
  EXPECT_EQ(tensor_of(DType::F64, f64).to_f32(), as_floats(f64));
  const std::vector<int16_t> i16{-32768, -1, 0, 32767};
  EXPECT_EQ(tensor_of(DType::I16, i16).to_f32(), as_floats(i16));
  const std::vector<int8_t> i8{-128, -3, 0, 127};
  EXPECT_EQ(tensor_of(DType::I8, i8).to_f32(), as_floats(i8));
  const std::vector<uint8_t> u8{0, 1, 200, 255};
  EXPECT_EQ(tensor_of(DType::U8, u8).to_f32(), as_floats(u8));
  const std::vector<uint8_t> flags{0, 1, 1, 0};
  EXPECT_EQ(tensor_of(DType::Bool, flags).to_f32(), as_floats(flags));
  // bf16 is the upper half of an f32: values with a zero lower half come back exactly
  const std::vector<float> exact{1.5f, -2.25f, 65536.0f, -0.0078125f};
  std::vector<uint16_t> bf16;
  for (float f : exact) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bf16.push_back(static_cast<uint16_t>(bits >> 16));
  }
  const Tensor b = tensor_of(DType::BF16, bf16);
  EXPECT_EQ(b.to_f32(), exact);
  EXPECT_EQ(b.value_f32(1), exact[1]);
}

TEST(Tensor, DTypeNamesRoundTripAndUnknownNamesAreFormatErrors) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::I16, DType::I8, DType::U8,
                  DType::Bool})
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t) << dtype_name(t);
  try {
    dtype_from_name("C64");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("'C64'"), std::string::npos) << e.what();
  }
}

TEST(Tensor, SizeThatDoesNotFitTheShapeIsAShapeError) {
  try {
    Tensor::from_f32(std::vector<float>(5), {2, 3});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Shape);
    EXPECT_NE(std::string(e.what()).find("5 values cannot have shape [2, 3]"), std::string::npos) << e.what();
  }
  try {
    Tensor::from_bytes(DType::I16, {3}, std::vector<uint8_t>(5));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Shape);
    EXPECT_NE(std::string(e.what()).find("5 bytes cannot have shape [3] and dtype I16"), std::string::npos) << e.what();
  }
}

TEST(Npy, EveryWritableDTypeReadsBack) {
  const std::string dir = test::temp_dir();
  const std::vector<double> f64{1.5, -2.25, 3.0, 0.125};
  const std::vector<int64_t> i64{-5, 0, 7, 1};
  const std::vector<uint8_t> u8{0, 7, 200, 255};
  const std::vector<uint16_t> f16{float_to_half(1.5f), float_to_half(-2.0f), float_to_half(0.25f), 0};
  struct Case {
    DType dtype;
    const void* data;
    std::vector<float> want;
  };
  const std::vector<float> half_want{1.5f, -2.0f, 0.25f, 0.0f};
  for (const Case& c : {Case{DType::F64, f64.data(), as_floats(f64)}, Case{DType::I64, i64.data(), as_floats(i64)},
                        Case{DType::U8, u8.data(), as_floats(u8)}, Case{DType::F16, f16.data(), half_want}}) {
    SCOPED_TRACE(dtype_name(c.dtype));
    write_npy(dir + "/d.npy", c.dtype, {2, 2}, c.data);
    const Tensor t = read_npy(dir + "/d.npy");
    EXPECT_EQ(t.dtype, c.dtype);
    EXPECT_EQ(t.shape, (Shape{2, 2}));
    EXPECT_EQ(t.to_f32(), c.want);
  }
  const uint16_t bf16[2] = {0, 0};
  try {
    npy_encode(DType::BF16, {2}, bf16);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("BF16"), std::string::npos) << e.what();
  }
}

TEST(Npy, VersionTwoHeadersAndUnsupportedFilesNameTheProblem) {
  const std::string path = test::temp_dir() + "/v.npy";
  const float vals[3] = {1.5f, -2.0f, 3.25f};
  const std::string data(reinterpret_cast<const char*>(vals), sizeof vals);
  // version 2: a 4-byte header length
  const std::string v1 = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 118, data);
  std::string v2 = v1.substr(0, 8) + std::string("\x76\x00\x00\x00", 4) + v1.substr(10);
  v2[6] = 2;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(v2.data(), static_cast<std::streamsize>(v2.size()));
  EXPECT_EQ(read_npy(path).to_f32(), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  EXPECT_NE(npy_error(path, v2.substr(0, 11)).find("truncated header"), std::string::npos);
  std::string v9 = v1;
  v9[6] = 9;
  EXPECT_NE(npy_error(path, v9).find("unsupported version"), std::string::npos);
  EXPECT_NE(npy_error(path, npy_with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", 118, data))
                .find("unsupported dtype <c8"),
            std::string::npos);
  EXPECT_NE(npy_error(path, npy_with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }", 118, data))
                .find("Fortran order"),
            std::string::npos);
}

