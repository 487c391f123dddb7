// Linear (packed oneDNN matmul with fused bias/activation/sum) against the scalar definition.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "clipkit/error.h"
#include "core/half.h"
#include "kernels/gemm.h"
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

// Max |a - b| relative to max |b| (scale-free tolerance).
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  return clipkit::test::max_abs_diff(a.data(), b.data(), a.size()) /
         std::max(1e-12, clipkit::test::max_abs(b.data(), b.size()));
}

struct LinearCase {
  int64_t rows, in, out;
  bool bias;
  Activation act;
};

class LinearF32 : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearF32, MatchesScalarReference) {
  const auto c = GetParam();
  const auto w = randn(static_cast<size_t>(c.in * c.out), 11, 0.05f);
  const auto b = c.bias ? randn(static_cast<size_t>(c.out), 12, 0.5f) : std::vector<float>{};
  const auto x = randn(static_cast<size_t>(c.rows * c.in), 13);
  Linear lin(w, b, c.in, c.out);
  std::vector<float> y(static_cast<size_t>(c.rows * c.out), -1.0f), ref(y.size());
  lin.forward(x.data(), c.rows, y.data(), c.act);
  clipkit::linear_reference(x.data(), c.rows, w.data(), c.bias ? b.data() : nullptr, c.in, c.out, ref.data(), c.act);
  EXPECT_LT(rel_err(y, ref), 2e-5);
  EXPECT_GT(clipkit::test::cosine(y.data(), ref.data(), y.size()), 0.999999);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearF32,
                         ::testing::Values(LinearCase{1, 64, 96, true, Activation::None},
                                           LinearCase{7, 77, 130, true, Activation::QuickGelu},
                                           LinearCase{50, 128, 64, false, Activation::Gelu},
                                           LinearCase{33, 96, 256, true, Activation::Gelu},
                                           LinearCase{64, 256, 128, false, Activation::None},
                                           LinearCase{3, 3, 5, true, Activation::QuickGelu}));

TEST(Linear, ForwardAccumulateAddsToOutput) {
  const int64_t rows = 19, in = 80, out = 48;
  const auto w = randn(static_cast<size_t>(in * out), 21, 0.05f);
  const auto b = randn(static_cast<size_t>(out), 22);
  const auto x = randn(static_cast<size_t>(rows * in), 23);
  const auto resid = randn(static_cast<size_t>(rows * out), 24);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::F16}) {
    Linear lin(w, b, in, out, f);
    std::vector<float> y = resid, plain(resid.size());
    lin.forward_accumulate(x.data(), rows, y.data());
    lin.forward(x.data(), rows, plain.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], resid[i] + plain[i], 1e-4f) << i;
  }
}

TEST(Linear, RowCountsShareOnePackedLayer) {
  // Every row count (each gets its own cached primitive) gives the rows' own answer.
  const int64_t in = 96, out = 72;
  const auto w = randn(static_cast<size_t>(in * out), 31, 0.05f);
  const auto b = randn(static_cast<size_t>(out), 32);
  const auto x = randn(static_cast<size_t>(40 * in), 33);
  Linear lin(w, b, in, out);
  std::vector<float> full(static_cast<size_t>(40 * out));
  lin.forward(x.data(), 40, full.data(), Activation::QuickGelu);
  for (int64_t rows : {1, 2, 5, 16, 39}) {
    std::vector<float> part(static_cast<size_t>(rows * out));
    lin.forward(x.data(), rows, part.data(), Activation::QuickGelu);
    for (size_t i = 0; i < part.size(); ++i) ASSERT_NEAR(part[i], full[i], 1e-5f) << rows << " rows, " << i;
  }
}

TEST(Linear, F16StoresHalfAndMatchesRoundedWeights) {
  const int64_t rows = 21, in = 160, out = 96;
  const auto w = randn(static_cast<size_t>(in * out), 41, 0.05f);
  const auto b = randn(static_cast<size_t>(out), 42);
  const auto x = randn(static_cast<size_t>(rows * in), 43);
  std::vector<float> w_rounded(w.size());
  for (size_t i = 0; i < w.size(); ++i) w_rounded[i] = clipkit::half_to_float(clipkit::float_to_half(w[i]));
  Linear f16(w, b, in, out, WeightFormat::F16), f32(w, b, in, out, WeightFormat::F32);
  EXPECT_EQ(f16.format(), WeightFormat::F16);
  EXPECT_LE(f16.weight_bytes() * 2, f32.weight_bytes() + 64);
  std::vector<float> y(static_cast<size_t>(rows * out)), ref(y.size());
  f16.forward(x.data(), rows, y.data(), Activation::Gelu);
  clipkit::linear_reference(x.data(), rows, w_rounded.data(), b.data(), in, out, ref.data(), Activation::Gelu);
  EXPECT_LT(rel_err(y, ref), 2e-5);
}

TEST(Linear, F16LayersWiderThanOneChunkMatchRoundedWeights) {
  // 544 x 1000 f32 = 2.2 MB: stored as several column chunks of at most ~1 MB (the last one
  // narrower, 1000 not being a multiple of the chunk width); every output column, the bias
  // slices, the fused activations and the residual form must line up across the chunk seams,
  // at batch-1-like and batch-16-like row counts
  const int64_t in = 544, out = 1000;
  const auto w = randn(static_cast<size_t>(in * out), 61, 0.05f);
  const auto b = randn(static_cast<size_t>(out), 62);
  std::vector<float> w_rounded(w.size());
  for (size_t i = 0; i < w.size(); ++i) w_rounded[i] = clipkit::half_to_float(clipkit::float_to_half(w[i]));
  const Linear f16(w, b, in, out, WeightFormat::F16);
  EXPECT_EQ(f16.weight_bytes(), in * out * 2);
  for (const int64_t rows : {int64_t{1}, int64_t{50}, int64_t{203}}) {
    const auto x = randn(static_cast<size_t>(rows * in), 63 + static_cast<uint32_t>(rows));
    for (const Activation act : {Activation::None, Activation::QuickGelu}) {
      std::vector<float> y(static_cast<size_t>(rows * out), 7.0f), ref(y.size());
      f16.forward(x.data(), rows, y.data(), act);
      clipkit::linear_reference(x.data(), rows, w_rounded.data(), b.data(), in, out, ref.data(), act);
      EXPECT_LT(rel_err(y, ref), 2e-5) << "rows " << rows;
    }
    const auto base = randn(static_cast<size_t>(rows * out), 64);
    std::vector<float> acc = base, ref(base.size());
    f16.forward_accumulate(x.data(), rows, acc.data());
    clipkit::linear_reference(x.data(), rows, w_rounded.data(), b.data(), in, out, ref.data(), Activation::None);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += base[i];
    EXPECT_LT(rel_err(acc, ref), 2e-5) << "accumulate, rows " << rows;
  }
}

TEST(Linear, ConstForwardIsThreadSafe) {
  const int64_t in = 128, out = 96;
  const auto w = randn(static_cast<size_t>(in * out), 51, 0.05f);
  const auto b = randn(static_cast<size_t>(out), 52);
  const auto x = randn(static_cast<size_t>(32 * in), 53);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::F16, WeightFormat::Int8}) {
    const Linear lin(w, b, in, out, f);
    // Expected outputs for each row count, computed single-threaded first.
    std::vector<std::vector<float>> expected;
    const std::vector<int64_t> row_counts{1, 3, 8, 17, 32};
    for (int64_t rows : row_counts) {
      expected.emplace_back(static_cast<size_t>(rows * out));
      lin.forward(x.data(), rows, expected.back().data(), Activation::QuickGelu);
    }
    const Linear fresh(w, b, in, out, f);  // empty primitive cache: threads race to fill it
    std::vector<int> failures(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int it = 0; it < 20; ++it) {
          const size_t idx = static_cast<size_t>((t + it) % static_cast<int>(row_counts.size()));
          const int64_t rows = row_counts[idx];
          std::vector<float> y(static_cast<size_t>(rows * out));
          fresh.forward(x.data(), rows, y.data(), Activation::QuickGelu);
          for (size_t i = 0; i < y.size(); ++i)
            if (std::fabs(y[i] - expected[idx][i]) > 1e-5f) {
              ++failures[static_cast<size_t>(t)];
              break;
            }
        }
      });
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[static_cast<size_t>(t)], 0) << clipkit::weight_format_name(f);
  }
}

TEST(Linear, CopiesShareWeights) {
  const auto w = randn(24 * 16, 61, 0.1f);
  Linear a(w, {}, 24, 16);
  Linear b = a;
  const auto x = randn(24 * 2, 62);
  std::vector<float> ya(32), yb(32);
  a.forward(x.data(), 2, ya.data());
  b.forward(x.data(), 2, yb.data());
  EXPECT_EQ(ya, yb);
  EXPECT_EQ(b.parameter_count(), 24 * 16);
}

TEST(Linear, RejectsBadShapes) {
  EXPECT_THROW(Linear(std::vector<float>(10), {}, 3, 4), clipkit::Error);
  EXPECT_THROW(Linear(std::vector<float>(12), std::vector<float>(3), 3, 4), clipkit::Error);
  EXPECT_THROW(Linear(std::vector<float>{}, {}, 0, 4), clipkit::Error);
  EXPECT_THROW(clipkit::parse_weight_format("bf17"), clipkit::Error);
  EXPECT_EQ(clipkit::parse_weight_format("fp16"), WeightFormat::F16);
  const Linear empty;
  float x = 0, y = 0;
  EXPECT_THROW(empty.forward(&x, 1, &y), clipkit::Error);
  Linear ok(std::vector<float>(12, 1.0f), {}, 3, 4);
  EXPECT_NO_THROW(ok.forward(nullptr, 0, nullptr));
  EXPECT_THROW(ok.forward(&x, -1, &y), clipkit::Error);
}

TEST(Linear, WeightFormatNamesRoundTrip) {
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::F16, WeightFormat::Int8})
    EXPECT_EQ(clipkit::parse_weight_format(clipkit::weight_format_name(f)), f) << clipkit::weight_format_name(f);
  EXPECT_STREQ(clipkit::weight_format_name(WeightFormat::Int8), "int8");
}

// The message of the clipkit::Error `f` throws ("no error" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const clipkit::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Linear, Int8LayersFromStoredBytesCheckTheirArrays) {
  const int64_t in = 3, out = 4;
  const std::vector<int8_t> q(static_cast<size_t>(in * out), 2);
  const std::vector<float> scale(static_cast<size_t>(out), 0.25f);
  EXPECT_NE(error_of([&] { Linear::from_int8(std::vector<int8_t>(11), scale, {}, in, out); }).find("has 11 values, expected 12"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Linear::from_int8(q, std::vector<float>(3, 0.25f), {}, in, out); }).find("has 3 scales, expected 4"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Linear::from_int8(nullptr, scale.data(), {}, in, out); }).find("null array"), std::string::npos);
  EXPECT_NE(error_of([&] { Linear::from_int8(q, scale, std::vector<float>(2), in, out); }).find("bias has 2 values, expected 4"),
            std::string::npos);
  // Stored weights 2 with scale 0.25 are 0.5 each: a row of ones gives 1.5 (plus the bias).
  const Linear l = Linear::from_int8(q, scale, {1.0f, 2.0f, 3.0f, 4.0f}, in, out);
  const std::vector<float> x(static_cast<size_t>(in), 1.0f);
  std::vector<float> y(static_cast<size_t>(out));
  l.forward(x.data(), 1, y.data());
  for (int64_t o = 0; o < out; ++o) EXPECT_NEAR(y[static_cast<size_t>(o)], 1.5f + static_cast<float>(o + 1), 1e-2f) << o;
  EXPECT_NE(error_of([&] { l.forward(nullptr, 1, y.data()); }).find("null buffer"), std::string::npos);
}

}  // namespace
