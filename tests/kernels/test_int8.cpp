// Int8 weights (per output channel) x int8 activations (per row): exact integer arithmetic
// against an independent double loop, and close to the f32 layer on realistic data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "clipkit/error.h"
#include "kernels/int8.h"
#include "kernels/linear.h"
#include "support/test_support.h"

namespace {

using clipkit::Activation;
using clipkit::Linear;
using clipkit::WeightFormat;

std::vector<float> randn(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// The documented rule, written out independently: scale = max|x| / 127, q = round half to even.
void expected_row(const std::vector<float>& x, size_t off, size_t n, int offset, std::vector<int>& q, float& scale) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[off + i]));
  scale = amax / 127.0f;
  q.assign(n, offset);
  if (!(scale > 0.0f)) return;
  for (size_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[off + i] * (1.0f / scale));
    q[i] = static_cast<int>(std::min(127.0f, std::max(-127.0f, v))) + offset;
  }
}

TEST(Int8Quantize, RowsFollowTheDocumentedRuleExactly) {
  // Column counts around the 16-lane vector width, ties at exactly .5 steps, zero rows.
  for (const int64_t cols : {1, 5, 15, 16, 17, 31, 33, 64, 768, 3075}) {
    const int64_t rows = 7;
    auto x = randn(static_cast<size_t>(rows * cols), static_cast<uint32_t>(cols), 3.0f);
    for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(2 * cols + c)] = 0.0f;  // an all-zero row
    if (cols >= 4) {  // row 3: max 127 so that x = k + 0.5 are exact ties
      x[static_cast<size_t>(3 * cols)] = 127.0f;
      x[static_cast<size_t>(3 * cols + 1)] = 2.5f;
      x[static_cast<size_t>(3 * cols + 2)] = -3.5f;
      x[static_cast<size_t>(3 * cols + 3)] = 0.5f;
    }
    std::vector<uint8_t> qu(static_cast<size_t>(rows * cols));
    std::vector<int8_t> qs(static_cast<size_t>(rows * cols));
    std::vector<float> su(static_cast<size_t>(rows)), ss(static_cast<size_t>(rows));
    clipkit::quantize_rows_u8_offset(x.data(), rows, cols, qu.data(), su.data());
    clipkit::quantize_rows_int8(x.data(), rows, cols, qs.data(), ss.data());
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int> e8, eu;
      float s8 = 0, s_u = 0;
      expected_row(x, static_cast<size_t>(r * cols), static_cast<size_t>(cols), 0, e8, s8);
      expected_row(x, static_cast<size_t>(r * cols), static_cast<size_t>(cols), 128, eu, s_u);
      ASSERT_EQ(ss[static_cast<size_t>(r)], s8) << "cols " << cols << " row " << r;
      ASSERT_EQ(su[static_cast<size_t>(r)], s_u) << "cols " << cols << " row " << r;
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(static_cast<int>(qs[static_cast<size_t>(r * cols + c)]), e8[static_cast<size_t>(c)])
            << "cols " << cols << " row " << r << " col " << c;
        ASSERT_EQ(static_cast<int>(qu[static_cast<size_t>(r * cols + c)]), eu[static_cast<size_t>(c)])
            << "cols " << cols << " row " << r << " col " << c;
      }
    }
    if (cols >= 4) {
      EXPECT_EQ(qs[static_cast<size_t>(3 * cols + 1)], 2);   // 2.5 -> 2 (half to even)
      EXPECT_EQ(qs[static_cast<size_t>(3 * cols + 2)], -4);  // -3.5 -> -4
      EXPECT_EQ(qs[static_cast<size_t>(3 * cols + 3)], 0);   // 0.5 -> 0
    }
  }
}

// The fused path (c_fc's epilogue hands over max|y|) must give the bytes and scale of the
// two-pass one, including rows with NaN values (ignored by the max) and all-zero rows.
TEST(Int8Quantize, KnownMaxGivesTheBytesOfTheTwoPassRow) {
  for (const int64_t cols : {1, 15, 16, 17, 33, 768, 3075}) {
    for (int variant = 0; variant < 3; ++variant) {
      auto x = randn(static_cast<size_t>(cols), static_cast<uint32_t>(cols + 100 * variant), 2.0f);
      if (variant == 1) x[static_cast<size_t>(cols / 2)] = std::numeric_limits<float>::quiet_NaN();
      if (variant == 2) std::fill(x.begin(), x.end(), 0.0f);
      float amax = 0.0f;
      for (float v : x)
        if (!std::isnan(v)) amax = std::max(amax, std::fabs(v));
      std::vector<uint8_t> want(static_cast<size_t>(cols)), got(want.size(), 7);
      const float s_want = clipkit::quantize_row_u8_offset(x.data(), cols, want.data());
      const float s_got = clipkit::quantize_row_u8_offset_known_max(x.data(), cols, amax, got.data());
      ASSERT_EQ(s_got, s_want) << "cols " << cols << " variant " << variant;
      ASSERT_EQ(got, want) << "cols " << cols << " variant " << variant;
    }
  }
}

TEST(Int8Quantize, WeightsRoundTripWithinHalfAStep) {
  const int64_t out = 37, in = 53;
  auto w = randn(static_cast<size_t>(out * in), 1, 0.02f);
  for (int64_t i = 0; i < in; ++i) w[static_cast<size_t>(5 * in + i)] = 0.0f;  // an all-zero channel
  const auto qw = clipkit::quantize_weights_int8(w.data(), out, in);
  ASSERT_EQ(qw.scale.size(), static_cast<size_t>(out));
  EXPECT_EQ(qw.scale[5], 0.0f);
  const auto back = clipkit::dequantize_weights_int8(qw.q.data(), qw.scale.data(), out, in);
  for (int64_t o = 0; o < out; ++o) {
    float amax = 0;
    int qmax = 0;
    for (int64_t i = 0; i < in; ++i) {
      const size_t k = static_cast<size_t>(o * in + i);
      amax = std::max(amax, std::fabs(w[k]));
      qmax = std::max(qmax, std::abs(static_cast<int>(qw.q[k])));
      ASSERT_LE(std::fabs(back[k] - w[k]), 0.5f * qw.scale[static_cast<size_t>(o)] * 1.0001f + 1e-12f);
    }
    EXPECT_FLOAT_EQ(qw.scale[static_cast<size_t>(o)], amax / 127.0f);
    if (o != 5) {
      EXPECT_EQ(qmax, 127);  // the largest weight maps to ±127
    }
  }
  // Re-quantising the dequantised weights reproduces the same integers (convert → load is lossless).
  const auto again = clipkit::quantize_weights_int8(back.data(), out, in);
  EXPECT_EQ(again.q, qw.q);
}

TEST(Int8Quantize, RejectsNonFiniteWeights) {
  std::vector<float> w{1.0f, NAN, 0.5f, 0.25f};
  EXPECT_THROW(clipkit::quantize_weights_int8(w.data(), 2, 2), clipkit::Error);
}

TEST(Int8Linear, IntegerArithmeticIsExact) {
  const int64_t rows = 13, in = 200, out = 72;
  const auto w = randn(static_cast<size_t>(in * out), 2, 0.02f);
  const auto b = randn(static_cast<size_t>(out), 3, 0.1f);
  const auto x = randn(static_cast<size_t>(rows * in), 4);
  const Linear lin(w, b, in, out, WeightFormat::Int8);
  std::vector<float> y(static_cast<size_t>(rows * out));
  lin.forward(x.data(), rows, y.data());

  // Independent computation: quantise both sides by the documented rule, sum in integers.
  const auto qw = clipkit::quantize_weights_int8(w.data(), out, in);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t i = 0; i < in; ++i) amax = std::max(amax, std::fabs(x[static_cast<size_t>(r * in + i)]));
    const double sx = amax / 127.0;
    std::vector<int> qx(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i)
      qx[static_cast<size_t>(i)] = static_cast<int>(std::nearbyint(x[static_cast<size_t>(r * in + i)] / static_cast<float>(sx)));
    for (int64_t o = 0; o < out; ++o) {
      int64_t acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += qx[static_cast<size_t>(i)] * qw.q[static_cast<size_t>(o * in + i)];
      const double expect = static_cast<double>(acc) * sx * qw.scale[static_cast<size_t>(o)] + b[static_cast<size_t>(o)];
      ASSERT_NEAR(y[static_cast<size_t>(r * out + o)], expect, 1e-5 * (1.0 + std::fabs(expect))) << r << "," << o;
    }
  }
}

TEST(Int8Linear, CloseToF32OnRealisticData) {
  // Transformer-like: layer-normed activations with a few outlier channels, N(0, 0.02) weights.
  const int64_t rows = 50, in = 256, out = 384;
  const auto w = randn(static_cast<size_t>(in * out), 5, 0.02f);
  const auto b = randn(static_cast<size_t>(out), 6, 0.02f);
  auto x = randn(static_cast<size_t>(rows * in), 7);
  for (int64_t r = 0; r < rows; ++r) x[static_cast<size_t>(r * in + 17)] *= 6.0f;
  const Linear f32(w, b, in, out), i8(w, b, in, out, WeightFormat::Int8);
  for (Activation act : {Activation::None, Activation::QuickGelu, Activation::Gelu}) {
    std::vector<float> y32(static_cast<size_t>(rows * out)), y8(y32.size());
    f32.forward(x.data(), rows, y32.data(), act);
    i8.forward(x.data(), rows, y8.data(), act);
    EXPECT_GE(clipkit::test::cosine(y8.data(), y32.data(), y8.size()), 0.999) << static_cast<int>(act);
  }
  // The residual form agrees with forward + add.
  const auto resid = randn(static_cast<size_t>(rows * out), 8);
  std::vector<float> acc = resid, plain(resid.size());
  i8.forward_accumulate(x.data(), rows, acc.data());
  i8.forward(x.data(), rows, plain.data());
  for (size_t i = 0; i < acc.size(); ++i) ASSERT_NEAR(acc[i], resid[i] + plain[i], 1e-5f);
  EXPECT_LT(i8.weight_bytes() * 3, f32.weight_bytes());
}

TEST(Int8Linear, FusedActivationsEqualTheActivationOfTheLinearOutput) {
  // Odd widths exercise the masked vector tails; large pre-activations the exp's clamping.
  for (const int64_t out : {5, 16, 33, 130}) {
    const int64_t rows = 9, in = 48;
    const auto w = randn(static_cast<size_t>(in * out), 21, 0.3f);
    const auto b = randn(static_cast<size_t>(out), 22, 2.0f);
    const auto x = randn(static_cast<size_t>(rows * in), 23, 3.0f);
    const Linear lin(w, b, in, out, WeightFormat::Int8);
    std::vector<float> plain(static_cast<size_t>(rows * out));
    lin.forward(x.data(), rows, plain.data());
    for (Activation act : {Activation::QuickGelu, Activation::Gelu}) {
      std::vector<float> fused(plain.size());
      lin.forward(x.data(), rows, fused.data(), act);
      for (size_t i = 0; i < plain.size(); ++i) {
        const double v = plain[i];
        const double expect = act == Activation::QuickGelu ? v / (1.0 + std::exp(-1.702 * v))
                                                           : 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
        ASSERT_NEAR(fused[i], expect, 2e-6 * (1.0 + std::fabs(expect))) << "out " << out << " i " << i;
      }
    }
  }
}

TEST(Int8Linear, FromQuantizedMatchesQuantizingConstructor) {
  const int64_t rows = 4, in = 64, out = 32;
  const auto w = randn(static_cast<size_t>(in * out), 9, 0.05f);
  const auto x = randn(static_cast<size_t>(rows * in), 10);
  const auto qw = clipkit::quantize_weights_int8(w.data(), out, in);
  const Linear a(w, {}, in, out, WeightFormat::Int8);
  const Linear b = Linear::from_int8(qw.q, qw.scale, {}, in, out);
  std::vector<float> ya(static_cast<size_t>(rows * out)), yb(ya.size());
  a.forward(x.data(), rows, ya.data());
  b.forward(x.data(), rows, yb.data());
  EXPECT_EQ(ya, yb);
  EXPECT_THROW(Linear::from_int8(qw.q, std::vector<float>(3), {}, in, out), clipkit::Error);
}

TEST(Int8Linear, ZeroRowsGiveBias) {
  const int64_t in = 16, out = 8;
  const auto w = randn(static_cast<size_t>(in * out), 11, 0.05f);
  const auto b = randn(static_cast<size_t>(out), 12);
  const Linear lin(w, b, in, out, WeightFormat::Int8);
  std::vector<float> x(static_cast<size_t>(2 * in), 0.0f), y(static_cast<size_t>(2 * out));
  lin.forward(x.data(), 2, y.data());
  for (int64_t i = 0; i < 2 * out; ++i) EXPECT_FLOAT_EQ(y[static_cast<size_t>(i)], b[static_cast<size_t>(i % out)]);
}

}  // namespace

// Quantised inputs and outputs: the int8 transformer blocks hand layers their input already
// quantised (by the layer norm before them, or by c_fc for c_proj). Each variant must give
// exactly the bytes, scales and floats of quantising and calling the float entry points.
TEST(Int8Linear, QuantizedEntryPointsEqualTheFloatOnesBitForBit) {
  for (const int64_t out : {8, 33, 130}) {
    const int64_t rows = 21, in = 70;
    const auto w = randn(static_cast<size_t>(in * out), 31, 0.2f);
    const auto b = randn(static_cast<size_t>(out), 32, 1.0f);
    auto x = randn(static_cast<size_t>(rows * in), 33, 2.0f);
    for (int64_t i = 0; i < in; ++i) x[static_cast<size_t>(5 * in + i)] = 0.0f;  // a zero row: scale 0
    const Linear lin(w, b, in, out, WeightFormat::Int8);
    std::vector<uint8_t> q(x.size());
    std::vector<float> s(static_cast<size_t>(rows));
    clipkit::quantize_rows_u8_offset(x.data(), rows, in, q.data(), s.data());
    for (Activation act : {Activation::None, Activation::QuickGelu, Activation::Gelu}) {
      std::vector<float> want(static_cast<size_t>(rows * out)), got(want.size());
      lin.forward(x.data(), rows, want.data(), act);
      lin.forward_quantized(q.data(), s.data(), rows, got.data(), act);
      ASSERT_EQ(got, want) << "forward_quantized, out " << out;
      // ... and the output quantised in the same pass.
      std::vector<uint8_t> want_q(want.size()), got_q(want.size());
      std::vector<float> want_s(static_cast<size_t>(rows)), got_s(want_s.size());
      clipkit::quantize_rows_u8_offset(want.data(), rows, out, want_q.data(), want_s.data());
      lin.forward_quantized_to_quantized(q.data(), s.data(), rows, got_q.data(), got_s.data(), act);
      ASSERT_EQ(got_q, want_q) << "forward_quantized_to_quantized, out " << out;
      ASSERT_EQ(got_s, want_s) << "forward_quantized_to_quantized, out " << out;
    }
    const auto y0 = randn(static_cast<size_t>(rows * out), 34);
    std::vector<float> want = y0, got = y0;
    lin.forward_accumulate(x.data(), rows, want.data());
    lin.forward_quantized_accumulate(q.data(), s.data(), rows, got.data());
    ASSERT_EQ(got, want) << "forward_quantized_accumulate, out " << out;
    // the raw product and the epilogue terms: fma(t - zero_shift, row scale, bias)
    std::vector<float> t(static_cast<size_t>(rows * out)), plain(t.size());
    lin.forward_quantized_raw(q.data(), rows, t.data());
    lin.forward_quantized(q.data(), s.data(), rows, plain.data());
    ASSERT_NE(lin.bias(), nullptr);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < out; ++n) {
        const size_t i = static_cast<size_t>(r * out + n);
        ASSERT_EQ(std::fma(t[i] - lin.zero_shift()[n], s[static_cast<size_t>(r)], lin.bias()[n]), plain[i])
            << "raw product, row " << r << " column " << n;
      }
    std::vector<float> row(static_cast<size_t>(out));
    clipkit::int8_dequantize_row(t.data() + 3 * out, lin.zero_shift(), lin.bias(), s[3], out, row.data());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), plain.begin() + 3 * out)) << "int8_dequantize_row";
    // the sums: whole numbers (|sum| < 2^24 here, exact as floats) that give the raw product
    // once multiplied by the weight scales, and the same epilogue through col_scale
    std::vector<float> sums(t.size());
    lin.forward_quantized_sum(q.data(), rows, sums.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < out; ++n) {
        const size_t i = static_cast<size_t>(r * out + n);
        ASSERT_EQ(sums[i], std::nearbyint(sums[i])) << "sum, row " << r << " column " << n;
        ASSERT_EQ(sums[i] * lin.weight_scale()[n], t[i]) << "sum times scale, row " << r << " column " << n;
      }
    clipkit::int8_dequantize_row(sums.data() + 3 * out, lin.zero_shift(), lin.bias(), s[3], out, row.data(), false,
                                 lin.weight_scale());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), plain.begin() + 3 * out)) << "int8_dequantize_row of the sums";
    // Without a bias, an accumulating call adds (t - zero_shift) · row scale, rounded before the
    // add, as int8_dequantize_row does: not one fused multiply-add.
    const Linear nb(w, {}, in, out, WeightFormat::Int8);
    std::vector<float> nb_t(t.size()), nb_want = y0, nb_got = y0;
    nb.forward_quantized_raw(q.data(), rows, nb_t.data());
    for (int64_t r = 0; r < rows; ++r)
      clipkit::int8_dequantize_row(nb_t.data() + r * out, nb.zero_shift(), nullptr, s[static_cast<size_t>(r)], out,
                                   nb_want.data() + r * out, true);
    nb.forward_quantized_accumulate(q.data(), s.data(), rows, nb_got.data());
    EXPECT_EQ(nb_got, nb_want) << "no bias, accumulating, out " << out;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < out; ++n) {
        const size_t i = static_cast<size_t>(r * out + n);
        const float product = (nb_t[i] - nb.zero_shift()[n]) * s[static_cast<size_t>(r)];
        ASSERT_EQ(nb_want[i], y0[i] + product) << "row " << r << " column " << n;
      }
  }
  const Linear f32(randn(64, 35, 0.2f), {}, 8, 8, WeightFormat::F32);
  EXPECT_EQ(f32.bias(), nullptr);
  EXPECT_THROW(f32.zero_shift(), clipkit::Error);
  EXPECT_THROW(f32.weight_scale(), clipkit::Error);
  std::vector<uint8_t> q8(8);
  std::vector<float> t8(8);
  EXPECT_THROW(f32.forward_quantized_raw(q8.data(), 1, t8.data()), clipkit::Error);
}

TEST(Int8Linear, LargeQuantizedProductsSplitIntoHalvesGiveTheSameBytes) {
  // 1101 rows × 1024 outputs is a 4.5 MB float product: made in two halves of rows (an odd count).
  const int64_t rows = 1101, in = 40, out = 1024;
  const auto w = randn(static_cast<size_t>(in * out), 51, 0.2f);
  const auto b = randn(static_cast<size_t>(out), 52);
  const auto x = randn(static_cast<size_t>(rows * in), 53, 2.0f);
  const Linear lin(w, b, in, out, WeightFormat::Int8);
  std::vector<uint8_t> q(x.size());
  std::vector<float> s(static_cast<size_t>(rows));
  clipkit::quantize_rows_u8_offset(x.data(), rows, in, q.data(), s.data());
  std::vector<float> y(static_cast<size_t>(rows * out));
  lin.forward(x.data(), rows, y.data(), Activation::QuickGelu);
  std::vector<uint8_t> want_q(y.size()), got_q(y.size());
  std::vector<float> want_s(static_cast<size_t>(rows)), got_s(want_s.size());
  clipkit::quantize_rows_u8_offset(y.data(), rows, out, want_q.data(), want_s.data());
  lin.forward_quantized_to_quantized(q.data(), s.data(), rows, got_q.data(), got_s.data(), Activation::QuickGelu);
  EXPECT_EQ(got_q, want_q);
  EXPECT_EQ(got_s, want_s);
  // A lent work buffer: exactly the stated size (half the rows, rounded up; ASan checks the
  // bound), filled with NaN first, so any value read before it was written would show.
  const int64_t need = lin.to_quantized_scratch_floats(rows);
  ASSERT_EQ(need, (rows + 1) / 2 * out);
  std::vector<float> scratch(static_cast<size_t>(need), std::numeric_limits<float>::quiet_NaN());
  std::fill(got_q.begin(), got_q.end(), 0);
  std::fill(got_s.begin(), got_s.end(), 0.0f);
  lin.forward_quantized_to_quantized(q.data(), s.data(), rows, got_q.data(), got_s.data(), Activation::QuickGelu,
                                     scratch.data());
  EXPECT_EQ(got_q, want_q);
  EXPECT_EQ(got_s, want_s);
  EXPECT_FALSE(std::isnan(scratch.back())) << "the lent buffer was not the one used";
  // Small products are made in one piece.
  EXPECT_EQ(lin.to_quantized_scratch_floats(3), 3 * out);
  EXPECT_EQ(lin.to_quantized_scratch_floats(0), 0);
}

TEST(Int8Linear, QuantizedEntryPointsRejectFloatLayersAndNullBuffers) {
  const int64_t in = 16, out = 8;
  const auto w = randn(static_cast<size_t>(in * out), 41);
  const Linear f32(w, {}, in, out, WeightFormat::F32);
  const Linear i8(w, {}, in, out, WeightFormat::Int8);
  std::vector<uint8_t> q(static_cast<size_t>(in), 128), q_out(static_cast<size_t>(out));
  std::vector<float> s(1, 1.0f), y(static_cast<size_t>(out)), s_out(1);
  EXPECT_THROW(f32.forward_quantized(q.data(), s.data(), 1, y.data()), clipkit::Error);
  EXPECT_THROW(f32.forward_quantized_accumulate(q.data(), s.data(), 1, y.data()), clipkit::Error);
  EXPECT_THROW(i8.forward_quantized(q.data(), nullptr, 1, y.data()), clipkit::Error);
  EXPECT_THROW(i8.forward_quantized_to_quantized(q.data(), s.data(), 1, q_out.data(), nullptr), clipkit::Error);
  EXPECT_NO_THROW(i8.forward_quantized(nullptr, nullptr, 0, nullptr));  // no rows: nothing to do
}

TEST(Int8Linear, DequantisationIsTheSameOnEveryPath) {
  // fma(t - zero_shift, scale, bias) on the AVX-512, AVX2 and portable paths, with and without a
  // bias, over lengths that leave partial vectors
  const auto t = randn(77, 41, 30.0f), zs = randn(77, 42, 5.0f), b = randn(77, 43, 1.0f), cs = randn(77, 45, 0.01f);
  for (const int64_t n : {1, 7, 16, 33, 77})
    for (const float* bias : {b.data(), static_cast<const float*>(nullptr)}) {
      std::vector<float> want(static_cast<size_t>(n)), got(want.size());
      for (int64_t j = 0; j < n; ++j) {
        const float d = t[static_cast<size_t>(j)] - zs[static_cast<size_t>(j)];
        want[static_cast<size_t>(j)] = bias ? std::fma(d, 0.37f, bias[j]) : d * 0.37f;
      }
      clipkit::int8_dequantize_row(t.data(), zs.data(), bias, 0.37f, n, got.data());
      EXPECT_EQ(got, want) << "dispatched, n " << n;
      clipkit::int8_dequantize_row_scalar(t.data(), zs.data(), bias, 0.37f, n, got.data());
      EXPECT_EQ(got, want) << "portable, n " << n;
      if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        clipkit::int8_dequantize_row_avx2(t.data(), zs.data(), bias, 0.37f, n, got.data());
        EXPECT_EQ(got, want) << "avx2, n " << n;
      }
      // accumulating: residual + that value, one more rounding; the rows past n stay untouched
      const auto res = randn(n + 5, 44, 3.0f);
      std::vector<float> sum(res.begin(), res.begin() + n);
      for (int64_t j = 0; j < n; ++j) sum[static_cast<size_t>(j)] += want[static_cast<size_t>(j)];
      using Path = void (*)(const float*, const float*, const float*, float, int64_t, float*, bool, const float*);
      std::vector<std::pair<const char*, Path>> paths = {{"dispatched", clipkit::int8_dequantize_row},
                                                         {"portable", clipkit::int8_dequantize_row_scalar}};
      if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        paths.emplace_back("avx2", clipkit::int8_dequantize_row_avx2);
      for (const auto& [name, path] : paths) {
        std::vector<float> acc = res;
        path(t.data(), zs.data(), bias, 0.37f, n, acc.data(), true, nullptr);
        EXPECT_TRUE(std::equal(sum.begin(), sum.end(), acc.begin())) << name << " accumulating, n " << n << (bias ? " bias" : "");
        EXPECT_TRUE(std::equal(acc.begin() + n, acc.end(), res.begin() + n)) << name << " past the row, n " << n;
        // col_scale: t[j] · cs[j] rounded on its own first (never fused with the subtraction)
        std::vector<float> scaled_want(static_cast<size_t>(n)), scaled_got(scaled_want.size());
        for (int64_t j = 0; j < n; ++j) {
          const size_t u = static_cast<size_t>(j);
          volatile float ts = t[u] * cs[u];
          const float d = ts - zs[u];
          scaled_want[u] = bias ? std::fma(d, 0.37f, bias[j]) : d * 0.37f;
        }
        path(t.data(), zs.data(), bias, 0.37f, n, scaled_got.data(), false, cs.data());
        EXPECT_EQ(scaled_got, scaled_want) << name << " col_scale, n " << n << (bias ? " bias" : "");
      }
    }
}
