#include <gtest/gtest.h>

#include <algorithm>
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

TEST(Softmax, RelativeAccuracyAtEveryLength) {
  // Lengths around the 16-lane vector width and the real sequence lengths (50, 77, 197, 257);
  // a wide spread so that the smallest probabilities are tiny.
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 12.0f);
  for (const int64_t n : {1, 2, 15, 16, 17, 31, 32, 33, 50, 77, 197, 257}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    std::vector<float> ref(x.size());
    softmax_reference(x.data(), n, ref.data());
    const std::vector<float> in = x;
    const float mx = *std::max_element(in.begin(), in.end());
    softmax_row(x.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double r = ref[static_cast<size_t>(i)];
      if (r < 1e-30) {
        EXPECT_LT(x[static_cast<size_t>(i)], 1e-29) << "n " << n << " i " << i;
        continue;
      }
      // float32 rounds x - max to 2^-24 relative: e^(x-max) inherits that absolute error in its exponent.
      const double allowed = 2e-6 + 1.2e-7 * std::fabs(in[static_cast<size_t>(i)] - mx);
      EXPECT_NEAR(x[static_cast<size_t>(i)] / r, 1.0, allowed) << "n " << n << " i " << i;
    }
  }
}

TEST(Softmax, MinusInfinityGivesZeroAndNaNPropagates) {
  float x[20];
  for (int i = 0; i < 20; ++i) x[i] = i < 18 ? -INFINITY : 1.0f;
  softmax_row(x, 20);
  for (int i = 0; i < 18; ++i) EXPECT_EQ(x[i], 0.0f);
  EXPECT_FLOAT_EQ(x[18], 0.5f);
  EXPECT_FLOAT_EQ(x[19], 0.5f);
  float y[17] = {};
  y[16] = NAN;
  softmax_row(y, 17);
  EXPECT_TRUE(std::isnan(y[0]));
}

TEST(Softmax, UnnormalizedRowGivesTheExponentialsAndTheReciprocalSum) {
  // Attention's form: x[i] becomes exp(x[i] - max) and the factor 1/Σ is returned, for lengths
  // with and without a vector tail; scaled by the factor the row is the softmax.
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  for (const int64_t n : {1, 7, 16, 50, 197}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    const std::vector<float> in = x;
    const double mx = *std::max_element(in.begin(), in.end());
    double sum = 0.0;
    for (float v : in) sum += std::exp(static_cast<double>(v) - mx);
    const float f = softmax_row_unnormalized(x.data(), n);
    EXPECT_NEAR(f, 1.0 / sum, 2e-6 / sum) << n;
    std::vector<float> ref(x.size());
    softmax_reference(in.data(), n, ref.data());
    for (int64_t i = 0; i < n; ++i) {
      const double e = std::exp(static_cast<double>(in[static_cast<size_t>(i)]) - mx);
      EXPECT_NEAR(x[static_cast<size_t>(i)], e, 2e-6 * e + 1e-30) << n << " " << i;
      EXPECT_NEAR(x[static_cast<size_t>(i)] * f, ref[static_cast<size_t>(i)], 4e-6 * ref[static_cast<size_t>(i)] + 1e-30);
    }
  }
  float y[17] = {};
  y[3] = NAN;
  EXPECT_TRUE(std::isnan(softmax_row_unnormalized(y, 17)));
}
