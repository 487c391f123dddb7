#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/softmax.h"

using namespace clipkit;

TEST(Softmax, HandComputed) {
  float x[3] = {0.0f, std::log(2.0f), std::log(5.0f)};  // exp: 1, 2, 5 → /8
  softmax_row(x, 3);
  EXPECT_NEAR(x[0], 0.125, 1e-7);
  EXPECT_NEAR(x[1], 0.25, 1e-7);
  EXPECT_NEAR(x[2], 0.625, 1e-7);
}

TEST(Softmax, LargeValuesDoNotOverflow) {
  float x[4] = {1000.0f, 1000.0f, -1000.0f, 999.0f};
  softmax_row(x, 4);
  const double e = std::exp(-1.0), z = 2 + e;
  EXPECT_NEAR(x[0], 1 / z, 1e-6);
  EXPECT_NEAR(x[1], 1 / z, 1e-6);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_NEAR(x[3], e / z, 1e-6);
  float one[1] = {-3.0f};
  softmax_row(one, 1);
  EXPECT_EQ(one[0], 1.0f);
}

TEST(Softmax, RowsMatchReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  const int64_t rows = 9, cols = 77, ld = 80;
  std::vector<float> x(static_cast<size_t>(rows * ld));
  for (auto& v : x) v = nd(rng);
  std::vector<float> orig = x;
  softmax_rows(x.data(), rows, cols, ld);
  std::vector<float> ref(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    softmax_reference(orig.data() + r * ld, cols, ref.data());
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_NEAR(x[static_cast<size_t>(r * ld + c)], ref[static_cast<size_t>(c)], 1e-6 * (1 + ref[static_cast<size_t>(c)]));
      sum += x[static_cast<size_t>(r * ld + c)];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
    for (int64_t c = cols; c < ld; ++c) EXPECT_EQ(x[static_cast<size_t>(r * ld + c)], orig[static_cast<size_t>(r * ld + c)]);
  }
}
