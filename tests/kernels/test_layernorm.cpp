#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/int8.h"
#include "kernels/layernorm.h"

using namespace clipkit;

TEST(LayerNorm, HandComputedRow) {
  // x = [1, 2, 3, 6]: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
  const float x[4] = {1, 2, 3, 6};
  const float g[4] = {1, 2, 0.5f, -1};
  const float b[4] = {0, 0.25f, 0, 1};
  float y[4];
  layernorm(x, 1, 4, g, b, 1e-5f, y);
  const double rstd = 1.0 / std::sqrt(3.5 + 1e-5);
  EXPECT_NEAR(y[0], -2 * rstd * 1 + 0, 1e-6);
  EXPECT_NEAR(y[1], -1 * rstd * 2 + 0.25, 1e-6);
  EXPECT_NEAR(y[2], 0.0, 1e-6);
  EXPECT_NEAR(y[3], 3 * rstd * -1 + 1, 1e-6);
}

TEST(LayerNorm, ConstantRowGivesBeta) {
  std::vector<float> x(64, 7.5f), g(64, 3.0f), b(64);
  for (int i = 0; i < 64; ++i) b[static_cast<size_t>(i)] = 0.01f * static_cast<float>(i);
  std::vector<float> y(64);
  layernorm(x.data(), 1, 64, g.data(), b.data(), 1e-5f, y.data());
  for (int i = 0; i < 64; ++i) EXPECT_FLOAT_EQ(y[static_cast<size_t>(i)], b[static_cast<size_t>(i)]);
}

TEST(LayerNorm, MatchesReferenceAndWorksInPlace) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.5f, 3.0f);
  for (int64_t dim : {1, 7, 20, 40, 64, 768, 1025}) {
    const int64_t rows = 37;
    std::vector<float> x(static_cast<size_t>(rows * dim)), g(static_cast<size_t>(dim)), b(static_cast<size_t>(dim));
    for (auto& v : x) v = nd(rng) + 100.0f;  // a large mean tests the variance computation
    for (auto& v : g) v = nd(rng);
    for (auto& v : b) v = nd(rng);
    std::vector<float> y(x.size()), ref(x.size());
    layernorm(x.data(), rows, dim, g.data(), b.data(), 1e-5f, y.data());
    layernorm_reference(x.data(), rows, dim, g.data(), b.data(), 1e-5f, ref.data());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 2e-5 * (1 + std::fabs(ref[i]))) << dim << " " << i;
    layernorm(x.data(), rows, dim, g.data(), b.data(), 1e-5f, x.data());
    EXPECT_EQ(x, y);
  }
}

TEST(LayerNorm, QuantizedOutputEqualsQuantizingTheNormalisedRows) {
  // The int8 blocks' fused pass: bytes and scales exactly as layernorm then quantize_rows_u8_offset,
  // for widths with and without a vector tail, with a constant row (its output is beta alone)
  // and a zero beta on that row's width (scale 0: every byte 128).
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (int64_t dim : {1, 7, 20, 40, 64, 768, 1025}) {
    const int64_t rows = 600;  // large enough for the parallel path
    std::vector<float> x(static_cast<size_t>(rows * dim)), g(static_cast<size_t>(dim)), b(static_cast<size_t>(dim));
    for (auto& v : x) v = nd(rng);
    for (auto& v : g) v = nd(rng);
    for (auto& v : b) v = nd(rng);
    for (int64_t i = 0; i < dim; ++i) x[static_cast<size_t>(3 * dim + i)] = 4.0f;  // constant row
    for (const bool zero_beta : {false, true}) {
      if (zero_beta) std::fill(b.begin(), b.end(), 0.0f);
      std::vector<float> y(x.size()), want_s(static_cast<size_t>(rows)), got_s(want_s.size());
      std::vector<uint8_t> want_q(x.size()), got_q(x.size());
      layernorm(x.data(), rows, dim, g.data(), b.data(), 1e-5f, y.data());
      quantize_rows_u8_offset(y.data(), rows, dim, want_q.data(), want_s.data());
      layernorm_quantize_u8(x.data(), rows, dim, g.data(), b.data(), 1e-5f, got_q.data(), got_s.data());
      ASSERT_EQ(got_q, want_q) << "dim " << dim;
      ASSERT_EQ(got_s, want_s) << "dim " << dim;
      if (zero_beta) {
        EXPECT_EQ(got_s[3], 0.0f);
      }
      // ... and one row at a time, as the int8 blocks fuse it with the residual add before it
      std::vector<float> scratch(static_cast<size_t>(dim));
      std::vector<uint8_t> row_q(static_cast<size_t>(dim));
      for (const int64_t r : {int64_t{0}, int64_t{3}, rows - 1}) {
        const float sr = layernorm_quantize_row_u8(x.data() + r * dim, dim, g.data(), b.data(), 1e-5f, scratch.data(),
                                                   row_q.data());
        EXPECT_EQ(sr, want_s[static_cast<size_t>(r)]) << "dim " << dim << " row " << r;
        EXPECT_TRUE(std::equal(row_q.begin(), row_q.end(), want_q.begin() + r * dim)) << "dim " << dim << " row " << r;
      }
    }
  }
}
