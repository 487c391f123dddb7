// Dense products and reductions for the trainers (see internal.h).
#include <algorithm>

#include "adapt/internal.h"
#include "kernels/gemm.h"

namespace clipkit::adapt_detail {

namespace {
constexpr int64_t kSmallProduct = 4'000'000;  // multiply-adds below which double loops are used
constexpr int64_t kSumBlock = 256;            // rows per partial sum
}  // namespace

void gemm_nt(const float* a, int64_t n, int64_t d, const float* b, int64_t k, float* c) {
  if (n == 0 || k == 0) return;
  if (n * d * k > kSmallProduct) {
    sgemm(false, true, n, k, d, 1.0f, a, d, b, d, 0.0f, c, k);
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < d; ++t) s += static_cast<double>(a[i * d + t]) * b[j * d + t];
      c[i * k + j] = static_cast<float>(s);
    }
}

void gemm_tn(const float* a, int64_t n, int64_t k, const float* b, int64_t d, float* c) {
  if (k == 0 || d == 0) return;
  if (n * d * k > kSmallProduct) {
    sgemm(true, false, k, d, n, 1.0f, a, k, b, d, 0.0f, c, d);
    return;
  }
  std::vector<double> acc(static_cast<size_t>(k * d), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const double av = a[i * k + j];
      if (av == 0.0) continue;
      for (int64_t t = 0; t < d; ++t) acc[static_cast<size_t>(j * d + t)] += av * b[i * d + t];
    }
  for (size_t i = 0; i < acc.size(); ++i) c[i] = static_cast<float>(acc[i]);
}

void column_sums(const float* a, int64_t n, int64_t k, double* out) {
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> part(static_cast<size_t>(blocks * k), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 4)
  for (int64_t bl = 0; bl < blocks; ++bl) {
    double* p = part.data() + bl * k;
    for (int64_t i = bl * kSumBlock; i < std::min(n, (bl + 1) * kSumBlock); ++i)
      for (int64_t j = 0; j < k; ++j) p[j] += a[i * k + j];
  }
  std::fill(out, out + k, 0.0);
  for (int64_t bl = 0; bl < blocks; ++bl)
    for (int64_t j = 0; j < k; ++j) out[j] += part[static_cast<size_t>(bl * k + j)];
}

int argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; ++j)
    if (v[j] > v[best]) best = j;
  return static_cast<int>(best);
}

double top1_accuracy(const Embeddings& logits, const std::vector<int>& labels) {
  if (logits.rows == 0) return 0.0;
  int64_t hit = 0;
  for (int64_t i = 0; i < logits.rows; ++i) hit += argmax(logits.row(i), logits.dim) == labels[static_cast<size_t>(i)];
  return static_cast<double>(hit) / static_cast<double>(logits.rows);
}

}  // namespace clipkit::adapt_detail
