#include "search/flat_scan.h"

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/cpu.h"

namespace clipkit::search {

namespace {

using Hit = std::pair<float, int64_t>;  // score, row

// Orders by score, then by row (lower row wins a tie), as a "better than" relation.
bool better(const Hit& a, const Hit& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); }

float dot_scalar(const float* a, const float* b, int d) {
  float s = 0.0f;
  for (int j = 0; j < d; ++j) s += a[j] * b[j];
  return s;
}

__attribute__((target("avx512f,avx512dq,avx512vl"))) void dot4_avx512(const float* q, const float* x, int d,
                                                                     float* out) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  const float* x1 = x + d;
  const float* x2 = x1 + d;
  const float* x3 = x2 + d;
  for (int j = 0; j < d; j += 16) {
    const __mmask16 k = d - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (d - j)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(k, q + j);
    a0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x + j), a0);
    a1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x1 + j), a1);
    a2 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x2 + j), a2);
    a3 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x3 + j), a3);
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

__attribute__((target("avx512f,avx512dq,avx512vl"))) void dot4_rows_avx512(const float* q, const float* const* x, int d,
                                                                          float* out) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  for (int j = 0; j < d; j += 16) {
    const __mmask16 k = d - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (d - j)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(k, q + j);
    a0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x[0] + j), a0);
    a1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x[1] + j), a1);
    a2 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x[2] + j), a2);
    a3 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x[3] + j), a3);
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

// out[j·n] = q_j·x for the nq queries q (nq × d), x read once for all of them.
__attribute__((target("avx512f,avx512dq,avx512vl"))) void dots_one_row_avx512(const float* q, int nq, const float* x, int d,
                                                                             float* out, int64_t n) {
  for (int j0 = 0; j0 < nq; j0 += 8) {
    const int m = std::min(8, nq - j0);
    __m512 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_ps();
    for (int i = 0; i < d; i += 16) {
      const __mmask16 k = d - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (d - i)) - 1u);
      const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
      for (int j = 0; j < m; ++j) acc[j] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, q + static_cast<int64_t>(j0 + j) * d + i), acc[j]);
    }
    for (int j = 0; j < m; ++j) out[static_cast<int64_t>(j0 + j) * n] = _mm512_reduce_add_ps(acc[j]);
  }
}

// Keeps the best `k` hits in a heap whose top is the worst kept one.
struct TopK {
  int64_t k;
  std::vector<Hit> heap;
  void offer(float s, int64_t row) {
    const Hit h{s, row};
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push_back(h);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(h, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = h;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
};

}  // namespace

int64_t flat_top_k(const float* xb, int64_t n, int dim, const float* q, int64_t k, float* score, int64_t* pos) {
  if (n <= 0 || k <= 0 || dim <= 0) return 0;
  k = std::min(k, n);
  const bool vec = cpu_has_avx512();
  std::vector<TopK> parts;
  // Small collections stay on the calling thread.
  const int threads = n * dim >= (1 << 20) ? omp_get_max_threads() : 1;
  parts.assign(static_cast<size_t>(std::max(threads, 1)), TopK{k, {}});
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    TopK& mine = parts[static_cast<size_t>(omp_get_thread_num())];
    mine.heap.reserve(static_cast<size_t>(k));
    const int64_t blocks = (n + 3) / 4;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r = b * 4;
      if (vec && r + 4 <= n) {
        float s[4];
        dot4_avx512(q, xb + r * dim, dim, s);
        for (int i = 0; i < 4; ++i) mine.offer(s[i], r + i);
      } else {
        for (int64_t i = r; i < std::min(n, r + 4); ++i) mine.offer(dot_scalar(q, xb + i * dim, dim), i);
      }
    }
  }
  std::vector<Hit> all;
  for (auto& p : parts) all.insert(all.end(), p.heap.begin(), p.heap.end());
  std::sort(all.begin(), all.end(), better);
  const int64_t m = std::min<int64_t>(k, static_cast<int64_t>(all.size()));
  for (int64_t i = 0; i < m; ++i) {
    score[i] = all[static_cast<size_t>(i)].first;
    pos[i] = all[static_cast<size_t>(i)].second;
  }
  return m;
}

void score_rows(const float* q, const float* const* rows, int64_t n, int dim, float* out) {
  if (n <= 0 || dim <= 0) return;
  const bool vec = cpu_has_avx512();
  const int64_t blocks = (n + 3) / 4;
  const int threads = n * dim >= (1 << 20) ? omp_get_max_threads() : 1;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r = b * 4;
    if (vec && r + 4 <= n) {
      dot4_rows_avx512(q, rows + r, dim, out + r);
    } else {
      for (int64_t i = r; i < std::min(n, r + 4); ++i) out[i] = dot_scalar(q, rows[i], dim);
    }
  }
}

void score_rows_multi(const float* q, int nq, const float* const* rows, int64_t n, int dim, float* out) {
  if (n <= 0 || dim <= 0 || nq <= 0) return;
  const bool vec = cpu_has_avx512();
  const int threads = n * dim * nq >= (1 << 20) ? omp_get_max_threads() : 1;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (vec) {
      dots_one_row_avx512(q, nq, rows[i], dim, out + i, n);
    } else {
      for (int j = 0; j < nq; ++j) out[static_cast<int64_t>(j) * n + i] = dot_scalar(q + static_cast<int64_t>(j) * dim, rows[i], dim);
    }
  }
}

}  // namespace clipkit::search
