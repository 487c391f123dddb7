#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "clipkit/error.h"
#include "kernels/activation.h"
#include "kernels/cpu.h"
#include "kernels/vec_math.h"
#include "kernels/linear.h"

using namespace clipkit;

TEST(Activation, ReferenceValues) {
  // Independent values: QuickGELU(1) = 1/(1+e^-1.702); GELU(1) = Φ(1) = 0.841344746...
  EXPECT_NEAR(quick_gelu_reference(1.0), 1.0 / (1.0 + std::exp(-1.702)), 1e-15);
  EXPECT_NEAR(gelu_reference(1.0), 0.8413447460685429, 1e-12);
  EXPECT_NEAR(gelu_reference(-2.0), -2.0 * 0.022750131948179195, 1e-12);
  EXPECT_EQ(quick_gelu_reference(0.0), 0.0);
}

TEST(Activation, FastPathMatchesReference) {
  std::vector<float> x;
  for (int i = -2000; i <= 2000; ++i) x.push_back(static_cast<float>(i) * 0.01f);
  for (Activation act : {Activation::QuickGelu, Activation::Gelu}) {
    std::vector<float> y = x;
    apply_activation(y.data(), static_cast<int64_t>(y.size()), act);
    for (size_t i = 0; i < x.size(); ++i) {
      const double ref = act == Activation::Gelu ? gelu_reference(x[i]) : quick_gelu_reference(x[i]);
      EXPECT_NEAR(y[i], ref, 1e-6 * (1 + std::fabs(ref))) << activation_name(act) << " at " << x[i];
    }
  }
}

TEST(Activation, Names) {
  EXPECT_EQ(activation_from_name("gelu"), Activation::Gelu);
  EXPECT_EQ(activation_from_name("quick_gelu"), Activation::QuickGelu);
  EXPECT_STREQ(activation_name(Activation::QuickGelu), "quick_gelu");
  EXPECT_THROW(activation_from_name("relu"), Error);
}

namespace {

__attribute__((target("avx512f,avx512dq,avx512vl"))) void quick_gelu_vector(const float* x, float* y) {
  _mm512_storeu_ps(y, quick_gelu_avx512(_mm512_loadu_ps(x)));
}

__attribute__((target("avx512f,avx512dq,avx512vl"))) void gelu_erf_vector(const float* x, float* y) {
  _mm512_storeu_ps(y, gelu_erf_avx512(_mm512_loadu_ps(x)));
}

}  // namespace

// The int8 epilogue's vector QuickGELU over the whole range that matters, and at the clamps.
TEST(Activation, VectorQuickGeluMatchesReference) {
  if (!cpu_has_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::vector<float> x;
  for (int i = -64000; i <= 64000; ++i) x.push_back(static_cast<float>(i) * 0.001f);  // [-64, 64]
  for (float v : {1e-30f, -1e-30f, 1e-3f, 51.0f, -51.0f, 52.0f, -52.0f, 200.0f, -200.0f, 1e30f, -1e30f})
    x.push_back(v);
  while (x.size() % 16 != 0) x.push_back(0.5f);
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); i += 16) quick_gelu_vector(x.data() + i, y.data() + i);
  double worst_near = 0, worst_mid = 0;  // relative errors for |x| <= 2 and 2 < |x| <= 8
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = quick_gelu_reference(x[i]);
    const double err = std::fabs(y[i] - ref);
    if (std::fabs(x[i]) > 60.0f) {
      // Far out: x itself (positive side) or 0 to well below float's resolution of anything else.
      if (x[i] > 0) {
        EXPECT_EQ(y[i], x[i]);
      } else {
        EXPECT_LE(std::fabs(y[i]), 1e-6) << "at " << x[i];
      }
      continue;
    }
    if (std::fabs(x[i]) <= 8.0f) {
      double& worst = std::fabs(x[i]) <= 2.0f ? worst_near : worst_mid;
      worst = std::max(worst, err / std::max(std::fabs(ref), 1e-30));
      continue;
    }
    // Further out, a = -1.702x rounded to float moves e^a by up to |a|·2^-24 relative; past the
    // clamp (x below about -51.7) the result is x·e^-88 rather than smaller still.
    ASSERT_LE(err, 1e-5 * std::fabs(ref) + 1e-37 * (1.0 + std::fabs(x[i]))) << "at " << x[i];
  }
  // y = x · (-1.702 / ln 2) is rounded to float first: 2^y then moves by up to |y|·ln 2·2^-24
  // relative (2e-7 for |x| <= 2, 8e-7 for |x| <= 8), plus the polynomial's 1e-7 and the
  // reciprocal's. The int8 epilogue quantises the result to 8 bits next (steps of max|row| / 127).
  EXPECT_LE(worst_near, 6e-7);
  EXPECT_LE(worst_mid, 1.5e-6);
  const float nan_in[16] = {NAN, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  float nan_out[16];
  quick_gelu_vector(nan_in, nan_out);
  EXPECT_TRUE(std::isnan(nan_out[0]));
}

// The int8 epilogue's vector erf-GELU against x·Φ(x) in double, over the range that matters and
// far out (where it must give x, or a negligible value, not NaN or infinity).
TEST(Activation, VectorGeluMatchesReference) {
  if (!cpu_has_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::vector<float> x;
  for (int i = -20000; i <= 20000; ++i) x.push_back(static_cast<float>(i) * 0.001f);  // [-20, 20]
  for (float v : {1e-30f, -1e-30f, 1e-3f, 13.0f, -13.0f, 14.0f, -14.0f, 200.0f, -200.0f, 1e30f, -1e30f})
    x.push_back(v);
  while (x.size() % 16 != 0) x.push_back(0.5f);
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); i += 16) gelu_erf_vector(x.data() + i, y.data() + i);
  double worst = 0;  // |error| / |x|
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = gelu_reference(x[i]);
    if (std::fabs(x[i]) > 13.0f) {  // Φ is 1 or below 1e-38 there
      if (x[i] > 0) {
        EXPECT_EQ(y[i], x[i]);
      } else {
        EXPECT_LE(std::fabs(y[i]), 1e-30) << "at " << x[i];
      }
      continue;
    }
    worst = std::max(worst, std::fabs(y[i] - ref) / std::max(std::fabs(static_cast<double>(x[i])), 1e-30));
    // Negative side: the small values keep their relative precision (no cancellation in 1 + erf).
    if (x[i] < -1.0f && x[i] >= -5.0f) ASSERT_LE(std::fabs(y[i] - ref), 2e-3 * std::fabs(ref)) << "at " << x[i];
  }
  // Φ's absolute error: A&S 7.1.26's 0.75e-7, plus float rounding (1 - erfc/2 alone: 6e-8) and
  // the exponential's; oneDNN's gelu_erf, which the f32 layers fuse, uses the same approximation.
  EXPECT_LE(worst, 3e-7);
  const float nan_in[16] = {NAN, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  float nan_out[16];
  gelu_erf_vector(nan_in, nan_out);
  EXPECT_TRUE(std::isnan(nan_out[0]));
}
