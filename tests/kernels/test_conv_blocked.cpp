// Blocked (nChw16c) activations and Winograd convolutions: the layouts the ResNet tower uses on
// AVX-512 CPUs. Every path is compared with the scalar NCHW reference convolution and pooling.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "clipkit/error.h"
#include "kernels/act_layout.h"
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

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  return test::max_abs_diff(got.data(), want.data(), want.size()) /
         std::max(test::max_abs(want.data(), want.size()), 1e-30);
}

struct Case {
  int64_t batch, in, out, h, w, k, stride, pad;
};

std::string describe(const Case& c) {
  return "batch " + std::to_string(c.batch) + " " + std::to_string(c.in) + "->" + std::to_string(c.out) + " " +
         std::to_string(c.h) + "x" + std::to_string(c.w) + " k" + std::to_string(c.k) + " s" +
         std::to_string(c.stride) + " p" + std::to_string(c.pad);
}

// Runs conv on NCHW data through the layouts of conv.io() and returns NCHW output; with
// `residual` (NCHW) the call is forward_accumulate.
std::vector<float> run(const Conv2d& conv, const std::vector<float>& x_nchw, const Case& c, bool relu,
                       const std::vector<float>* residual = nullptr) {
  const ConvIo& io = conv.io();
  const int64_t oh = conv.out_h(c.h), ow = conv.out_w(c.w);
  std::vector<float> x(static_cast<size_t>(act_floats(io.src, c.batch, c.in, c.h, c.w)));
  convert_layout(x_nchw.data(), ActLayout::Nchw, x.data(), io.src, c.batch, c.in, c.h, c.w);
  std::vector<float> y(static_cast<size_t>(act_floats(io.dst, c.batch, c.out, oh, ow)), 123.0f);
  const ConvEpilogue epi = relu ? ConvEpilogue::Relu : ConvEpilogue::None;
  if (residual) {
    convert_layout(residual->data(), ActLayout::Nchw, y.data(), io.dst, c.batch, c.out, oh, ow);
    conv.forward_accumulate(x.data(), c.batch, c.h, c.w, y.data(), epi);
  } else {
    conv.forward(x.data(), c.batch, c.h, c.w, y.data(), epi);
  }
  std::vector<float> out(static_cast<size_t>(c.batch * c.out * oh * ow));
  convert_layout(y.data(), io.dst, out.data(), ActLayout::Nchw, c.batch, c.out, oh, ow);
  return out;
}

std::vector<float> reference(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                             const Case& c, bool relu, const std::vector<float>* residual = nullptr) {
  const ConvShape s{c.in, c.out, c.k, c.k, c.stride, c.pad};
  const int64_t oh = conv_out_size(c.h, c.k, c.stride, c.pad), ow = conv_out_size(c.w, c.k, c.stride, c.pad);
  std::vector<float> y(static_cast<size_t>(c.batch * c.out * oh * ow));
  conv2d_reference(x.data(), c.batch, c.h, c.w, w.data(), b.data(), s, y.data());
  if (residual)
    for (size_t i = 0; i < y.size(); ++i) y[i] += (*residual)[i];
  if (relu)
    for (float& f : y) f = std::max(f, 0.0f);
  return y;
}

ConvIo blocked(ConvAlgorithm algorithm, ActLayout src = ActLayout::Blocked16) {
  ConvIo io;
  io.src = src;
  io.dst = ActLayout::Blocked16;
  io.algorithm = algorithm;
  return io;
}

bool is_winograd(const std::string& impl) { return impl.find("wino") != std::string::npos; }

}  // namespace

TEST(ActLayout, ConversionsRoundTripAndZeroThePadding) {
  const int64_t b = 2, c = 21, h = 3, w = 5;  // 21 channels: the second 16-channel block is padded
  EXPECT_EQ(act_floats(ActLayout::Nchw, b, c, h, w), b * c * h * w);
  EXPECT_EQ(act_floats(ActLayout::Nhwc, b, c, h, w), b * c * h * w);
  EXPECT_EQ(act_floats(ActLayout::Blocked16, b, c, h, w), b * 32 * h * w);
  const auto x = random_vec(static_cast<size_t>(b * c * h * w), 1);
  std::vector<float> blk(static_cast<size_t>(act_floats(ActLayout::Blocked16, b, c, h, w)), 7.0f);
  convert_layout(x.data(), ActLayout::Nchw, blk.data(), ActLayout::Blocked16, b, c, h, w);
  // [b][c/16][h][w][16]: channel 17 of pixel (1, 2) of image 1, and a padded channel
  const auto at = [&](int64_t n, int64_t ch, int64_t y, int64_t xx) {
    return blk[static_cast<size_t>((((n * 2 + ch / 16) * h + y) * w + xx) * 16 + ch % 16)];
  };
  EXPECT_EQ(at(1, 17, 1, 2), x[static_cast<size_t>(((1 * c + 17) * h + 1) * w + 2)]);
  EXPECT_EQ(at(0, 3, 0, 0), x[static_cast<size_t>(3 * h * w)]);
  for (int64_t n = 0; n < b; ++n)
    for (int64_t ch = c; ch < 32; ++ch) EXPECT_EQ(at(n, ch, 2, 4), 0.0f) << ch;
  std::vector<float> nhwc(x.size()), want(x.size()), back(x.size());
  convert_layout(blk.data(), ActLayout::Blocked16, nhwc.data(), ActLayout::Nhwc, b, c, h, w);
  nchw_to_nhwc(x.data(), b, c, h, w, want.data());
  EXPECT_EQ(nhwc, want);
  convert_layout(nhwc.data(), ActLayout::Nhwc, back.data(), ActLayout::Nchw, b, c, h, w);
  EXPECT_EQ(back, x);
  EXPECT_THROW(convert_layout(nullptr, ActLayout::Nchw, back.data(), ActLayout::Nhwc, b, c, h, w), Error);
  EXPECT_THROW(convert_layout(x.data(), ActLayout::Nchw, back.data(), ActLayout::Nhwc, b, 0, h, w), Error);
}

TEST(Conv2dBlocked, MatchesReferenceOverShapesBothAlgorithms) {
  if (!blocked_layout_supported()) GTEST_SKIP() << "no AVX-512: the blocked layout is not used on this CPU";
  const std::vector<Case> cases = {
      {2, 16, 16, 7, 7, 3, 1, 1},    // Winograd-eligible, odd size
      {3, 32, 48, 12, 10, 3, 1, 1},  // Winograd, several channel blocks, non-square
      {1, 64, 32, 1, 1, 3, 1, 1},    // 1x1 image
      {5, 16, 32, 9, 9, 3, 1, 1},    // batch 5 (Winograd F(4,3) territory)
      {2, 17, 33, 8, 8, 3, 1, 1},    // channels off the block size (padded)
      {2, 24, 40, 6, 6, 1, 1, 0},    // pointwise, padded channels
      {2, 16, 16, 9, 9, 3, 2, 1},    // strided 3x3: direct only
      {1, 16, 8, 11, 11, 5, 1, 2},   // 5x5: direct only; 8 output channels (padded)
  };
  uint32_t seed = 10;
  for (const Case& c : cases)
    for (const ConvAlgorithm algorithm : {ConvAlgorithm::Auto, ConvAlgorithm::Direct}) {
      const ConvShape s{c.in, c.out, c.k, c.k, c.stride, c.pad};
      const auto w = random_vec(static_cast<size_t>(c.out * c.in * c.k * c.k), seed++, 0.2f);
      const auto b = random_vec(static_cast<size_t>(c.out), seed++);
      const auto x = random_vec(static_cast<size_t>(c.batch * c.in * c.h * c.w), seed++);
      const auto res = random_vec(static_cast<size_t>(c.batch * c.out * conv_out_size(c.h, c.k, c.stride, c.pad) *
                                                      conv_out_size(c.w, c.k, c.stride, c.pad)),
                                  seed++);
      const Conv2d conv(w, b, s, WeightFormat::F32, c.h, c.w, c.batch, blocked(algorithm));
      const std::string impl = conv.implementation(c.batch, c.h, c.w);
      const std::string what = describe(c) + " (" + impl + ")";
      const bool eligible = c.k == 3 && c.stride == 1 && algorithm == ConvAlgorithm::Auto;
      if (!eligible) EXPECT_FALSE(is_winograd(impl)) << what;
      EXPECT_EQ(impl.rfind("ref", 0), std::string::npos) << what;
      EXPECT_LE(rel_error(run(conv, x, c, false), reference(x, w, b, c, false)), 1e-5) << what;
      EXPECT_LE(rel_error(run(conv, x, c, true), reference(x, w, b, c, true)), 1e-5) << what << " relu";
      EXPECT_LE(rel_error(run(conv, x, c, true, &res), reference(x, w, b, c, true, &res)), 1e-5)
          << what << " residual relu";
    }
}

TEST(Conv2dBlocked, WinogradRunsForThreeByThreeLayersAndStaysExact) {
  if (!blocked_layout_supported()) GTEST_SKIP() << "no AVX-512: the blocked layout is not used on this CPU";
  // an RN50 layer-3 shape at a small batch size and a larger one (oneDNN's F(2,3) and F(4,3)
  // kernels), on one object, alternating
  const ConvShape s{64, 64, 3, 3, 1, 1};
  const auto w = random_vec(64 * 64 * 9, 21, 0.05f), b = random_vec(64, 22);
  const Conv2d wino(w, b, s, WeightFormat::F32, 14, 14, 16, blocked(ConvAlgorithm::Auto));
  const Conv2d direct(w, b, s, WeightFormat::F32, 14, 14, 16, blocked(ConvAlgorithm::Direct));
  EXPECT_FALSE(is_winograd(direct.implementation(16, 14, 14)));
  uint32_t seed = 23;
  for (int round = 0; round < 2; ++round)
    for (const int64_t batch : {1, 16, 3}) {
      const Case c{batch, 64, 64, 14, 14, 3, 1, 1};
      const std::string impl = wino.implementation(batch, 14, 14);
      EXPECT_TRUE(is_winograd(impl)) << describe(c) << ": " << impl;
      const auto x = random_vec(static_cast<size_t>(batch * 64 * 14 * 14), seed++);
      const auto want = reference(x, w, b, c, true);
      const double e_wino = rel_error(run(wino, x, c, true), want);
      const double e_direct = rel_error(run(direct, x, c, true), want);
      EXPECT_LE(e_wino, 1e-5) << describe(c) << " " << impl;
      EXPECT_LE(e_direct, 1e-5) << describe(c);
    }
  // the Winograd layouts are kept besides the direct one they were made from
  EXPECT_GT(wino.weight_bytes(), direct.weight_bytes());
}

TEST(Conv2dBlocked, PlanarImageIntoBlockedOutput) {
  if (!blocked_layout_supported()) GTEST_SKIP() << "no AVX-512: the blocked layout is not used on this CPU";
  // the ResNet stem's first convolution: 3-channel planar image, stride 2, blocked output
  const Case c{2, 3, 32, 32, 32, 3, 2, 1};
  const ConvShape s{c.in, c.out, 3, 3, 2, 1};
  const auto w = random_vec(32 * 3 * 9, 31), b = random_vec(32, 32), x = random_vec(2 * 3 * 32 * 32, 33);
  const Conv2d conv(w, b, s, WeightFormat::F32, 32, 32, 2, blocked(ConvAlgorithm::Auto, ActLayout::Nchw));
  const std::string impl = conv.implementation(2, 32, 32);
  EXPECT_EQ(impl.rfind("ref", 0), std::string::npos) << impl;
  EXPECT_LE(rel_error(run(conv, x, c, true), reference(x, w, b, c, true)), 1e-5) << impl;
}

TEST(Conv2dBlocked, F16UsesDirectKernelsAndInt8RefusesBlockedLayouts) {
  if (!blocked_layout_supported()) GTEST_SKIP() << "no AVX-512: the blocked layout is not used on this CPU";
  const ConvShape s{16, 16, 3, 3, 1, 1};
  const auto w = random_vec(16 * 16 * 9, 41);
  const Conv2d f16(w, {}, s, WeightFormat::F16, 8, 8, 2, blocked(ConvAlgorithm::Auto));
  EXPECT_FALSE(is_winograd(f16.implementation(2, 8, 8)));
  try {
    Conv2d(w, {}, s, WeightFormat::Int8, 8, 8, 1, blocked(ConvAlgorithm::Auto));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("nChw16c"), std::string::npos) << e.what();
  }
}

TEST(AvgPool, BlockedMatchesReference) {
  uint32_t seed = 51;
  for (int64_t k : {1, 2, 3})
    for (const auto& [b, c, h, w] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
             {2, 5, 7, 8}, {1, 64, 14, 14}, {3, 17, 5, 9}}) {
      const auto x = random_vec(static_cast<size_t>(b * c * h * w), seed++);
      const int64_t oh = h / k, ow = w / k;
      std::vector<float> ref(static_cast<size_t>(b * c * oh * ow)), got(ref.size());
      avg_pool2d_reference(x.data(), b, c, h, w, k, ref.data());
      std::vector<float> xb(static_cast<size_t>(act_floats(ActLayout::Blocked16, b, c, h, w)));
      std::vector<float> yb(static_cast<size_t>(act_floats(ActLayout::Blocked16, b, c, oh, ow)), 123.0f);
      convert_layout(x.data(), ActLayout::Nchw, xb.data(), ActLayout::Blocked16, b, c, h, w);
      avg_pool2d(xb.data(), b, h, w, c, k, yb.data(), ActLayout::Blocked16);
      convert_layout(yb.data(), ActLayout::Blocked16, got.data(), ActLayout::Nchw, b, c, oh, ow);
      EXPECT_LE(rel_error(got, ref), 1e-6) << "k " << k << " " << b << "x" << c << "x" << h << "x" << w;
    }
}
