#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

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
  for (int64_t dim : {1, 7, 64, 768, 1025}) {
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
