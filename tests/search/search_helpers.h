// Test helpers for the search suites: a deterministic fake Model and a tiny PNG writer.
#pragma once
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "clipkit/model.h"
#include "clipkit/tokenizer.h"

namespace clipkit::test {

// A Model whose image embedding is a fixed random projection of the preprocessed pixels and whose
// text embedding is a fixed random projection of a bag of token ids: deterministic, content-based,
// and cheap. Similar images get similar vectors, so ranking behaves like a real model's would.
class FakeModel : public Model {
 public:
  explicit FakeModel(int dim = 16, int resolution = 8, std::string fingerprint = "fake-model-v1", uint32_t seed = 7)
      : dim_(dim) {
    info_.path = "/models/" + fingerprint + ".safetensors";
    info_.format = "safetensors";
    info_.arch.kind = "vit";
    info_.arch.embed_dim = dim;
    info_.arch.image_resolution = resolution;
    info_.arch.context_length = 77;
    info_.fingerprint = fingerprint;
    info_.logit_scale = 100.0f;
    info_.preprocess.resolution = resolution;
    const size_t in = 3u * resolution * resolution;
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    proj_.resize(in * dim);
    for (auto& x : proj_) x = nd(rng);
    tok_.resize(static_cast<size_t>(1024) * dim);
    for (auto& x : tok_) x = nd(rng);
  }
  const ModelInfo& info() const override { return info_; }
  Embeddings encode_images(const float* pixels, int64_t batch, bool normalize, DebugTrace*) const override {
    const int64_t in = 3LL * info_.preprocess.resolution * info_.preprocess.resolution;
    Embeddings e(batch, dim_);
    for (int64_t b = 0; b < batch; ++b)
      for (int j = 0; j < dim_; ++j) {
        double s = 0;
        for (int64_t i = 0; i < in; ++i) s += static_cast<double>(proj_[static_cast<size_t>(i * dim_ + j)]) * pixels[b * in + i];
        e.row(b)[j] = static_cast<float>(s);
      }
    if (normalize) e.normalize();
    return e;
  }
  Embeddings encode_tokens(const std::vector<std::vector<int32_t>>& ids, bool normalize, DebugTrace*) const override {
    Embeddings e(static_cast<int64_t>(ids.size()), dim_);
    for (size_t r = 0; r < ids.size(); ++r)
      for (size_t t = 0; t < ids[r].size(); ++t) {
        if (ids[r][t] == 0) continue;
        const size_t row = static_cast<size_t>(ids[r][t]) % 1024;
        for (int j = 0; j < dim_; ++j) e.row(static_cast<int64_t>(r))[j] += tok_[row * dim_ + j] * (1.0f + 0.1f * static_cast<float>(t));
      }
    if (normalize) e.normalize();
    return e;
  }

 private:
  int dim_;
  ModelInfo info_;
  std::vector<float> proj_, tok_;
};

// Writes an 8-bit RGB PNG (filter 0 on every row).
inline void write_png(const std::string& path, int w, int h, const std::vector<uint8_t>& rgb) {
  auto be32 = [](std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
  };
  std::vector<uint8_t> raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), rgb.begin() + static_cast<ptrdiff_t>(y) * w * 3, rgb.begin() + static_cast<ptrdiff_t>(y + 1) * w * 3);
  }
  uLongf zlen = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> z(zlen);
  compress2(z.data(), &zlen, raw.data(), static_cast<uLong>(raw.size()), 6);
  z.resize(zlen);
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  auto chunk = [&](const char* type, const std::vector<uint8_t>& data) {
    be32(out, static_cast<uint32_t>(data.size()));
    std::vector<uint8_t> td(type, type + 4);
    td.insert(td.end(), data.begin(), data.end());
    out.insert(out.end(), td.begin(), td.end());
    be32(out, static_cast<uint32_t>(crc32(0, td.data(), static_cast<uInt>(td.size()))));
  };
  std::vector<uint8_t> ihdr;
  be32(ihdr, static_cast<uint32_t>(w));
  be32(ihdr, static_cast<uint32_t>(h));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  chunk("IHDR", ihdr);
  chunk("IDAT", z);
  chunk("IEND", {});
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
}

// A smooth synthetic picture: image `k` of a family; nearby k look alike.
inline std::vector<uint8_t> synthetic_rgb(int k, int w, int h) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double t = k * 0.7;
      const double r = 127 + 120 * std::sin(0.3 * x + t);
      const double g = 127 + 120 * std::cos(0.25 * y - 0.5 * t);
      const double b = 127 + 120 * std::sin(0.2 * (x + y) + 1.3 * t);
      uint8_t* p = px.data() + (static_cast<size_t>(y) * w + x) * 3;
      p[0] = static_cast<uint8_t>(r);
      p[1] = static_cast<uint8_t>(g);
      p[2] = static_cast<uint8_t>(b);
    }
  return px;
}

inline void write_synthetic_png(const std::string& path, int k, int w = 24, int h = 20) {
  write_png(path, w, h, synthetic_rgb(k, w, h));
}

inline void copy_file_bytes(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
}

}  // namespace clipkit::test
