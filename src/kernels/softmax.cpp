#include "kernels/softmax.h"

#include <cmath>

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/cpu.h"
#include "kernels/vec_math.h"

namespace clipkit {

namespace {

// exp(x[i] - max) in place and the reciprocal of their sum (summed in double lanes). Returns false,
// leaving x untouched, when x holds a NaN or +inf or no finite maximum: the scalar path then gives
// exactly what std::exp gives there. -inf entries (masked scores) give 0 here too.
__attribute__((target("avx512f,avx512dq,avx512vl"))) bool exp_row_avx512(float* x, int64_t n, float* inv_sum) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  __mmask16 nan = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    nan |= _mm512_mask_cmp_ps_mask(k, v, v, _CMP_UNORD_Q);
    vmax = _mm512_mask_max_ps(vmax, k, v, vmax);
  }
  const float m = _mm512_reduce_max_ps(vmax);
  if (nan != 0 || !std::isfinite(m)) return false;
  const __m512 mx = _mm512_set1_ps(m);
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 e = _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mx)));
    _mm512_mask_storeu_ps(x + i, k, e);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
  }
  *inv_sum = static_cast<float>(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)));
  return true;
}

__attribute__((target("avx512f,avx512dq,avx512vl"))) void scale_row_avx512(float* x, int64_t n, float factor) {
  const __m512 f = _mm512_set1_ps(factor);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), f));
  }
}

}  // namespace

float softmax_row_unnormalized(float* x, int64_t n) {
  if (n <= 0) return 0.0f;
  float inv = 0.0f;
  if (cpu_has_avx512() && exp_row_avx512(x, n, &inv)) return inv;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  return static_cast<float>(1.0 / sum);
}

void softmax_row(float* x, int64_t n) {
  if (n <= 0) return;
  const float inv = softmax_row_unnormalized(x, n);
  if (cpu_has_avx512()) return scale_row_avx512(x, n, inv);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void softmax_rows(float* x, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) softmax_row(x + r * ld, cols);
}

void softmax_reference(const float* x, int64_t n, float* y) {
  if (n <= 0) return;
  double mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(std::exp(static_cast<double>(x[i]) - mx) / sum);
}

}  // namespace clipkit
