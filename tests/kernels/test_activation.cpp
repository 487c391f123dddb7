#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "clipkit/error.h"
#include "kernels/activation.h"
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
