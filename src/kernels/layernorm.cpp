#include "kernels/layernorm.h"

#include <cmath>
#include <vector>

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "kernels/cpu.h"
#include "kernels/int8.h"

namespace clipkit {

namespace {

// The same two passes with the sums in double lanes (8 at a time), the affine map in float32.
__attribute__((target("avx512f,avx512dq,avx512vl"))) void layernorm_row_avx512(const float* x, int64_t dim,
                                                                               const float* gamma,
                                                                               const float* beta, float eps,
                                                                               float* y) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= dim; i += 16) {
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
  }
  double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  for (; i < dim; ++i) sum += x[i];
  const double mean_d = sum / static_cast<double>(dim);
  const __m512d m = _mm512_set1_pd(mean_d);
  s0 = _mm512_setzero_pd();
  s1 = _mm512_setzero_pd();
  for (i = 0; i + 16 <= dim; i += 16) {
    const __m512d a = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), m);
    const __m512d b = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), m);
    s0 = _mm512_fmadd_pd(a, a, s0);
    s1 = _mm512_fmadd_pd(b, b, s1);
  }
  double sq = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  for (; i < dim; ++i) {
    const double d = x[i] - mean_d;
    sq += d * d;
  }
  const double var = sq / static_cast<double>(dim);
  const float mean = static_cast<float>(mean_d);
  const float rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  const __m512 vm = _mm512_set1_ps(mean), vr = _mm512_set1_ps(rstd);
  for (i = 0; i < dim; i += 16) {
    const __mmask16 k = dim - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (dim - i)) - 1u);
    const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm), vr);
    _mm512_mask_storeu_ps(y + i, k,
                          _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, gamma + i)),
                                        _mm512_maskz_loadu_ps(k, beta + i)));
  }
}

void layernorm_row(const float* x, int64_t dim, const float* gamma, const float* beta, float eps, float* y) {
  // Mean and variance accumulated in double (two passes), then the affine map in float32.
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += x[i];
  const double mean_d = sum / static_cast<double>(dim);
  double sq = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    const double d = x[i] - mean_d;
    sq += d * d;
  }
  const double var = sq / static_cast<double>(dim);
  const float mean = static_cast<float>(mean_d);
  const float rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  for (int64_t i = 0; i < dim; ++i) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
}

}  // namespace

void layernorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y) {
  if (rows <= 0 || dim <= 0) return;
  const bool vec = cpu_has_avx512();
#pragma omp parallel for schedule(static) if (rows * dim >= (1 << 18))
  for (int64_t r = 0; r < rows; ++r) {
    if (vec)
      layernorm_row_avx512(x + r * dim, dim, gamma, beta, eps, y + r * dim);
    else
      layernorm_row(x + r * dim, dim, gamma, beta, eps, y + r * dim);
  }
}

void layernorm_quantize_u8(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                           uint8_t* q, float* scale) {
  if (rows <= 0 || dim <= 0) return;
  const bool vec = cpu_has_avx512();
#pragma omp parallel if (rows * dim >= (1 << 18))
  {
    // One normalised row at a time, in a buffer that stays in L1.
    std::vector<float> row(static_cast<size_t>(dim));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (vec)
        layernorm_row_avx512(x + r * dim, dim, gamma, beta, eps, row.data());
      else
        layernorm_row(x + r * dim, dim, gamma, beta, eps, row.data());
      scale[r] = quantize_row_u8_offset(row.data(), dim, q + r * dim);
    }
  }
}

float layernorm_quantize_row_u8(const float* x, int64_t dim, const float* gamma, const float* beta, float eps,
                                float* row, uint8_t* q) {
  if (cpu_has_avx512())
    layernorm_row_avx512(x, dim, gamma, beta, eps, row);
  else
    layernorm_row(x, dim, gamma, beta, eps, row);
  return quantize_row_u8_offset(row, dim, q);
}

void layernorm_reference(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                         float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double mean = 0.0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= static_cast<double>(dim);
    double var = 0.0;
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<double>(dim);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i)
      y[r * dim + i] = static_cast<float>((xr[i] - mean) * rstd * gamma[i] + beta[i]);
  }
}

}  // namespace clipkit
