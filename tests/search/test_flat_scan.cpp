// The exact scan behind Flat indexes: same top-k, order and scores as a double-precision brute force.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "search/flat_scan.h"

namespace {

void check(int64_t n, int dim, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> xb(static_cast<size_t>(n * dim)), q(static_cast<size_t>(dim));
  for (auto& v : xb) v = nd(rng);
  for (auto& v : q) v = nd(rng);
  std::vector<double> exact(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < dim; ++j) s += static_cast<double>(q[static_cast<size_t>(j)]) * xb[static_cast<size_t>(i * dim + j)];
    exact[static_cast<size_t>(i)] = s;
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return exact[static_cast<size_t>(a)] > exact[static_cast<size_t>(b)]; });
  std::vector<float> score(static_cast<size_t>(k));
  std::vector<int64_t> pos(static_cast<size_t>(k));
  const int64_t got = clipkit::search::flat_top_k(xb.data(), n, dim, q.data(), k, score.data(), pos.data());
  ASSERT_EQ(got, std::min(k, n));
  for (int64_t i = 0; i < got; ++i) {
    const auto e = static_cast<size_t>(order[static_cast<size_t>(i)]);
    // Random Gaussian scores are far apart compared with float rounding: the order is exact.
    EXPECT_EQ(pos[static_cast<size_t>(i)], order[static_cast<size_t>(i)]) << "n " << n << " dim " << dim << " rank " << i;
    EXPECT_NEAR(score[static_cast<size_t>(i)], exact[e], 1e-4 * (1 + std::abs(exact[e])));
  }
}

}  // namespace

TEST(FlatScan, MatchesBruteForce) {
  check(1, 16, 5, 1);
  check(3, 7, 2, 2);       // fewer rows than a 4-row block
  check(5, 33, 10, 3);     // k larger than n, a partial block and a masked tail
  check(1000, 512, 20, 4);
  check(70001, 64, 50, 5);  // large enough for the multi-threaded path
}

TEST(FlatScan, TiesKeepTheLowerRowFirstAndEmptyInputsGiveNothing) {
  const std::vector<float> xb = {1, 0, 0, 1, 1, 0, 1, 0, 0, 1};  // rows 0, 2, 3 tie at 1 for q = (1, 0)
  const std::vector<float> q = {1, 0};
  float s[3];
  int64_t p[3];
  ASSERT_EQ(clipkit::search::flat_top_k(xb.data(), 5, 2, q.data(), 3, s, p), 3);
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[1], 2);
  EXPECT_EQ(p[2], 3);
  EXPECT_EQ(clipkit::search::flat_top_k(xb.data(), 0, 2, q.data(), 3, s, p), 0);
  EXPECT_EQ(clipkit::search::flat_top_k(xb.data(), 5, 2, q.data(), 0, s, p), 0);
}

// Rows scored in place, in any order and any place in memory (the passing items of a filter): each
// score within the single-precision bound of the double-precision product, for unit vectors.
TEST(FlatScan, ScoreRowsMatchesTheExactProducts) {
  for (const int dim : {3, 16, 37, 512}) {
    for (const int64_t n : {int64_t{0}, int64_t{5}, int64_t{2500}}) {
      std::mt19937 rng(static_cast<uint32_t>(dim * 7 + n));
      std::normal_distribution<float> nd;
      auto unit = [&](std::vector<float>& v) {
        double s = 0;
        for (auto& x : v) {
          x = nd(rng);
          s += static_cast<double>(x) * x;
        }
        for (auto& x : v) x = static_cast<float>(x / std::sqrt(s));
      };
      std::vector<std::vector<float>> store(static_cast<size_t>(n), std::vector<float>(static_cast<size_t>(dim)));
      std::vector<float> q(static_cast<size_t>(dim));
      unit(q);
      for (auto& v : store) unit(v);
      std::vector<const float*> rows;
      for (int64_t i = n - 1; i >= 0; i -= 2) rows.push_back(store[static_cast<size_t>(i)].data());  // every other, backwards
      std::vector<float> out(rows.size(), -9.0f);
      clipkit::search::score_rows(q.data(), rows.data(), static_cast<int64_t>(rows.size()), dim, out.data());
      for (size_t r = 0; r < rows.size(); ++r) {
        double exact = 0;
        for (int j = 0; j < dim; ++j) exact += static_cast<double>(q[static_cast<size_t>(j)]) * rows[r][j];
        EXPECT_NEAR(out[r], exact, dim * std::ldexp(1.0, -23) + 1e-7) << "dim " << dim << " n " << n << " row " << r;
      }
    }
  }
}
