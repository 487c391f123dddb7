#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <random>
#include <vector>

#include "clipkit/error.h"
#include "kernels/attention.h"
#include "kernels/attention_fused.h"
#include "kernels/int8.h"

using namespace clipkit;

namespace {

std::vector<float> random_qkv(int64_t rows, int64_t width, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  std::vector<float> v(static_cast<size_t>(rows * 3 * width));
  for (auto& x : v) x = nd(rng);
  return v;
}

// The epilogue terms of an int8 in_proj over `rows` rows and `cols` columns: row scales in
// [0.01, 0.2], zero shifts and biases in [-1, 1].
struct EpilogueTerms {
  std::vector<float> row_scale, shift, bias;
};

EpilogueTerms random_epilogue_terms(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> pos(0.01f, 0.2f), sym(-1.0f, 1.0f);
  EpilogueTerms t{std::vector<float>(static_cast<size_t>(rows)), std::vector<float>(static_cast<size_t>(cols)),
                  std::vector<float>(static_cast<size_t>(cols))};
  for (float& f : t.row_scale) f = pos(rng);
  for (float& f : t.shift) f = sym(rng);
  for (float& f : t.bias) f = sym(rng);
  return t;
}

}  // namespace

TEST(Attention, SingleKeyReturnsItsValue) {
  // One position: softmax over one score is 1, so the output is v.
  const float qkv[6] = {0.3f, -1.0f, 2.0f, 5.0f, 7.0f, -8.0f};  // width 2: q, k, v
  float out[2];
  multi_head_attention(qkv, 1, 1, 2, 1, false, out);
  EXPECT_FLOAT_EQ(out[0], 7.0f);
  EXPECT_FLOAT_EQ(out[1], -8.0f);
}

TEST(Attention, HandComputedTwoPositions) {
  // width 1, one head: scores q_i·k_j; position 0 attends to both keys without a mask.
  const float qkv[6] = {1.0f, 0.0f, 10.0f,    // q0, k0, v0
                        2.0f, std::log(3.0f), 20.0f};  // q1, k1, v1
  float out[2];
  multi_head_attention(qkv, 1, 2, 1, 1, false, out);
  // row 0: scores [0, ln3] → weights [1/4, 3/4] → 2.5 + 15
  EXPECT_NEAR(out[0], 17.5, 1e-5);
  // row 1: scores [0, 2 ln3] → weights [1/10, 9/10] → 1 + 18
  EXPECT_NEAR(out[1], 19.0, 1e-5);
  multi_head_attention(qkv, 1, 2, 1, 1, true, out);
  EXPECT_NEAR(out[0], 10.0, 1e-6);  // causal: position 0 sees only itself
  EXPECT_NEAR(out[1], 19.0, 1e-5);
}

TEST(Attention, MatchesReference) {
  struct Case {
    int64_t batch, seq, width, heads;
    bool causal;
  };
  for (const Case& c : {Case{1, 17, 128, 2, false}, Case{3, 50, 64, 1, true}, Case{2, 77, 96, 3, true},
                        Case{4, 5, 512, 8, false}, Case{2, 197, 128, 2, false},
                        // head sizes 80, 48, 24 and 16; long causal sequences; a single position
                        Case{2, 33, 160, 2, false}, Case{1, 130, 96, 2, true}, Case{2, 21, 72, 3, true},
                        Case{3, 9, 16, 1, false}, Case{2, 1, 128, 2, true}, Case{1, 129, 64, 1, false}}) {
    const auto qkv = random_qkv(c.batch * c.seq, c.width, static_cast<uint32_t>(c.seq));
    std::vector<float> out(static_cast<size_t>(c.batch * c.seq * c.width)), ref(out.size());
    multi_head_attention(qkv.data(), c.batch, c.seq, c.width, c.heads, c.causal, out.data());
    multi_head_attention_reference(qkv.data(), c.batch, c.seq, c.width, c.heads, c.causal, ref.data());
    double worst = 0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(double(out[i]) - ref[i]));
    EXPECT_LE(worst, 2e-5) << c.batch << "x" << c.seq << " width " << c.width << " heads " << c.heads;
  }
}

TEST(Attention, CausalIgnoresLaterPositions) {
  // Changing positions after i must not change output row i.
  const int64_t seq = 12, width = 64;
  auto a = random_qkv(seq, width, 9);
  auto b = a;
  for (int64_t j = 6; j < seq; ++j)
    for (int64_t c = 0; c < 3 * width; ++c) b[static_cast<size_t>(j * 3 * width + c)] += 1.0f;
  std::vector<float> oa(static_cast<size_t>(seq * width)), ob(oa.size());
  multi_head_attention(a.data(), 1, seq, width, 1, true, oa.data());
  multi_head_attention(b.data(), 1, seq, width, 1, true, ob.data());
  for (int64_t i = 0; i < 6 * width; ++i) EXPECT_EQ(oa[static_cast<size_t>(i)], ob[static_cast<size_t>(i)]);
}

TEST(Attention, RejectsIndivisibleHeads) {
  std::vector<float> qkv(3 * 10), out(10);
  EXPECT_THROW(multi_head_attention(qkv.data(), 1, 1, 10, 3, false, out.data()), Error);
}

TEST(Attention, SelectedQueryRowsEqualTheFullComputation) {
  // One query row per batch item (the text tower's last block) equals that row of the full result.
  std::mt19937 rng(31);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t batch = 3, seq = 19, width = 48, heads = 4;
  std::vector<float> qkv(static_cast<size_t>(batch * seq * 3 * width));
  for (auto& v : qkv) v = nd(rng);
  const std::vector<int64_t> pos = {0, 18, 7};
  for (const bool causal : {true, false}) {
    std::vector<float> full(static_cast<size_t>(batch * seq * width)), rows(static_cast<size_t>(batch * width));
    clipkit::multi_head_attention_reference(qkv.data(), batch, seq, width, heads, causal, full.data());
    clipkit::multi_head_attention_rows(qkv.data(), batch, seq, width, heads, causal, pos.data(), rows.data());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < width; ++c)
        ASSERT_NEAR(rows[static_cast<size_t>(b * width + c)],
                    full[static_cast<size_t>((b * seq + pos[static_cast<size_t>(b)]) * width + c)], 2e-5)
            << "causal " << causal << " b " << b << " c " << c;
  }
  const std::vector<int64_t> bad = {0, 19, 1};
  std::vector<float> out(static_cast<size_t>(batch * width));
  EXPECT_THROW(clipkit::multi_head_attention_rows(qkv.data(), batch, seq, width, heads, true, bad.data(), out.data()),
               clipkit::Error);
}

TEST(Attention, QueryRowsHeldApartEqualTheRowsOfThePackedLayout) {
  // A last block that projects q for the kept rows only: the queries arrive as [batch, ldq] and
  // the keys and values as [batch * seq, ldkv]. The result must be, bit for bit, that of the
  // packed-qkv entry point on the same values; with k and v left as an int8 layer's raw product
  // (or its sums and weight scales), bit for bit that of the epilogue's values.
  const int64_t batch = 3, seq = 21, width = 128, heads = 2, ldq = width + 16, ldkv = 2 * width + 32;
  const std::vector<int64_t> pos = {20, 0, 9};
  std::mt19937 rng(41);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.01f, 0.05f);
  const int64_t rows = batch * seq;
  std::vector<float> raw(static_cast<size_t>(rows * ldkv)), zs(2 * width), bias(2 * width), scale(rows);
  for (auto& v : raw) v = 40.0f * nd(rng);
  for (auto& v : zs) v = 5.0f * nd(rng);
  for (auto& v : bias) v = nd(rng);
  for (auto& v : scale) v = ud(rng);
  std::vector<float> queries(static_cast<size_t>(batch * ldq));
  for (auto& v : queries) v = nd(rng);
  for (const bool with_bias : {true, false}) {
    // the epilogue's k and v, and the packed layout [q | k | v] with each item's query at its row
    std::vector<float> kv(static_cast<size_t>(rows * 2 * width)), qkv(static_cast<size_t>(rows * 3 * width), 7.0f);
    for (int64_t r = 0; r < rows; ++r) {
      int8_dequantize_row(raw.data() + r * ldkv, zs.data(), with_bias ? bias.data() : nullptr, scale[r], 2 * width,
                          kv.data() + r * 2 * width);
      std::copy_n(kv.data() + r * 2 * width, 2 * width, qkv.data() + r * 3 * width + width);
    }
    for (int64_t b = 0; b < batch; ++b)
      std::copy_n(queries.data() + b * ldq, width, qkv.data() + (b * seq + pos[b]) * 3 * width);
    for (const bool causal : {true, false}) {
      std::vector<float> want(static_cast<size_t>(batch * width)), plain(want.size()), fused(want.size());
      multi_head_attention_rows(qkv.data(), batch, seq, width, heads, causal, pos.data(), want.data());
      multi_head_attention_query_rows(queries.data(), ldq, kv.data(), 2 * width, batch, seq, width, heads, causal,
                                      pos.data(), plain.data());
      const QkvDequant dq{scale.data(), zs.data(), with_bias ? bias.data() : nullptr};
      multi_head_attention_query_rows(queries.data(), ldq, raw.data(), ldkv, batch, seq, width, heads, causal,
                                      pos.data(), fused.data(), &dq);
      EXPECT_EQ(plain, want) << "causal " << causal << " bias " << with_bias;
      EXPECT_EQ(fused, want) << "causal " << causal << " bias " << with_bias;
      // the sums raw / 2 with weight scales 2: every product exact, so the same values
      std::vector<float> sums(raw.size()), twos(static_cast<size_t>(2 * width), 2.0f);
      for (size_t i = 0; i < raw.size(); ++i) sums[i] = raw[i] / 2.0f;
      const QkvDequant dq_sums{scale.data(), zs.data(), with_bias ? bias.data() : nullptr, twos.data()};
      multi_head_attention_query_rows(queries.data(), ldq, sums.data(), ldkv, batch, seq, width, heads, causal,
                                      pos.data(), fused.data(), &dq_sums);
      EXPECT_EQ(fused, want) << "sums, causal " << causal << " bias " << with_bias;
    }
  }
  std::vector<float> out(static_cast<size_t>(batch * width));
  const std::vector<int64_t> bad = {0, seq, 1};
  EXPECT_THROW(multi_head_attention_query_rows(queries.data(), ldq, raw.data(), ldkv, batch, seq, width, heads, true,
                                               bad.data(), out.data()),
               Error);
  EXPECT_THROW(multi_head_attention_query_rows(queries.data(), width - 1, raw.data(), ldkv, batch, seq, width, heads,
                                               true, pos.data(), out.data()),
               Error);
}

// The fused short-sequence kernel (head size 64, up to 80 positions) against the double-precision
// reference at every row-tile and score-vector boundary, causal and not, several heads.
TEST(Attention, FusedShortSequencesMatchReference) {
  if (!attention_fused_supported(50, 64)) GTEST_SKIP() << "no AVX-512 on this CPU";
  EXPECT_FALSE(attention_fused_supported(81, 64));
  EXPECT_FALSE(attention_fused_supported(50, 48));
  for (const int64_t seq : {1, 2, 5, 6, 7, 15, 16, 17, 32, 33, 48, 49, 50, 64, 65, 77, 80})
    for (const bool causal : {false, true}) {
      const int64_t batch = 2, heads = 3, width = 64 * heads;
      const auto qkv = random_qkv(batch * seq, width, static_cast<uint32_t>(100 + seq));
      std::vector<float> out(static_cast<size_t>(batch * seq * width)), ref(out.size());
      multi_head_attention(qkv.data(), batch, seq, width, heads, causal, out.data());
      multi_head_attention_reference(qkv.data(), batch, seq, width, heads, causal, ref.data());
      double worst = 0;
      for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(double(out[i]) - ref[i]));
      EXPECT_LE(worst, 2e-5) << "seq " << seq << " causal " << causal;
      // The kernel itself, on one pair, writes exactly what multi_head_attention wrote there.
      std::vector<float> pair(static_cast<size_t>(seq * width), -1.0f);
      const float* q = qkv.data() + seq * 3 * width + 64;  // item 1, head 1
      ASSERT_TRUE(attention_pair_fused(q, q + width, q + 2 * width, 3 * width, seq, causal, 0.125f, pair.data(), width));
      for (int64_t i = 0; i < seq; ++i)
        for (int64_t c = 0; c < 64; ++c)
          ASSERT_EQ(pair[static_cast<size_t>(i * width + c)], out[static_cast<size_t>((seq + i) * width + 64 + c)]);
    }
}

TEST(Attention, NonFiniteScoresTakeTheGeneralPath) {
  // A NaN key makes the fused kernel decline; multi_head_attention then gives the general path's
  // result: NaN in every row that sees that key, finite rows before it (causal).
  if (!attention_fused_supported(20, 64)) GTEST_SKIP() << "no AVX-512 on this CPU";
  const int64_t seq = 20, width = 64;
  auto qkv = random_qkv(seq, width, 5);
  qkv[static_cast<size_t>(7 * 3 * width + width + 3)] = NAN;  // k[7][3]
  std::vector<float> out(static_cast<size_t>(seq * width));
  EXPECT_FALSE(attention_pair_fused(qkv.data(), qkv.data() + width, qkv.data() + 2 * width, 3 * width, seq, true,
                                    0.125f, out.data(), width));
  multi_head_attention(qkv.data(), 1, seq, width, 1, true, out.data());
  for (int64_t i = 0; i < seq; ++i) EXPECT_EQ(std::isnan(out[static_cast<size_t>(i * width)]), i >= 7) << "row " << i;
}

TEST(Attention, DequantisedInputEqualsTheEpilogueThenAttention) {
  // q, k and v handed over as an int8 in_proj's raw product plus its epilogue terms give, bit for
  // bit, the attention of the values the epilogue would have written: on the fused kernel's
  // lengths (50, causal 77) and the general path's (97), with and without a bias, and when a NaN
  // sends the fused kernel's pair back to the general path; and handed over as the layer's sums
  // with its weight scales (col_scale), each x · col_scale rounded before the epilogue
  const int64_t width = 128, heads = 2, batch = 2;
  std::vector<float> col_scale(static_cast<size_t>(3 * width));
  std::mt19937 crng(19);
  for (auto& v : col_scale) v = std::uniform_real_distribution<float>(0.5f, 1.5f)(crng);
  for (const auto& [seq, causal] : std::vector<std::pair<int64_t, bool>>{{50, false}, {77, true}, {97, false}})
    for (const bool with_bias : {true, false})
      for (const int nan_kind : {0, 1, 2})
        for (const bool with_cs : {false, true}) {
        const bool with_nan = nan_kind != 0;
        const int64_t rows = batch * seq;
        auto raw = random_qkv(rows, width, 11 + static_cast<uint32_t>(seq));
        if (nan_kind == 1) raw[static_cast<size_t>((seq + 5) * 3 * width + width + 70)] = NAN;  // item 1, k row 5, head 1
        // item 0, q row 20, head 0: the fused kernel has written its first tiles when it gives up
        if (nan_kind == 2) raw[static_cast<size_t>(20 * 3 * width + 3)] = NAN;
        const auto [row_scale, shift, bias] = random_epilogue_terms(rows, 3 * width, 7);
        // the epilogue's values: fma(x - shift, scale, bias), or (x - shift) · scale without a bias
        std::vector<float> plain(raw.size());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < 3 * width; ++c) {
            const size_t i = static_cast<size_t>(r * 3 * width + c);
            volatile float x = with_cs ? raw[i] * col_scale[static_cast<size_t>(c)] : raw[i];
            const float diff = x - shift[static_cast<size_t>(c)], s = row_scale[static_cast<size_t>(r)];
            plain[i] = with_bias ? std::fma(diff, s, bias[static_cast<size_t>(c)]) : diff * s;
          }
        std::vector<float> want(static_cast<size_t>(rows * width)), got(want.size());
        multi_head_attention(plain.data(), batch, seq, width, heads, causal, want.data());
        const QkvDequant dq{row_scale.data(), shift.data(), with_bias ? bias.data() : nullptr,
                            with_cs ? col_scale.data() : nullptr};
        multi_head_attention(raw.data(), batch, seq, width, heads, causal, got.data(), &dq);
        size_t differ = 0, nans = 0;
        for (size_t i = 0; i < want.size(); ++i) {
          nans += std::isnan(got[i]);
          differ += std::isnan(want[i]) ? !std::isnan(got[i]) : got[i] != want[i];
        }
        EXPECT_EQ(differ, 0u) << "seq " << seq << (with_bias ? " bias" : "") << " nan " << nan_kind
                              << (with_cs ? " col_scale" : "");
        EXPECT_EQ(nans > 0, with_nan) << "seq " << seq;
      }
  const QkvDequant missing{nullptr, nullptr, nullptr};
  std::vector<float> qkv = random_qkv(4, 64, 3), out(4 * 64);
  EXPECT_THROW(multi_head_attention(qkv.data(), 1, 4, 64, 1, false, out.data(), &missing), Error);
  std::vector<uint8_t> q(4 * 64);
  std::vector<float> scale(4);
  EXPECT_THROW(multi_head_attention_quantized(qkv.data(), 1, 4, 64, 1, false, &missing, q.data(), scale.data()), Error);
}

TEST(Attention, QuantisedOutputEqualsTheAttentionThenItsQuantisation) {
  // The int8 blocks take the attention's output as the u8 rows of the next layer. Quantised item
  // by item (one thread, or enough items per thread) or after a shared pass over the pairs (few
  // items), the bytes and scales must be those of quantize_rows_u8_offset on the float output:
  // fused and general lengths, raw input with its dequantisation, and a NaN that sends a fused
  // pair back to the general path part way.
  const int64_t width = 128, heads = 2;
  const int before = omp_get_max_threads();
  for (const auto& [seq, causal] : std::vector<std::pair<int64_t, bool>>{{50, false}, {77, true}, {97, false}})
    for (const int64_t batch : {int64_t{1}, int64_t{5}})
      for (const bool with_nan : {false, true}) {
        const int64_t rows = batch * seq;
        auto raw = random_qkv(rows, width, 17 + static_cast<uint32_t>(seq));
        if (with_nan) raw[static_cast<size_t>(20 * 3 * width + 3)] = NAN;
        const auto [row_scale, shift, bias] = random_epilogue_terms(rows, 3 * width, 9);
        const QkvDequant dq{row_scale.data(), shift.data(), bias.data()};
        std::vector<float> out(static_cast<size_t>(rows * width)), want_scale(static_cast<size_t>(rows));
        std::vector<uint8_t> want_q(out.size());
        multi_head_attention(raw.data(), batch, seq, width, heads, causal, out.data(), &dq);
        quantize_rows_u8_offset(out.data(), rows, width, want_q.data(), want_scale.data());
        for (const int threads : {1, 2}) {
          omp_set_num_threads(threads);
          std::vector<uint8_t> q(want_q.size(), 0);
          std::vector<float> scale(want_scale.size(), -1.0f);
          multi_head_attention_quantized(raw.data(), batch, seq, width, heads, causal, &dq, q.data(), scale.data());
          omp_set_num_threads(before);
          const std::string what = "seq " + std::to_string(seq) + " batch " + std::to_string(batch) + " threads " +
                                   std::to_string(threads) + (with_nan ? " nan" : "");
          EXPECT_EQ(q, want_q) << what;
          EXPECT_EQ(0, std::memcmp(scale.data(), want_scale.data(), scale.size() * sizeof(float))) << what;
        }
      }
}
