// Convolution, average pooling and BatchNorm folding: the fast NHWC path against the scalar
// NCHW references, and the references against values worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "clipkit/error.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double diff = test::max_abs_diff(got.data(), want.data(), got.size());
  const double ref = std::max(test::max_abs(want.data(), want.size()), 1e-30);
  EXPECT_LE(diff / ref, rel) << what << ": max|diff| " << diff << ", max|ref| " << ref;
}

struct ConvCase {
  int64_t batch, in, out, h, w, k, stride, pad;
  bool bias;
};

// Runs the NHWC fast path and returns NCHW output.
std::vector<float> run_fast(const Conv2d& conv, const std::vector<float>& x_nchw, const ConvCase& c, bool relu,
                            int64_t workspace = Conv2d::kDefaultWorkspace) {
  std::vector<float> x(x_nchw.size());
  nchw_to_nhwc(x_nchw.data(), c.batch, c.in, c.h, c.w, x.data());
  const int64_t oh = conv.out_h(c.h), ow = conv.out_w(c.w);
  std::vector<float> y(static_cast<size_t>(c.batch * oh * ow * c.out), 123.0f);
  conv.forward(x.data(), c.batch, c.h, c.w, y.data(), relu ? ConvEpilogue::Relu : ConvEpilogue::None, workspace);
  std::vector<float> out(y.size());
  nhwc_to_nchw(y.data(), c.batch, oh, ow, c.out, out.data());
  return out;
}

}  // namespace

TEST(ConvReference, MatchesHandComputedSums) {
  // 3×3 all-ones kernel, padding 1, on a 3×3 input 1..9: each output is the sum of its
  // in-bounds neighbourhood.
  const std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<float> w(9, 1.0f);
  ConvShape s{1, 1, 3, 3, 1, 1};
  std::vector<float> y(9);
  conv2d_reference(x.data(), 1, 3, 3, w.data(), nullptr, s, y.data());
  const std::vector<float> want{12, 21, 16, 27, 45, 33, 24, 39, 28};
  EXPECT_EQ(y, want);
  // stride 2 picks the corners; a bias is added
  s.stride = 2;
  const float bias = 0.5f;
  std::vector<float> y2(4);
  conv2d_reference(x.data(), 1, 3, 3, w.data(), &bias, s, y2.data());
  EXPECT_EQ(y2, (std::vector<float>{12.5f, 16.5f, 24.5f, 28.5f}));
}

TEST(ConvReference, TwoChannelsWithDistinctWeights) {
  // 1×1 conv mixing two channels: y = 2·a - 3·b + 1
  const std::vector<float> x{1, 2, 3, 4, 10, 20, 30, 40};  // [1, 2, 2, 2]
  const std::vector<float> w{2, -3};
  const float b = 1;
  ConvShape s{2, 1, 1, 1, 1, 0};
  std::vector<float> y(4);
  conv2d_reference(x.data(), 1, 2, 2, w.data(), &b, s, y.data());
  EXPECT_EQ(y, (std::vector<float>{-27, -55, -83, -111}));
}

TEST(Conv2d, MatchesReferenceOverShapes) {
  const std::vector<ConvCase> cases = {
      {1, 3, 4, 8, 8, 3, 2, 1, false},    // stem conv1 shape
      {2, 4, 8, 7, 7, 3, 1, 1, true},     // odd size, padding 1
      {3, 8, 32, 5, 6, 1, 1, 0, true},    // pointwise, non-square
      {2, 5, 3, 9, 7, 3, 2, 0, false},    // stride 2 without padding
      {1, 6, 7, 4, 4, 1, 2, 0, true},     // strided 1×1 (through im2col)
      {2, 3, 5, 6, 5, 5, 1, 2, true},     // 5×5 kernel
      {1, 2, 2, 1, 1, 3, 1, 1, true},     // 1×1 image
  };
  uint32_t seed = 1;
  for (const ConvCase& c : cases) {
    const ConvShape s{c.in, c.out, c.k, c.k, c.stride, c.pad};
    const auto w = random_vec(static_cast<size_t>(c.out * c.in * c.k * c.k), seed++);
    const auto b = c.bias ? random_vec(static_cast<size_t>(c.out), seed++) : std::vector<float>{};
    const auto x = random_vec(static_cast<size_t>(c.batch * c.in * c.h * c.w), seed++);
    const Conv2d conv(w, b, s);
    const int64_t oh = conv.out_h(c.h), ow = conv.out_w(c.w);
    std::vector<float> ref(static_cast<size_t>(c.batch * c.out * oh * ow));
    conv2d_reference(x.data(), c.batch, c.h, c.w, w.data(), c.bias ? b.data() : nullptr, s, ref.data());
    const std::string what = "in " + std::to_string(c.in) + " out " + std::to_string(c.out) + " k " +
                             std::to_string(c.k) + " s " + std::to_string(c.stride);
    expect_close(run_fast(conv, x, c, false), ref, 1e-5, what.c_str());
    // one image per im2col group gives the same result
    expect_close(run_fast(conv, x, c, false, 1), ref, 1e-5, (what + " small workspace").c_str());
    std::vector<float> relu_ref = ref;
    for (float& f : relu_ref) f = std::max(f, 0.0f);
    expect_close(run_fast(conv, x, c, true), relu_ref, 1e-5, (what + " relu").c_str());
  }
}

TEST(Conv2d, ForwardAccumulateAddsToOutput) {
  const ConvCase c{2, 4, 6, 5, 5, 3, 1, 1, true};
  const ConvShape s{c.in, c.out, c.k, c.k, c.stride, c.pad};
  const auto w = random_vec(static_cast<size_t>(c.out * c.in * 9), 11), b = random_vec(6, 12);
  const auto x = random_vec(static_cast<size_t>(c.batch * c.in * 25), 13);
  const Conv2d conv(w, b, s);
  std::vector<float> xh(x.size());
  nchw_to_nhwc(x.data(), c.batch, c.in, 5, 5, xh.data());
  const auto base = random_vec(static_cast<size_t>(c.batch * 25 * c.out), 14);
  std::vector<float> y = base, plain(base.size());
  conv.forward_accumulate(xh.data(), c.batch, 5, 5, y.data());
  conv.forward(xh.data(), c.batch, 5, 5, plain.data());
  for (size_t i = 0; i < y.size(); ++i) plain[i] += base[i];
  expect_close(y, plain, 1e-6, "accumulate");
}

TEST(Conv2d, RejectsBadGeometry) {
  EXPECT_THROW(Conv2d(std::vector<float>(10), {}, ConvShape{1, 1, 3, 3, 1, 1}), Error);
  EXPECT_THROW(Conv2d(std::vector<float>(9), {1.0f, 2.0f}, ConvShape{1, 1, 3, 3, 1, 1}), Error);
  EXPECT_THROW(Conv2d(std::vector<float>(9), {}, ConvShape{1, 1, 3, 3, 0, 1}), Error);
  EXPECT_THROW(conv_out_size(1, 5, 1, 1), Error);
  try {
    conv_out_size(2, 7, 1, 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Shape);
    EXPECT_NE(std::string(e.what()).find("smaller than the kernel"), std::string::npos) << e.what();
  }
}

TEST(BatchNormFold, FoldedConvEqualsConvThenBatchNorm) {
  const int64_t in = 5, out = 7, h = 6, w = 6;
  const ConvShape s{in, out, 3, 3, 1, 1};
  auto weight = random_vec(static_cast<size_t>(out * in * 9), 21);
  const auto gamma = random_vec(out, 22), beta = random_vec(out, 23), mean = random_vec(out, 24);
  std::vector<float> var = random_vec(out, 25);
  for (float& v : var) v = 0.5f + std::fabs(v);
  const auto x = random_vec(static_cast<size_t>(2 * in * h * w), 26);

  std::vector<float> ref(static_cast<size_t>(2 * out * h * w));
  conv2d_reference(x.data(), 2, h, w, weight.data(), nullptr, s, ref.data());
  batchnorm_reference(ref.data(), 2, out, h * w, gamma.data(), beta.data(), mean.data(), var.data(), 1e-5);

  std::vector<float> folded = weight;
  const auto bias = fold_batchnorm(folded, out, gamma.data(), beta.data(), mean.data(), var.data(), 1e-5);
  std::vector<float> got(ref.size());
  conv2d_reference(x.data(), 2, h, w, folded.data(), bias.data(), s, got.data());
  expect_close(got, ref, 1e-6, "folded reference");
  expect_close(run_fast(Conv2d(folded, bias, s), x, ConvCase{2, in, out, h, w, 3, 1, 1, true}, false), ref, 1e-5,
               "folded fast");
}

TEST(BatchNormFold, HandComputedChannel) {
  // gamma 2, beta 1, mean 3, var 4 - eps: y = (x - 3) / 2 · 2 + 1 = x - 2 for a 1×1 identity conv
  std::vector<float> w{1.0f};
  const float g = 2, b = 1, m = 3, v = 4.0f - 1e-5f;
  const auto bias = fold_batchnorm(w, 1, &g, &b, &m, &v, 1e-5);
  EXPECT_NEAR(w[0], 1.0f, 1e-6);
  EXPECT_NEAR(bias[0], -2.0f, 1e-6);
  std::vector<float> x{5.0f};
  batchnorm_reference(x.data(), 1, 1, 1, &g, &b, &m, &v, 1e-5);
  EXPECT_NEAR(x[0], 3.0f, 1e-6);
}

TEST(BatchNormFold, RejectsNegativeVariance) {
  std::vector<float> w{1.0f, 1.0f};
  const float g[2] = {1, 1}, b[2] = {0, 0}, m[2] = {0, 0}, v[2] = {1, -1};
  try {
    fold_batchnorm(w, 2, g, b, m, v, 1e-5, "layer1.0.bn1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer1.0.bn1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("channel 1"), std::string::npos) << e.what();
  }
}

TEST(AvgPool, ReferenceMatchesHandComputedMeans) {
  // 5×4 input, k = 2: floor drops the last row
  std::vector<float> x(20);
  for (int i = 0; i < 20; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i);
  std::vector<float> y(4);
  avg_pool2d_reference(x.data(), 1, 1, 5, 4, 2, y.data());
  EXPECT_EQ(y, (std::vector<float>{2.5f, 4.5f, 10.5f, 12.5f}));
  EXPECT_EQ(avg_pool_out_size(5, 2), 2);
  EXPECT_THROW(avg_pool_out_size(1, 2), Error);
}

TEST(AvgPool, NhwcMatchesReference) {
  for (int64_t k : {1, 2, 3}) {
    const int64_t b = 2, c = 5, h = 7, w = 8;
    const auto x = random_vec(static_cast<size_t>(b * c * h * w), 31 + static_cast<uint32_t>(k));
    const int64_t oh = h / k, ow = w / k;
    std::vector<float> ref(static_cast<size_t>(b * c * oh * ow));
    avg_pool2d_reference(x.data(), b, c, h, w, k, ref.data());
    std::vector<float> xh(x.size()), yh(ref.size()), got(ref.size());
    nchw_to_nhwc(x.data(), b, c, h, w, xh.data());
    avg_pool2d_nhwc(xh.data(), b, h, w, c, k, yh.data());
    nhwc_to_nchw(yh.data(), b, oh, ow, c, got.data());
    expect_close(got, ref, 1e-6, ("k " + std::to_string(k)).c_str());
  }
}

TEST(Layout, NchwNhwcRoundTrip) {
  const auto x = random_vec(2 * 3 * 4 * 5, 41);
  std::vector<float> y(x.size()), z(x.size());
  nchw_to_nhwc(x.data(), 2, 3, 4, 5, y.data());
  EXPECT_EQ(y[1], x[20]);  // channel 1 of pixel 0
  nhwc_to_nchw(y.data(), 2, 4, 5, 3, z.data());
  EXPECT_EQ(z, x);
}
