// The AVX2 and portable kernels that a CPU with AVX-512 never chooses: run here by capping the
// dispatch (set_max_cpu_isa) and compared with what the same entry points give on the AVX-512
// kernels, or with the scalar references. Bit for bit where the kernels promise it (int8
// quantisation, dequantisation), within float rounding elsewhere.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/activation.h"
#include "kernels/cpu.h"
#include "kernels/int8.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/softmax.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

// Caps the kernels' ISA for one scope.
class IsaCap {
 public:
  explicit IsaCap(CpuIsa isa) { set_max_cpu_isa(isa); }
  ~IsaCap() { set_max_cpu_isa(CpuIsa::Avx512); }
};

std::vector<float> randn(size_t n, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

const char* isa_name(CpuIsa isa) { return isa == CpuIsa::Avx2 ? "avx2" : "scalar"; }

}  // namespace

TEST(IsaCap, LowersWhatTheKernelsSeeAndIsUndone) {
  const bool avx512 = cpu_has_avx512(), avx2 = cpu_has_avx2_fma();
  {
    IsaCap cap(CpuIsa::Avx2);
    EXPECT_FALSE(cpu_has_avx512());
    EXPECT_EQ(cpu_has_avx2_fma(), avx2);
  }
  {
    IsaCap cap(CpuIsa::Scalar);
    EXPECT_FALSE(cpu_has_avx512());
    EXPECT_FALSE(cpu_has_avx2_fma());
  }
  EXPECT_EQ(cpu_has_avx512(), avx512);
  EXPECT_EQ(cpu_has_avx2_fma(), avx2);
}

TEST(IsaFallback, Int8QuantisationGivesTheSameBytesAndScales) {
  for (const int64_t cols : {1, 15, 16, 17, 33, 768}) {
    const int64_t rows = 5;
    auto x = randn(static_cast<size_t>(rows * cols), static_cast<uint32_t>(cols), 3.0f);
    for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(2 * cols + c)] = 0.0f;  // scale 0: every byte the offset
    auto run = [&](std::vector<int8_t>& qs, std::vector<float>& ss, std::vector<uint8_t>& qu, std::vector<float>& su,
                   std::vector<uint8_t>& qk) {
      qs.assign(x.size(), 0);
      qu.assign(x.size(), 0);
      qk.assign(x.size(), 0);
      ss.assign(static_cast<size_t>(rows), 0.0f);
      su = ss;
      quantize_rows_int8(x.data(), rows, cols, qs.data(), ss.data());
      quantize_rows_u8_offset(x.data(), rows, cols, qu.data(), su.data());
      for (int64_t r = 0; r < rows; ++r) {
        float amax = 0.0f;
        for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[static_cast<size_t>(r * cols + c)]));
        quantize_row_u8_offset_known_max(x.data() + r * cols, cols, amax, qk.data() + r * cols);
      }
    };
    std::vector<int8_t> qs512, qs;
    std::vector<uint8_t> qu512, qu, qk512, qk;
    std::vector<float> ss512, ss, su512, su;
    run(qs512, ss512, qu512, su512, qk512);
    EXPECT_EQ(qu512[static_cast<size_t>(2 * cols)], 128);
    for (CpuIsa isa : {CpuIsa::Avx2, CpuIsa::Scalar}) {
      IsaCap cap(isa);
      run(qs, ss, qu, su, qk);
      EXPECT_EQ(qs, qs512) << isa_name(isa) << " int8, cols " << cols;
      EXPECT_EQ(ss, ss512) << isa_name(isa) << " int8 scales, cols " << cols;
      EXPECT_EQ(qu, qu512) << isa_name(isa) << " u8, cols " << cols;
      EXPECT_EQ(su, su512) << isa_name(isa) << " u8 scales, cols " << cols;
      EXPECT_EQ(qk, qk512) << isa_name(isa) << " known max, cols " << cols;
    }
  }
}

TEST(IsaFallback, Int8LinearLayersGiveTheAvx512Output) {
  // the portable epilogue (dequantisation, then oneDNN's activation) against the AVX-512 one,
  // for every activation, plain, accumulating and from quantised rows; without an activation
  // every path gives the same bits (the weight scales, dequantisation and residual add rounded
  // alike)
  const int64_t in = 96, out = 80, rows = 9;
  const auto w = randn(static_cast<size_t>(in * out), 1, 0.05f), b = randn(static_cast<size_t>(out), 2);
  const auto x = randn(static_cast<size_t>(rows * in), 3);
  const Linear lin(w, b, in, out, WeightFormat::Int8);
  std::vector<uint8_t> q(x.size());
  std::vector<float> qscale(static_cast<size_t>(rows));
  quantize_rows_u8_offset(x.data(), rows, in, q.data(), qscale.data());
  auto run = [&](Activation act) {
    std::vector<float> y(static_cast<size_t>(rows * out)), acc(y.size(), 1.0f), yq(y.size());
    lin.forward(x.data(), rows, y.data(), act);
    lin.forward_accumulate(x.data(), rows, acc.data());
    lin.forward_quantized(q.data(), qscale.data(), rows, yq.data(), act);
    y.insert(y.end(), acc.begin(), acc.end());
    y.insert(y.end(), yq.begin(), yq.end());
    return y;
  };
  for (Activation act : {Activation::None, Activation::QuickGelu, Activation::Gelu}) {
    const auto want = run(act);
    for (CpuIsa isa : {CpuIsa::Avx2, CpuIsa::Scalar}) {
      IsaCap cap(isa);
      const auto got = run(act);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        if (act == Activation::None)
          ASSERT_EQ(got[i], want[i]) << isa_name(isa) << " value " << i;
        else
          ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i])))
              << isa_name(isa) << " " << activation_name(act) << " value " << i;
      }
    }
  }
}

TEST(IsaFallback, LayerNormMatchesTheReferenceAndTheFusedQuantisation) {
  for (const int64_t dim : {7, 64, 1025}) {
    const int64_t rows = 6;
    const auto x = randn(static_cast<size_t>(rows * dim), static_cast<uint32_t>(dim), 3.0f, 100.0f);
    const auto g = randn(static_cast<size_t>(dim), 11), b = randn(static_cast<size_t>(dim), 12);
    std::vector<float> ref(x.size());
    layernorm_reference(x.data(), rows, dim, g.data(), b.data(), 1e-5f, ref.data());
    std::vector<uint8_t> q512(x.size());
    std::vector<float> s512(static_cast<size_t>(rows));
    layernorm_quantize_u8(x.data(), rows, dim, g.data(), b.data(), 1e-5f, q512.data(), s512.data());
    IsaCap cap(CpuIsa::Scalar);
    std::vector<float> y(x.size());
    layernorm(x.data(), rows, dim, g.data(), b.data(), 1e-5f, y.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 2e-5 * (1 + std::fabs(ref[i]))) << dim << " " << i;
    // the fused passes quantise the scalar rows exactly as quantize_row_u8_offset does
    std::vector<uint8_t> q(x.size()), want(x.size()), one(static_cast<size_t>(dim));
    std::vector<float> s(static_cast<size_t>(rows)), ws(s.size()), row(static_cast<size_t>(dim));
    layernorm_quantize_u8(x.data(), rows, dim, g.data(), b.data(), 1e-5f, q.data(), s.data());
    quantize_rows_u8_offset(y.data(), rows, dim, want.data(), ws.data());
    EXPECT_EQ(q, want) << dim;
    EXPECT_EQ(s, ws) << dim;
    const float s0 = layernorm_quantize_row_u8(x.data(), dim, g.data(), b.data(), 1e-5f, row.data(), one.data());
    EXPECT_EQ(s0, ws[0]) << dim;
    EXPECT_TRUE(std::equal(one.begin(), one.end(), want.begin())) << dim;
    // and within one quantisation step of the AVX-512 bytes
    for (size_t i = 0; i < q.size(); ++i) ASSERT_LE(std::abs(int{q[i]} - int{q512[i]}), 1) << dim << " " << i;
  }
}

TEST(IsaFallback, SoftmaxMatchesTheReference) {
  for (const int64_t n : {1, 15, 77, 257}) {
    auto x = randn(static_cast<size_t>(n), static_cast<uint32_t>(n), 4.0f);
    std::vector<float> ref(x.size());
    softmax_reference(x.data(), n, ref.data());
    IsaCap cap(CpuIsa::Scalar);
    softmax_row(x.data(), n);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(x[static_cast<size_t>(i)], ref[static_cast<size_t>(i)], 1e-6 * (1 + ref[static_cast<size_t>(i)])) << n;
  }
}
