// Convolution, average pooling and BatchNorm folding: the oneDNN NHWC path against the scalar
// NCHW references (f32, f16, int8, fused ReLU and residual sum, several batch sizes on one
// object), and the references against values worked out by hand. Then the blocked (nChw16c)
// layout and the Winograd convolutions the ResNet tower uses on AVX-512 CPUs, against the same
// references.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <thread>
#include <vector>

#include "clipkit/error.h"
#include "core/half.h"
#include "kernels/act_layout.h"
#include "kernels/conv.h"
#include "kernels/cpu.h"
#include "kernels/int8.h"
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

// Runs the NHWC fast path on NCHW data and returns NCHW output. With `residual`, the output
// buffer starts as that (NCHW) tensor and the call is forward_accumulate.
std::vector<float> run_fast(const Conv2d& conv, const std::vector<float>& x_nchw, const ConvCase& c, bool relu,
                            const std::vector<float>* residual = nullptr) {
  std::vector<float> x(x_nchw.size());
  nchw_to_nhwc(x_nchw.data(), c.batch, c.in, c.h, c.w, x.data());
  const int64_t oh = conv.out_h(c.h), ow = conv.out_w(c.w);
  std::vector<float> y(static_cast<size_t>(c.batch * oh * ow * c.out), 123.0f);
  const ConvEpilogue epi = relu ? ConvEpilogue::Relu : ConvEpilogue::None;
  if (residual) {
    nchw_to_nhwc(residual->data(), c.batch, c.out, oh, ow, y.data());
    conv.forward_accumulate(x.data(), c.batch, c.h, c.w, y.data(), epi);
  } else {
    conv.forward(x.data(), c.batch, c.h, c.w, y.data(), epi);
  }
  std::vector<float> out(y.size());
  nhwc_to_nchw(y.data(), c.batch, oh, ow, c.out, out.data());
  return out;
}

// reference conv + bias (+ residual) (+ ReLU), NCHW
std::vector<float> reference(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                             const ConvCase& c, bool relu, const std::vector<float>* residual = nullptr) {
  const ConvShape s{c.in, c.out, c.k, c.k, c.stride, c.pad};
  const int64_t oh = conv_out_size(c.h, c.k, c.stride, c.pad), ow = conv_out_size(c.w, c.k, c.stride, c.pad);
  std::vector<float> y(static_cast<size_t>(c.batch * c.out * oh * ow));
  conv2d_reference(x.data(), c.batch, c.h, c.w, w.data(), b.empty() ? nullptr : b.data(), s, y.data());
  if (residual)
    for (size_t i = 0; i < y.size(); ++i) y[i] += (*residual)[i];
  if (relu)
    for (float& f : y) f = std::max(f, 0.0f);
  return y;
}

std::string describe(const ConvCase& c) {
  return "batch " + std::to_string(c.batch) + " in " + std::to_string(c.in) + " out " + std::to_string(c.out) + " " +
         std::to_string(c.h) + "x" + std::to_string(c.w) + " k " + std::to_string(c.k) + " s " +
         std::to_string(c.stride) + " p " + std::to_string(c.pad);
}

int64_t out_count(const ConvCase& c) {
  return c.batch * c.out * conv_out_size(c.h, c.k, c.stride, c.pad) * conv_out_size(c.w, c.k, c.stride, c.pad);
}

// The int8 scheme of Conv2d(WeightFormat::Int8) computed independently, in double, on NCHW data:
// per-output-channel weights from quantize_weights_int8; per image, activations quantised with
// scale max/255 (non-negative image) or max|x|/127 and zero point 128 (signed image), by
// multiplying with the reciprocal scale and rounding half to even.
std::vector<float> int8_reference(const std::vector<float>& x, const std::vector<float>& w,
                                  const std::vector<float>& b, const ConvCase& c, bool relu,
                                  const std::vector<float>* residual = nullptr) {
  const ConvShape s{c.in, c.out, c.k, c.k, c.stride, c.pad};
  const QuantizedWeights qw = quantize_weights_int8(w.data(), c.out, c.in * c.k * c.k);
  const int64_t per = c.in * c.h * c.w;
  const int64_t oh = conv_out_size(c.h, c.k, c.stride, c.pad), ow = conv_out_size(c.w, c.k, c.stride, c.pad);
  const int64_t out_per = c.out * oh * ow;
  std::vector<float> y(static_cast<size_t>(c.batch * out_per));
  for (int64_t img = 0; img < c.batch; ++img) {
    const float* xi = x.data() + img * per;
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < per; ++i) lo = std::min(lo, xi[i]), hi = std::max(hi, xi[i]);
    const bool signed_input = lo < 0.0f;
    const float scale = signed_input ? std::max(-lo, hi) / 127.0f : hi / 255.0f;
    const float inv = 1.0f / scale;
    // dequantised activations (q - zp) as exact small integers, in a float tensor
    std::vector<float> qx(static_cast<size_t>(per));
    for (int64_t i = 0; i < per; ++i) {
      float q = std::nearbyint(xi[i] * inv);
      q = signed_input ? std::min(127.0f, std::max(-127.0f, q)) : std::min(255.0f, std::max(0.0f, q));
      qx[static_cast<size_t>(i)] = q;
    }
    std::vector<float> qwf(qw.q.begin(), qw.q.end());
    std::vector<float> acc(static_cast<size_t>(out_per));
    conv2d_reference(qx.data(), 1, c.h, c.w, qwf.data(), nullptr, s, acc.data());
    for (int64_t o = 0; o < c.out; ++o)
      for (int64_t p = 0; p < oh * ow; ++p) {
        const size_t i = static_cast<size_t>(o * oh * ow + p);
        double v = static_cast<double>(acc[i]) * qw.scale[static_cast<size_t>(o)] * scale;
        if (!b.empty()) v += b[static_cast<size_t>(o)];
        if (residual) v += (*residual)[static_cast<size_t>(img * out_per) + i];
        if (relu) v = std::max(v, 0.0);
        y[static_cast<size_t>(img * out_per) + i] = static_cast<float>(v);
      }
  }
  return y;
}

const std::vector<ConvCase>& conv_cases() {
  static const std::vector<ConvCase> cases = {
      {1, 3, 4, 8, 8, 3, 2, 1, false},     // stem conv1 shape
      {2, 4, 8, 7, 7, 3, 1, 1, true},      // odd size, padding 1
      {3, 8, 32, 5, 6, 1, 1, 0, true},     // pointwise, non-square
      {2, 5, 3, 9, 7, 3, 2, 0, false},     // stride 2 without padding
      {1, 6, 7, 4, 4, 1, 2, 0, true},      // strided 1×1
      {2, 3, 5, 6, 5, 5, 1, 2, true},      // 5×5 kernel
      {1, 2, 2, 1, 1, 3, 1, 1, true},      // 1×1 image
      {5, 16, 24, 11, 9, 3, 1, 1, true},   // 5 images, odd sizes
      {4, 64, 48, 6, 6, 1, 1, 0, false},   // wide pointwise (several channel blocks)
      {3, 17, 33, 13, 13, 3, 2, 1, true},  // channel counts off every block size, stride 2
  };
  return cases;
}

// Runs conv on NCHW data through the layouts of conv.io() and returns NCHW output; with
// `residual` (NCHW) the call is forward_accumulate.
std::vector<float> run_io(const Conv2d& conv, const std::vector<float>& x_nchw, const ConvCase& c, bool relu,
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

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  return test::max_abs_diff(got.data(), want.data(), want.size()) /
         std::max(test::max_abs(want.data(), want.size()), 1e-30);
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

// One case's shape, weights, bias (empty without one), input and residual, drawn in that order
// from consecutive seeds (`seed` advances past those used).
struct CaseData {
  ConvShape s;
  std::vector<float> w, b, x, res;
};
CaseData case_data(const ConvCase& c, uint32_t& seed) {
  CaseData d;
  d.s = ConvShape{c.in, c.out, c.k, c.k, c.stride, c.pad};
  d.w = random_vec(static_cast<size_t>(c.out * c.in * c.k * c.k), seed++);
  if (c.bias) d.b = random_vec(static_cast<size_t>(c.out), seed++);
  d.x = random_vec(static_cast<size_t>(c.batch * c.in * c.h * c.w), seed++);
  d.res = random_vec(static_cast<size_t>(out_count(c)), seed++);
  return d;
}

TEST(Conv2d, MatchesReferenceOverShapes) {
  uint32_t seed = 1;
  for (const ConvCase& c : conv_cases()) {
    auto [s, w, b, x, res] = case_data(c, seed);
    const Conv2d conv(w, b, s);
    const std::string what = describe(c) + " (" + conv.implementation(c.batch, c.h, c.w) + ")";
    expect_close(run_fast(conv, x, c, false), reference(x, w, b, c, false), 1e-5, what.c_str());
    expect_close(run_fast(conv, x, c, true), reference(x, w, b, c, true), 1e-5, (what + " relu").c_str());
    expect_close(run_fast(conv, x, c, false, &res), reference(x, w, b, c, false, &res), 1e-5,
                 (what + " residual").c_str());
    expect_close(run_fast(conv, x, c, true, &res), reference(x, w, b, c, true, &res), 1e-5,
                 (what + " residual relu").c_str());
  }
}

TEST(Conv2d, OneObjectServesSeveralBatchSizesAndInputSizes) {
  // the primitive is cached per input shape: alternate between shapes on one convolution
  const ConvShape s{12, 20, 3, 3, 1, 1};
  const auto w = random_vec(20 * 12 * 9, 51), b = random_vec(20, 52);
  const Conv2d conv(w, b, s, WeightFormat::F32, 10, 10, 4);
  uint32_t seed = 53;
  for (int round = 0; round < 2; ++round)
    for (const auto& [batch, h, wd] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 10, 10}, {16, 10, 10}, {3, 7, 12}, {1, 10, 10}, {2, 3, 3}}) {
      const ConvCase c{batch, 12, 20, h, wd, 3, 1, 1, true};
      const auto x = random_vec(static_cast<size_t>(batch * 12 * h * wd), seed++);
      expect_close(run_fast(conv, x, c, true), reference(x, w, b, c, true), 1e-5, describe(c).c_str());
    }
}

TEST(Conv2d, WeightsInAnotherLayoutForOtherSizes) {
  // Weights laid out for one input size, then used at others: 1×1 convolutions with many
  // channels are where oneDNN picks a size-dependent weight blocking. Whatever it picks, the
  // results must stay exact.
  const ConvShape s{128, 512, 1, 1, 1, 0};
  const auto w = random_vec(512 * 128, 61, 0.1f), b = random_vec(512, 62);
  const Conv2d conv(w, b, s, WeightFormat::F32, 28, 28, 1);
  const int64_t before = conv.weight_bytes();
  EXPECT_GE(before, int64_t{512 * 128 * 4});
  for (const auto& [batch, side] : std::vector<std::pair<int64_t, int64_t>>{{1, 28}, {1, 14}, {2, 14}, {1, 7}}) {
    const ConvCase c{batch, 128, 512, side, side, 1, 1, 0, true};
    const auto x = random_vec(static_cast<size_t>(batch * 128 * side * side), 63 + static_cast<uint32_t>(side));
    const auto res = random_vec(static_cast<size_t>(out_count(c)), 64);
    const std::string what = describe(c) + " (" + conv.implementation(batch, side, side) + ")";
    expect_close(run_fast(conv, x, c, true, &res), reference(x, w, b, c, true, &res), 1e-5, what.c_str());
  }
  EXPECT_GE(conv.weight_bytes(), before);
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
  // with ReLU after the sum: every negative sum becomes 0, every positive one stays
  std::vector<float> yr = base;
  conv.forward_accumulate(xh.data(), c.batch, 5, 5, yr.data(), ConvEpilogue::Relu);
  size_t zeros = 0;
  for (size_t i = 0; i < yr.size(); ++i) {
    EXPECT_NEAR(yr[i], std::max(plain[i], 0.0f), 1e-5f) << i;
    zeros += yr[i] == 0.0f;
  }
  EXPECT_GT(zeros, 0u);
  EXPECT_LT(zeros, yr.size());
}

TEST(Conv2d, F16WeightsEqualReferenceWithHalfRoundedWeights) {
  uint32_t seed = 71;
  for (const ConvCase& c : conv_cases()) {
    auto [s, w, b, x, res] = case_data(c, seed);
    std::vector<float> wh = w;
    for (float& f : wh) f = half_to_float(float_to_half(f));
    const Conv2d conv(w, b, s, WeightFormat::F16);
    EXPECT_EQ(conv.format(), WeightFormat::F16);
    EXPECT_LT(conv.weight_bytes(), static_cast<int64_t>(w.size() * sizeof(float)) + 64 * 64 * 2);
    expect_close(run_fast(conv, x, c, true, &res), reference(x, wh, b, c, true, &res), 1e-5, describe(c).c_str());
  }
}

TEST(Conv2d, Int8FollowsTheDocumentedScheme) {
  uint32_t seed = 81;
  std::vector<ConvCase> cases = conv_cases();
  // widths like RN50's, where the ResNet runs int8 (1x1 and 3x3 kernels, a stride, 64-value steps
  // of the activation quantisation and their tails)
  cases.push_back({2, 32, 48, 7, 7, 1, 1, 0, true});
  cases.push_back({1, 48, 32, 9, 9, 3, 1, 1, true});
  for (const ConvCase& c : cases) {
    auto [s, w, b, x, res] = case_data(c, seed);
    // image 0 signed (zero-point path); the others non-negative like ReLU outputs (plain u8 path),
    // with a different range each
    const int64_t per = c.in * c.h * c.w;
    for (int64_t i = per; i < static_cast<int64_t>(x.size()); ++i)
      x[static_cast<size_t>(i)] = std::max(0.0f, x[static_cast<size_t>(i)]) * static_cast<float>(1 + i / per);
    const Conv2d conv(w, b, s, WeightFormat::Int8);
    const std::string what = describe(c) + " (" + conv.implementation(c.batch, c.h, c.w) + ")";
    expect_close(run_fast(conv, x, c, false), int8_reference(x, w, b, c, false), 1e-5, what.c_str());
    expect_close(run_fast(conv, x, c, true, &res), int8_reference(x, w, b, c, true, &res), 1e-5,
                 (what + " residual relu").c_str());
    // and close to f32 (the quantisation error itself)
    const auto f32 = reference(x, w, b, c, false);
    const auto got = run_fast(conv, x, c, false);
    EXPECT_GE(test::cosine(got.data(), f32.data(), got.size()), 0.999) << what;
  }
}

TEST(Conv2d, Int8ImagesAreQuantisedIndependently) {
  // per-image scales: an image's result does not depend on the other images of the batch
  const ConvCase c{3, 16, 8, 9, 9, 3, 1, 1, true};
  const ConvShape s{c.in, c.out, 3, 3, 1, 1};
  const auto w = random_vec(8 * 16 * 9, 91), b = random_vec(8, 92);
  auto x = random_vec(static_cast<size_t>(3 * 16 * 81), 93);
  for (size_t i = 16 * 81; i < x.size(); ++i) x[i] = std::fabs(x[i]) * (i < 2 * 16 * 81 ? 1000.0f : 0.001f);
  const Conv2d conv(w, b, s, WeightFormat::Int8);
  const auto all = run_fast(conv, x, c, true);
  for (int64_t img = 0; img < 3; ++img) {
    const ConvCase one{1, 16, 8, 9, 9, 3, 1, 1, true};
    const std::vector<float> xi(x.begin() + img * 16 * 81, x.begin() + (img + 1) * 16 * 81);
    const auto alone = run_fast(conv, xi, one, true);
    const std::vector<float> part(all.begin() + img * 8 * 81, all.begin() + (img + 1) * 8 * 81);
    EXPECT_EQ(alone, part) << "image " << img;
  }
}

TEST(Conv2d, Int8PortableQuantisationGivesTheAvx512Output) {
  // the activations' range and bytes computed without AVX-512 (set_max_cpu_isa): the same
  // bytes, so the same output; signed images (zero point 128) and non-negative ones
  uint32_t seed = 95;
  for (const ConvCase& c : {ConvCase{2, 32, 48, 7, 7, 1, 1, 0, true}, ConvCase{2, 16, 8, 9, 9, 3, 1, 1, true}}) {
    auto [s, w, b, x, res] = case_data(c, seed);
    const int64_t per = c.in * c.h * c.w;
    for (int64_t i = per; i < static_cast<int64_t>(x.size()); ++i)
      x[static_cast<size_t>(i)] = std::max(0.0f, x[static_cast<size_t>(i)]);
    const Conv2d conv(w, b, s, WeightFormat::Int8);
    const auto fast = run_fast(conv, x, c, false);
    set_max_cpu_isa(CpuIsa::Scalar);
    const auto portable = run_fast(conv, x, c, false);
    set_max_cpu_isa(CpuIsa::Avx512);
    EXPECT_EQ(portable, fast) << describe(c);
    expect_close(portable, int8_reference(x, w, b, c, false), 1e-5, describe(c).c_str());
  }
}

TEST(Conv2d, ConstForwardIsThreadSafe) {
  const ConvCase c{2, 8, 16, 12, 12, 3, 1, 1, true};
  const ConvShape s{8, 16, 3, 3, 1, 1};
  const auto w = random_vec(16 * 8 * 9, 101), b = random_vec(16, 102);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::Int8}) {
    const Conv2d conv(w, b, s, f);
    std::vector<std::vector<float>> inputs, want, got(4);
    for (uint32_t t = 0; t < 4; ++t) {
      inputs.push_back(random_vec(static_cast<size_t>(2 * 8 * 144), 103 + t));
      const ConvCase ct{1 + (t % 2), 8, 16, 12, 12, 3, 1, 1, true};
      inputs.back().resize(static_cast<size_t>(ct.batch * 8 * 144));
      want.push_back(run_fast(conv, inputs.back(), ct, true));
    }
    std::vector<std::thread> threads;
    for (size_t t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        const ConvCase ct{1 + static_cast<int64_t>(t % 2), 8, 16, 12, 12, 3, 1, 1, true};
        for (int r = 0; r < 5; ++r) got[t] = run_fast(conv, inputs[t], ct, true);
      });
    for (auto& th : threads) th.join();
    for (size_t t = 0; t < 4; ++t) EXPECT_EQ(got[t], want[t]) << "thread " << t << " format " << weight_format_name(f);
  }
  (void)c;
}

TEST(Conv2d, BadCallsThrowClearErrors) {
  const Conv2d conv(random_vec(4 * 3 * 9, 111), {}, ConvShape{3, 4, 3, 3, 1, 0});
  std::vector<float> x(3 * 2 * 2), y(64);
  try {
    conv.forward(x.data(), 1, 2, 2, y.data());  // 2×2 input, 3×3 kernel, no padding
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Shape);
    EXPECT_NE(std::string(e.what()).find("smaller than the kernel"), std::string::npos) << e.what();
  }
  std::vector<float> x5(3 * 25);
  EXPECT_THROW(conv.forward(nullptr, 1, 5, 5, y.data()), Error);
  EXPECT_THROW(conv.forward(x5.data(), 1, 5, 5, nullptr), Error);
  EXPECT_THROW(conv.forward(x5.data(), -1, 5, 5, y.data()), Error);
  EXPECT_NO_THROW(conv.forward(nullptr, 0, 5, 5, nullptr));  // empty batch
  EXPECT_THROW(Conv2d().forward(x5.data(), 1, 5, 5, y.data()), Error);
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
  uint32_t seed = 31;
  for (int64_t k : {1, 2, 3})
    for (const auto& [b, c, h, w] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
             {2, 5, 7, 8}, {1, 64, 56, 56}, {3, 17, 5, 9}, {16, 32, 6, 6}}) {
      const auto x = random_vec(static_cast<size_t>(b * c * h * w), seed++);
      const int64_t oh = h / k, ow = w / k;
      std::vector<float> ref(static_cast<size_t>(b * c * oh * ow));
      avg_pool2d_reference(x.data(), b, c, h, w, k, ref.data());
      std::vector<float> xh(x.size()), yh(ref.size(), 123.0f), got(ref.size());
      nchw_to_nhwc(x.data(), b, c, h, w, xh.data());
      avg_pool2d(xh.data(), b, h, w, c, k, yh.data());
      nhwc_to_nchw(yh.data(), b, oh, ow, c, got.data());
      expect_close(got, ref, 1e-6,
                   ("k " + std::to_string(k) + " " + std::to_string(b) + "x" + std::to_string(h) + "x" +
                    std::to_string(w) + "x" + std::to_string(c))
                       .c_str());
    }
}

TEST(AvgPool, HandComputedNhwcWindow) {
  // 2 channels, 3×3 input, k = 2: one output pixel, the mean of the top-left 2×2 window of each
  // channel (the last row and column are dropped, as PyTorch's floor mode does)
  std::vector<float> x(18);
  for (int i = 0; i < 9; ++i) {
    x[static_cast<size_t>(2 * i)] = static_cast<float>(i);          // channel 0: 0..8
    x[static_cast<size_t>(2 * i + 1)] = static_cast<float>(10 * i);  // channel 1: 0..80
  }
  std::vector<float> y(2);
  avg_pool2d(x.data(), 1, 3, 3, 2, 2, y.data());
  EXPECT_FLOAT_EQ(y[0], (0 + 1 + 3 + 4) / 4.0f);
  EXPECT_FLOAT_EQ(y[1], (0 + 10 + 30 + 40) / 4.0f);
  EXPECT_THROW(avg_pool2d(x.data(), 1, 1, 3, 2, 2, y.data()), Error);
  EXPECT_THROW(avg_pool2d(nullptr, 1, 3, 3, 2, 2, y.data()), Error);
}

TEST(Layout, NchwNhwcRoundTrip) {
  const auto x = random_vec(2 * 3 * 4 * 5, 41);
  std::vector<float> y(x.size()), z(x.size());
  nchw_to_nhwc(x.data(), 2, 3, 4, 5, y.data());
  EXPECT_EQ(y[1], x[20]);  // channel 1 of pixel 0
  nhwc_to_nchw(y.data(), 2, 4, 5, 3, z.data());
  EXPECT_EQ(z, x);
}

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
  const std::vector<ConvCase> cases = {
      {2, 16, 16, 7, 7, 3, 1, 1, true},    // Winograd-eligible, odd size
      {3, 32, 48, 12, 10, 3, 1, 1, true},  // Winograd, several channel blocks, non-square
      {1, 64, 32, 1, 1, 3, 1, 1, true},    // 1x1 image
      {5, 16, 32, 9, 9, 3, 1, 1, true},    // batch 5 (Winograd F(4,3) territory)
      {2, 17, 33, 8, 8, 3, 1, 1, true},    // channels off the block size (padded)
      {2, 24, 40, 6, 6, 1, 1, 0, true},    // pointwise, padded channels
      {2, 16, 16, 9, 9, 3, 2, 1, true},    // strided 3x3: direct only
      {1, 16, 8, 11, 11, 5, 1, 2, true},   // 5x5: direct only; 8 output channels (padded)
  };
  uint32_t seed = 10;
  for (const ConvCase& c : cases)
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
      if (!eligible) {
        EXPECT_FALSE(is_winograd(impl)) << what;
      }
      EXPECT_EQ(impl.rfind("ref", 0), std::string::npos) << what;
      EXPECT_LE(rel_error(run_io(conv, x, c, false), reference(x, w, b, c, false)), 1e-5) << what;
      EXPECT_LE(rel_error(run_io(conv, x, c, true), reference(x, w, b, c, true)), 1e-5) << what << " relu";
      EXPECT_LE(rel_error(run_io(conv, x, c, true, &res), reference(x, w, b, c, true, &res)), 1e-5)
          << what << " residual relu";
    }
}

TEST(Conv2dBlocked, WinogradRunsForThreeByThreeLayersAndStaysExact) {
  if (!blocked_layout_supported()) GTEST_SKIP() << "no AVX-512: the blocked layout is not used on this CPU";
  // an RN50 layer-3 shape at a small batch size and a larger one (oneDNN's F(2,3) and F(4,3)
  // kernels), on one object, alternating. Whichever kernel runs is exact. The probe batch (16)
  // and batch 1 run Winograd wherever oneDNN offers it on this CPU (winograd_available); batch 3
  // may too, or run direct: oneDNN picks the Winograd weight layout from the CPU's cache sizes,
  // and where batch 3 wants a third layout the cap of two sends it to the direct kernel
  // (WinogradLayoutsAreCappedAcrossBatchSizes).
  const ConvShape s{64, 64, 3, 3, 1, 1};
  const auto w = random_vec(64 * 64 * 9, 21, 0.05f), b = random_vec(64, 22);
  const Conv2d wino(w, b, s, WeightFormat::F32, 14, 14, 16, blocked(ConvAlgorithm::Auto));
  const Conv2d direct(w, b, s, WeightFormat::F32, 14, 14, 16, blocked(ConvAlgorithm::Direct));
  EXPECT_FALSE(is_winograd(direct.implementation(16, 14, 14)));
  bool any_winograd = false;
  uint32_t seed = 23;
  for (int round = 0; round < 2; ++round)
    for (const int64_t batch : {1, 16, 3}) {
      const ConvCase c{batch, 64, 64, 14, 14, 3, 1, 1, true};
      const std::string impl = wino.implementation(batch, 14, 14);
      if (batch != 3) EXPECT_EQ(is_winograd(impl), winograd_available(64, 64, batch, 14, 14)) << describe(c) << ": " << impl;
      if (!winograd_available(64, 64, batch, 14, 14)) EXPECT_FALSE(is_winograd(impl)) << describe(c) << ": " << impl;
      EXPECT_EQ(impl.rfind("ref", 0), std::string::npos) << describe(c) << ": " << impl;
      any_winograd = any_winograd || is_winograd(impl);
      const auto x = random_vec(static_cast<size_t>(batch * 64 * 14 * 14), seed++);
      const auto want = reference(x, w, b, c, true);
      const double e_wino = rel_error(run_io(wino, x, c, true), want);
      const double e_direct = rel_error(run_io(direct, x, c, true), want);
      EXPECT_LE(e_wino, 1e-5) << describe(c) << " " << impl;
      EXPECT_LE(e_direct, 1e-5) << describe(c);
    }
  // the Winograd layouts are kept besides the direct one they were made from; without them the
  // two objects hold the same weights
  if (any_winograd)
    EXPECT_GT(wino.weight_bytes(), direct.weight_bytes());
  else
    EXPECT_EQ(wino.weight_bytes(), direct.weight_bytes());
}

TEST(Conv2dBlocked, WinogradLayoutsAreCappedAcrossBatchSizes) {
  if (!blocked_layout_supported()) GTEST_SKIP() << "no AVX-512: the blocked layout is not used on this CPU";
  // RN50's 256-channel 14x14 layer: oneDNN wants a different Winograd weight layout at batch 1,
  // at 2 and at 7 than at 16 (measured with oneDNN 2.6). Only two are kept; a batch size wanting
  // another runs direct, with the same results, and the weights never exceed the plain layout
  // plus two 4x-sized Winograd ones.
  const ConvShape s{256, 256, 3, 3, 1, 1};
  const auto w = random_vec(256 * 256 * 9, 81, 0.02f), b = random_vec(256, 82);
  const Conv2d wino(w, b, s, WeightFormat::F32, 14, 14, 16, blocked(ConvAlgorithm::Auto));
  const Conv2d direct(w, b, s, WeightFormat::F32, 14, 14, 16, blocked(ConvAlgorithm::Direct));
  const int64_t plain = direct.weight_bytes();
  int winograd_runs = 0, direct_runs = 0;
  uint32_t seed = 83;
  for (int round = 0; round < 2; ++round)
    for (const int64_t batch : {16, 1, 2, 7}) {
      const ConvCase c{batch, 256, 256, 14, 14, 3, 1, 1, true};
      const std::string impl = wino.implementation(batch, 14, 14);
      (is_winograd(impl) ? winograd_runs : direct_runs) += 1;
      const auto x = random_vec(static_cast<size_t>(batch * 256 * 14 * 14), seed++);
      expect_close(run_io(wino, x, c, true), run_io(direct, x, c, true), 1e-5, (describe(c) + " " + impl).c_str());
    }
  if (!winograd_available(256, 256, 16, 14, 14)) {
    EXPECT_EQ(winograd_runs, 0);  // oneDNN has no Winograd kernel on this CPU: all direct
    EXPECT_EQ(wino.weight_bytes(), plain);
    return;
  }
  EXPECT_GE(winograd_runs, 4);  // batch 16 and at least one other size, both rounds
  EXPECT_GE(direct_runs, 2);    // at least one size past the cap, both rounds
  EXPECT_LE(wino.weight_bytes(), 9 * plain);
}

TEST(Conv2dBlocked, PlanarImageIntoBlockedOutput) {
  if (!blocked_layout_supported()) GTEST_SKIP() << "no AVX-512: the blocked layout is not used on this CPU";
  // the ResNet stem's first convolution: 3-channel planar image, stride 2, blocked output
  const ConvCase c{2, 3, 32, 32, 32, 3, 2, 1, true};
  const ConvShape s{c.in, c.out, 3, 3, 2, 1};
  const auto w = random_vec(32 * 3 * 9, 31), b = random_vec(32, 32), x = random_vec(2 * 3 * 32 * 32, 33);
  const Conv2d conv(w, b, s, WeightFormat::F32, 32, 32, 2, blocked(ConvAlgorithm::Auto, ActLayout::Nchw));
  const std::string impl = conv.implementation(2, 32, 32);
  EXPECT_EQ(impl.rfind("ref", 0), std::string::npos) << impl;
  EXPECT_LE(rel_error(run_io(conv, x, c, true), reference(x, w, b, c, true)), 1e-5) << impl;
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
