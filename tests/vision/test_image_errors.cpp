// Bad input: missing, empty, unknown, truncated and corrupt files of every format, zero-size
// images and the pixel limit. Every failure must be a clipkit::Error naming the file; nothing may
// crash (the suite also runs under ASan/UBSan).
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "vision/vision_test_util.h"

namespace clipkit {
namespace {

std::vector<std::string> sample_files() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(test::data_path("vision/src")))
    out.push_back(e.path().string());
  for (const auto& e : std::filesystem::directory_iterator(test::data_path("images")))
    if (e.path().extension() != ".json") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

Image decode_bytes(const std::string& bytes, const std::string& name, const DecodeOptions& opt = {}) {
  return decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name, opt);
}

// Runs the decoder; returns the error code or -1 when it decoded.
int decode_status(const std::string& bytes, const std::string& name, std::string* message = nullptr,
                  const DecodeOptions& opt = {}) {
  try {
    const Image img = decode_bytes(bytes, name, opt);
    EXPECT_GT(img.width, 0);
    EXPECT_GT(img.height, 0);
    return -1;
  } catch (const Error& e) {
    if (message) *message = e.what();
    return static_cast<int>(e.code());
  }
}

TEST(ImageErrors, MissingFileIsNotFound) {
  try {
    decode_image_file(test::temp_dir() + "/no-such-image.png");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(std::string(e.what()).find("no-such-image.png"), std::string::npos);
  }
}

TEST(ImageErrors, EmptyAndUnknownBytes) {
  std::string msg;
  EXPECT_EQ(decode_status("", "empty.png", &msg), static_cast<int>(ErrorCode::Format));
  EXPECT_NE(msg.find("empty.png"), std::string::npos);
  EXPECT_EQ(decode_status("hello, world, this is text", "notes.txt", &msg), static_cast<int>(ErrorCode::Format));
  EXPECT_NE(msg.find("notes.txt"), std::string::npos);
  const std::string dir = test::temp_dir();
  test::write_bytes(dir + "/zero.jpg", "");
  EXPECT_THROW(decode_image_file(dir + "/zero.jpg"), Error);
}

TEST(ImageErrors, TruncatedFilesOfEveryFormatThrow) {
  int checked = 0;
  for (const auto& path : sample_files()) {
    const std::string bytes = test::read_bytes(path);
    const std::string name = std::filesystem::path(path).filename().string();
    SCOPED_TRACE(name);
    // cut inside the header, and (single-frame files) in the middle of the pixel data: Pillow
    // refuses both
    const bool animated = name.find("animated") != std::string::npos;
    for (size_t cut : {animated ? size_t(9) : bytes.size() / 2, std::min<size_t>(bytes.size() - 1, 20), size_t(9)}) {
      if (cut >= bytes.size()) continue;
      std::string msg;
      const int st = decode_status(bytes.substr(0, cut), name, &msg);
      EXPECT_EQ(st, static_cast<int>(ErrorCode::Format)) << "cut at " << cut << " of " << bytes.size();
      if (st >= 0) {
        EXPECT_NE(msg.find(name), std::string::npos) << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 150);
}

TEST(ImageErrors, TruncationOutcomesMatchPillow) {
  // make_cases.py recorded which prefixes of each file Pillow 9.4 still loads.
  const auto m = nlohmann::json::parse(test::read_bytes(test::data_path("vision/manifest.json")));
  int agree = 0, total = 0;
  std::string disagreements;
  for (const auto& e : m.at("cases")) {
    const std::string name = e.at("name");
    const std::string bytes = test::read_bytes(test::data_path("vision/src/" + name));
    for (const auto& t : e.at("truncations")) {
      const size_t cut = t.at("bytes");
      const bool pillow_ok = t.at("pillow_loads");
      std::string msg;
      const int st = decode_status(bytes.substr(0, cut), name, &msg);
      if (st >= 0) {
        EXPECT_EQ(st, static_cast<int>(ErrorCode::Format)) << name << ": " << msg;
      }
      ++total;
      if ((st == -1) == pillow_ok) {
        ++agree;
      } else {
        disagreements += " " + name + "@" + std::to_string(cut) + (pillow_ok ? "(pillow loads)" : "(pillow fails)");
      }
    }
  }
  EXPECT_EQ(agree, total) << "differs from Pillow on:" << disagreements;
}

TEST(ImageErrors, TruncatedJpegSaysTruncated) {
  const std::string bytes = test::read_bytes(test::data_path("images/03_rocket_q75.jpg"));
  std::string msg;
  EXPECT_EQ(decode_status(bytes.substr(0, bytes.size() * 3 / 4), "rocket.jpg", &msg),
            static_cast<int>(ErrorCode::Format));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // progressive: the scans are read up front
  const std::string prog = test::read_bytes(test::data_path("images/01_chelsea_q90_progressive.jpg"));
  EXPECT_EQ(decode_status(prog.substr(0, prog.size() - 200), "chelsea.jpg", &msg),
            static_cast<int>(ErrorCode::Format));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST(ImageErrors, EveryPrefixAndRandomCorruptionNeverCrashes) {
  std::mt19937 rng(1234);
  for (const auto& path : sample_files()) {
    const std::string bytes = test::read_bytes(path);
    const std::string name = std::filesystem::path(path).filename().string();
    DecodeOptions opt;
    opt.max_pixels = 1'000'000;
    // a spread of prefixes
    for (int k = 1; k < 12; ++k) decode_status(bytes.substr(0, bytes.size() * k / 12), name, nullptr, opt);
    // random byte corruption, including header bytes
    for (int trial = 0; trial < 12; ++trial) {
      std::string b = bytes;
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int f = 0; f < flips; ++f) {
        const size_t pos = trial < 6 ? rng() % std::min<size_t>(b.size(), 64) : rng() % b.size();
        b[pos] = static_cast<char>(rng() & 0xFF);
      }
      decode_status(b, name, nullptr, opt);
    }
  }
  SUCCEED();
}

TEST(ImageErrors, PixelLimitIsEnforcedForEveryFormat) {
  DecodeOptions opt;
  opt.max_pixels = 500;
  for (const auto& path : sample_files()) {
    const std::string bytes = test::read_bytes(path);
    const std::string name = std::filesystem::path(path).filename().string();
    const Image img = decode_bytes(bytes, name);
    std::string msg;
    const int st = decode_status(bytes, name, &msg, opt);
    if (static_cast<uint64_t>(img.width) * img.height > opt.max_pixels) {
      EXPECT_EQ(st, static_cast<int>(ErrorCode::Limit)) << name;
      EXPECT_NE(msg.find(name), std::string::npos) << msg;
      EXPECT_NE(msg.find("limit"), std::string::npos) << msg;
    } else {
      EXPECT_EQ(st, -1) << name << ": " << msg;
    }
  }
}

uint32_t be32(const std::string& s, size_t o) {
  return (uint32_t(uint8_t(s[o])) << 24) | (uint32_t(uint8_t(s[o + 1])) << 16) | (uint32_t(uint8_t(s[o + 2])) << 8) |
         uint8_t(s[o + 3]);
}
void put_be32(std::string& s, size_t o, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[o + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xFF);
}
void put_le16(std::string& s, size_t o, unsigned v) {
  s[o] = static_cast<char>(v & 0xFF);
  s[o + 1] = static_cast<char>((v >> 8) & 0xFF);
}
void put_le32(std::string& s, size_t o, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[o + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

// A PNG whose IHDR claims width x height (CRC fixed), followed by the original data.
std::string png_with_size(uint32_t w, uint32_t h) {
  std::string s = test::read_bytes(test::data_path("vision/src/png_rgb8.png"));
  put_be32(s, 16, w);
  put_be32(s, 20, h);
  const uint32_t crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(s.data() + 12), 17));
  put_be32(s, 29, crc);
  EXPECT_EQ(be32(s, 16), w);
  return s;
}

std::string jpeg_with_size(unsigned w, unsigned h) {
  std::string s = test::read_bytes(test::data_path("vision/src/jpeg_420.jpg"));
  for (size_t i = 2; i + 9 < s.size(); ++i) {
    if (uint8_t(s[i]) == 0xFF && uint8_t(s[i + 1]) == 0xC0) {  // SOF0: len(2) precision(1) height(2) width(2)
      s[i + 5] = static_cast<char>(h >> 8);
      s[i + 6] = static_cast<char>(h & 0xFF);
      s[i + 7] = static_cast<char>(w >> 8);
      s[i + 8] = static_cast<char>(w & 0xFF);
      return s;
    }
  }
  ADD_FAILURE() << "no SOF0";
  return s;
}

std::string bmp_with_size(int32_t w, int32_t h) {
  std::string s = test::read_bytes(test::data_path("vision/src/bmp_24.bmp"));
  put_le32(s, 18, static_cast<uint32_t>(w));
  put_le32(s, 22, static_cast<uint32_t>(h));
  return s;
}

std::string gif_with_size(unsigned w, unsigned h) {
  std::string s = test::read_bytes(test::data_path("vision/src/gif_global.gif"));
  put_le16(s, 6, w);
  put_le16(s, 8, h);
  return s;
}

TEST(ImageErrors, HugeDimensionsRefusedBeforeAllocating) {
  DecodeOptions opt;  // default 100 MP
  std::string msg;
  EXPECT_EQ(decode_status(png_with_size(200000, 200000), "huge.png", &msg, opt), static_cast<int>(ErrorCode::Limit))
      << msg;
  EXPECT_EQ(decode_status(jpeg_with_size(65000, 65000), "huge.jpg", &msg, opt), static_cast<int>(ErrorCode::Limit))
      << msg;
  EXPECT_EQ(decode_status(bmp_with_size(1 << 20, 1 << 20), "huge.bmp", &msg, opt), static_cast<int>(ErrorCode::Limit))
      << msg;
  EXPECT_NE(msg.find("huge.bmp"), std::string::npos);
  opt.max_pixels = 1000;
  EXPECT_EQ(decode_status(gif_with_size(60000, 60000), "huge.gif", &msg, opt), static_cast<int>(ErrorCode::Limit))
      << msg;
}

TEST(ImageErrors, ZeroSizeImagesAreFormatErrors) {
  std::string msg;
  EXPECT_EQ(decode_status(png_with_size(0, 10), "zero.png", &msg), static_cast<int>(ErrorCode::Format)) << msg;
  EXPECT_NE(msg.find("zero.png"), std::string::npos);
  EXPECT_EQ(decode_status(jpeg_with_size(16, 0), "zero.jpg", &msg), static_cast<int>(ErrorCode::Format)) << msg;
  EXPECT_EQ(decode_status(jpeg_with_size(0, 16), "zero.jpg", &msg), static_cast<int>(ErrorCode::Format)) << msg;
  EXPECT_EQ(decode_status(bmp_with_size(0, 5), "zero.bmp", &msg), static_cast<int>(ErrorCode::Format)) << msg;
  EXPECT_NE(msg.find("zero"), std::string::npos) << msg;
  // GIF: zero screen and zero frame
  std::string g = gif_with_size(0, 0);
  const size_t desc = g.find(',', 13);
  ASSERT_NE(desc, std::string::npos);
  put_le16(g, desc + 5, 0);
  put_le16(g, desc + 7, 0);
  EXPECT_EQ(decode_status(g, "zero.gif", &msg), static_cast<int>(ErrorCode::Format)) << msg;
}

TEST(ImageErrors, PreprocessRejectsBadArguments) {
  Image img;
  EXPECT_THROW(preprocess_to_rgb8(img, 64), Error);  // empty image
  img.width = 2;
  img.height = 2;
  img.mode = PixelMode::RGB;
  img.pixels.assign(5, 0);  // wrong buffer size
  EXPECT_THROW(preprocess_to_rgb8(img, 64), Error);
  img.pixels.assign(12, 7);
  EXPECT_THROW(preprocess_to_rgb8(img, 0), Error);
  EXPECT_THROW(resize_bicubic(img, 0, 3), Error);
  PreprocessConfig cfg;
  cfg.resolution = 8;
  cfg.std = {1.0f, 0.0f, 1.0f};
  EXPECT_THROW(preprocess(img, cfg), Error);
}

TEST(ImageErrors, CenterCropPadsWithZerosLikeTorchvision) {
  // torchvision 0.14 center_crop on a smaller PIL image: pad (left/top = diff // 2), then crop.
  Image img;
  img.width = 3;
  img.height = 6;
  img.mode = PixelMode::L;
  for (int i = 0; i < 18; ++i) img.pixels.push_back(static_cast<uint8_t>(10 + i));
  const Image c = center_crop(img, 4);
  ASSERT_EQ(c.width, 4);
  ASSERT_EQ(c.height, 4);
  // width 3 -> pad left 0, right 1; height 6 -> crop top round(2 / 2) = 1
  const std::vector<uint8_t> expected = {13, 14, 15, 0, 16, 17, 18, 0, 19, 20, 21, 0, 22, 23, 24, 0};
  EXPECT_EQ(c.pixels, expected);
}

// The 32-bit BITFIELDS layouts other than BGRA: the fixture's BGRA pixels rewritten in each
// channel order, with the masks to match, decode to the fixture's own pixels.
TEST(BmpBitfields, OtherChannelOrdersGiveTheFixturePixels) {
  const std::string src = test::read_bytes(test::data_path("vision/src/bmp_32_alpha_v5.bmp"));
  const Image ref = decode_bytes(src, "bmp_32_alpha_v5.bmp");
  ASSERT_EQ(ref.mode, PixelMode::RGBA);
  const size_t offset = 138, n = static_cast<size_t>(ref.width) * static_cast<size_t>(ref.height);
  ASSERT_EQ(src.size(), offset + 4 * n);
  struct Order {
    const char* name;
    uint32_t masks[4];   // R, G, B, A
    int from[4];         // stored byte k = BGRA byte from[k]
    bool alpha;
  };
  for (const Order& o : {Order{"RGBA", {0xFF, 0xFF00, 0xFF0000, 0xFF000000u}, {2, 1, 0, 3}, true},
                         Order{"ABGR", {0xFF000000u, 0xFF0000, 0xFF00, 0xFF}, {3, 0, 1, 2}, true},
                         Order{"XBGR", {0xFF000000u, 0xFF0000, 0xFF00, 0}, {3, 0, 1, 2}, false}}) {
    SCOPED_TRACE(o.name);
    std::string b = src;
    for (int i = 0; i < 4; ++i) put_le32(b, 54 + 4 * static_cast<size_t>(i), o.masks[i]);
    for (size_t p = 0; p < n; ++p)
      for (int k = 0; k < 4; ++k) b[offset + 4 * p + static_cast<size_t>(k)] = src[offset + 4 * p + static_cast<size_t>(o.from[k])];
    const Image img = decode_bytes(b, "x.bmp");
    ASSERT_EQ(img.width, ref.width);
    ASSERT_EQ(img.height, ref.height);
    if (o.alpha) {
      EXPECT_EQ(img.mode, PixelMode::RGBA);
      EXPECT_EQ(img.pixels, ref.pixels);
    } else {
      EXPECT_EQ(img.mode, PixelMode::RGB);
      std::vector<uint8_t> rgb;
      for (size_t p = 0; p < n; ++p) rgb.insert(rgb.end(), ref.pixels.begin() + 4 * p, ref.pixels.begin() + 4 * p + 3);
      EXPECT_EQ(img.pixels, rgb);
    }
  }
  std::string b = src;
  put_le32(b, 54, 0x00FF00FF);
  std::string msg;
  EXPECT_EQ(decode_status(b, "odd.bmp", &msg), static_cast<int>(ErrorCode::Format));
  EXPECT_NE(msg.find("unsupported BMP bitfields layout"), std::string::npos) << msg;
  // a 4-bit file whose palette is the gray ramp 0..15: a layout Pillow reads differently, refused
  std::string p4 = test::read_bytes(test::data_path("vision/src/bmp_p4.bmp"));
  for (size_t i = 0; i < 16; ++i)
    for (size_t c = 0; c < 3; ++c) p4[54 + 4 * i + c] = static_cast<char>(i);
  EXPECT_EQ(decode_status(p4, "ramp.bmp", &msg), static_cast<int>(ErrorCode::Format));
  EXPECT_NE(msg.find("unsupported BMP layout (4-bit gray ramp)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace clipkit
