// sgemm against the double-accumulating triple loop, on every transpose combination.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/gemm.h"
#include "support/test_support.h"

namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct GemmCase {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
};

class SgemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(SgemmTest, MatchesReference) {
  const GemmCase c = GetParam();
  // Leading dimensions larger than the matrix, to exercise strides.
  const int64_t lda = (c.ta ? c.m : c.k) + 3, ldb = (c.tb ? c.k : c.n) + 5, ldc = c.n + 2;
  const int64_t a_rows = c.ta ? c.k : c.m, b_rows = c.tb ? c.n : c.k;
  const auto a = random_vector(static_cast<size_t>(a_rows * lda), 1);
  const auto b = random_vector(static_cast<size_t>(b_rows * ldb), 2);
  auto c_fast = random_vector(static_cast<size_t>(c.m * ldc), 3);
  auto c_ref = c_fast;
  clipkit::sgemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, c_fast.data(), ldc);
  clipkit::sgemm_reference(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, c_ref.data(),
                           ldc);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      const float r = c_ref[static_cast<size_t>(i * ldc + j)];
      ASSERT_NEAR(c_fast[static_cast<size_t>(i * ldc + j)], r, 1e-4f * (1.0f + std::sqrt(static_cast<float>(c.k))))
          << "at " << i << "," << j;
    }
  // Padding columns beyond n are untouched.
  const auto c_orig = random_vector(static_cast<size_t>(c.m * ldc), 3);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = c.n; j < ldc; ++j)
      EXPECT_EQ(c_fast[static_cast<size_t>(i * ldc + j)], c_orig[static_cast<size_t>(i * ldc + j)]);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SgemmTest,
                         ::testing::Values(GemmCase{false, false, 7, 13, 29, 1.0f, 0.0f},
                                           GemmCase{false, true, 50, 50, 64, 0.125f, 0.0f},
                                           GemmCase{true, false, 33, 17, 50, 1.0f, 1.0f},
                                           GemmCase{true, true, 16, 31, 9, -2.0f, 0.5f},
                                           GemmCase{false, true, 1, 96, 128, 1.0f, 1.0f},
                                           GemmCase{false, false, 65, 1, 40, 1.0f, 0.0f}));

TEST(Sgemm, EmptyProblemsAreNoOps) {
  std::vector<float> c(4, 7.0f);
  clipkit::sgemm(false, false, 0, 2, 3, 1.0f, nullptr, 3, nullptr, 2, 0.0f, c.data(), 2);
  clipkit::sgemm(false, false, 2, 0, 3, 1.0f, nullptr, 3, nullptr, 1, 0.0f, c.data(), 2);
  for (float v : c) EXPECT_EQ(v, 7.0f);
}

TEST(Sgemm, KernelDescriptionNamesBackendAndIsa) {
  const std::string d = clipkit::kernel_description();
  EXPECT_NE(d.find("oneDNN"), std::string::npos) << d;
  EXPECT_NE(d.find("f32: "), std::string::npos) << d;
  EXPECT_EQ(d.find("f32: unavailable"), std::string::npos) << d;
  EXPECT_NE(d.find("threads"), std::string::npos) << d;
}

TEST(Sgemm, ThreadSettingIsProcessWide) {
  const int before = clipkit::num_threads();
  clipkit::set_num_threads(1);
  EXPECT_EQ(clipkit::num_threads(), 1);
  clipkit::set_num_threads(2);
  EXPECT_EQ(clipkit::num_threads(), 2);
  clipkit::set_num_threads(before);
  EXPECT_EQ(clipkit::num_threads(), before);
}

}  // namespace
