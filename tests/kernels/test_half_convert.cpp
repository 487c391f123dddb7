// The bulk float <-> half conversions used for f16 weight storage agree bit for bit with the
// scalar conversions of core/half.h (round to nearest even), on every path: vector body, scalar
// tail, and inputs spread over several parallel chunks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/half.h"
#include "kernels/onednn_util.h"

namespace {

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

std::vector<float> tricky_values() {
  std::vector<float> v;
  // Every half value, and the exact midpoints between neighbours (ties go to the even one).
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    if ((bits & 0x7c00) == 0x7c00) continue;  // infinities and NaNs: below
    const float a = clipkit::half_to_float(bits);
    v.push_back(a);
    const uint16_t next = static_cast<uint16_t>(bits + 1);
    if ((next & 0x7c00) != 0x7c00 && (next & 0x8000) == (bits & 0x8000))
      v.push_back(static_cast<float>((static_cast<double>(a) + clipkit::half_to_float(next)) / 2));
  }
  for (float x : {65504.0f, 65519.99f, 65520.0f, 1e6f, -1e6f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-10f, -0.0f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::denorm_min()})
    v.push_back(x);
  std::mt19937 rng(11);
  for (int i = 0; i < 100000; ++i) v.push_back(from_bits(static_cast<uint32_t>(rng()) & 0xbfffffffu));  // no NaN/inf
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (int i = 0; i < 100003; ++i) v.push_back(nd(rng));  // weight-like; odd length leaves a tail
  return v;
}

TEST(HalfConvert, NarrowMatchesScalarRoundingBitForBit) {
  const std::vector<float> v = tricky_values();
  ASSERT_GT(v.size(), size_t{1} << 17);  // more than one parallel chunk
  const std::vector<uint16_t> got = clipkit::onednn::narrow_to_half(v.data(), v.size());
  ASSERT_EQ(got.size(), v.size());
  size_t bad = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (got[i] != clipkit::float_to_half(v[i]) && bad++ < 5)
      ADD_FAILURE() << "value " << v[i] << ": " << got[i] << " vs " << clipkit::float_to_half(v[i]);
  EXPECT_EQ(bad, 0u);
}

TEST(HalfConvert, NaNStaysNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> v(19, nan);  // vector body and tail
  for (uint16_t h : clipkit::onednn::narrow_to_half(v.data(), v.size()))
    EXPECT_TRUE(std::isnan(clipkit::half_to_float(h)));
}

TEST(HalfConvert, WidenIsExactForEveryHalf) {
  std::vector<uint16_t> all(0x10000 + 5);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);  // permuted, wraps
  std::vector<float> out(all.size());
  clipkit::onednn::half_to_float_n(all.data(), out.data(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const float want = clipkit::half_to_float(all[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(out[i])) << i;
    } else {
      uint32_t a, b;
      std::memcpy(&a, &want, 4);
      std::memcpy(&b, &out[i], 4);
      EXPECT_EQ(a, b) << "half bits " << all[i];
    }
  }
}

}  // namespace
