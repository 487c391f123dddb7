// Helpers for the image-pipeline tests: reading the gzip-compressed .npy expectations written by
// tests/data/vision/make_cases.py, the golden pixel_values tensor, and small file utilities.
#pragma once
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clipkit/image.h"
#include "support/test_support.h"

namespace clipkit::test {

struct NpyArray {
  std::string descr;  // "|u1", "<i4", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

inline std::string read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string out;
  char buf[65536];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  if (n < 0) throw std::runtime_error("cannot decompress " + path);
  return out;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_bytes(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// Minimal .npy (version 1/2) parser for C-order little-endian arrays.
inline NpyArray parse_npy(const std::string& s) {
  if (s.size() < 10 || std::memcmp(s.data(), "\x93NUMPY", 6) != 0) throw std::runtime_error("not an npy file");
  const int major = static_cast<uint8_t>(s[6]);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<uint8_t>(s[8]) | (static_cast<uint8_t>(s[9]) << 8);
    hstart = 10;
  } else {
    hlen = static_cast<uint8_t>(s[8]) | (static_cast<uint8_t>(s[9]) << 8) | (static_cast<uint8_t>(s[10]) << 16) |
           (static_cast<size_t>(static_cast<uint8_t>(s[11])) << 24);
    hstart = 12;
  }
  const std::string header = s.substr(hstart, hlen);
  NpyArray a;
  const auto d = header.find("'descr': '");
  a.descr = header.substr(d + 10, header.find('\'', d + 10) - (d + 10));
  if (header.find("'fortran_order': False") == std::string::npos) throw std::runtime_error("fortran order npy");
  const auto sp = header.find("'shape': (");
  const std::string shape = header.substr(sp + 10, header.find(')', sp) - (sp + 10));
  std::stringstream ss(shape);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    a.shape.push_back(std::stoll(item));
  }
  a.bytes.assign(s.begin() + static_cast<std::ptrdiff_t>(hstart + hlen), s.end());
  return a;
}

inline NpyArray load_npy_gz(const std::string& path) { return parse_npy(read_gz(path)); }

// tensor "pixel_values" of a golden safetensors file as float32 + shape.
inline std::vector<float> golden_pixel_values(const std::string& path, std::vector<int64_t>* shape) {
  const std::string s = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, s.data(), 8);
  const auto header = nlohmann::json::parse(s.substr(8, n));
  const auto& t = header.at("pixel_values");
  if (t.at("dtype") != "F32") throw std::runtime_error("pixel_values is not F32");
  *shape = t.at("shape").get<std::vector<int64_t>>();
  const auto off = t.at("data_offsets").get<std::vector<size_t>>();
  std::vector<float> v((off[1] - off[0]) / 4);
  std::memcpy(v.data(), s.data() + 8 + n + off[0], off[1] - off[0]);
  return v;
}

}  // namespace clipkit::test
