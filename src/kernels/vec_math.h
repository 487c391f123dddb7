// Inline AVX-512 math shared by the hand-vectorised kernels. Include only from translation units
// that call these from functions compiled with the matching target attribute and dispatched on
// cpu_has_avx512().
#pragma once

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace clipkit {

// e^x = 2^n · e^r for |x| <= 88: n = round(x / ln2), r = x - n·ln2 in two steps (Cody–Waite, so
// that r is exact to float precision, |r| <= ln2/2), and e^r by a degree-7 Taylor polynomial p
// (relative error below 2e-8 on that interval). The callers apply 2^n.
struct ExpParts {
  __m512 n, p;
};

__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline ExpParts exp_parts(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return {n, p};
}

// exp(x) for x <= 0 (the softmax arguments), 2^n built in the exponent bits. Arguments below -87
// give 0 (their true value is below float's normal range).
__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline __m512 exp_nonpositive(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  const ExpParts e = exp_parts(_mm512_max_ps(x, lo));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(e.n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_mul_ps(e.p, _mm512_castsi512_ps(bits)));
}

// The same exp(x) for x <= 0 with 2^n applied by vscalefps (fewer instructions). Arguments below
// ln(FLT_MIN) ≈ -87.34 give e^-87.34 ≈ 1.2e-38 rather than 0.
__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline __m512 exp_nonpositive_scalef(__m512 x) {
  const ExpParts e = exp_parts(_mm512_max_ps(x, _mm512_set1_ps(-87.3365f)));
  return _mm512_scalef_ps(e.p, e.n);
}

// x·σ(1.702x) (QuickGELU) for the int8 epilogue, whose output is quantised to 8 bits next: as
// x / (1 + 2^y), y = x · (-1.702 / ln 2) clamped to [-88, 88] / ln 2 (past either end the result
// is x, or 0 up to 1e-37·|x|, to float precision). 2^y = 2^n · 2^f with n = round(y) and
// f = y - n (exact), 2^f by a degree-5 polynomial fitted for relative error (below 1e-7 on
// [-1/2, 1/2]), 2^n by vscalefps; the reciprocal is the 14-bit estimate with one Newton step.
// Relative error: the polynomial's, plus |y|·2^-24 from rounding y (about 3e-7 for |x| <= 2).
// A NaN x gives NaN.
__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline __m512 quick_gelu_avx512(__m512 x) {
  constexpr float kLimit = 126.957164f;  // 88 / ln 2
  __m512 y = _mm512_mul_ps(x, _mm512_set1_ps(-2.45546696f));  // -1.702 / ln 2
  y = _mm512_max_ps(_mm512_min_ps(y, _mm512_set1_ps(kLimit)), _mm512_set1_ps(-kLimit));
  const __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(y, n);
  __m512 p = _mm512_set1_ps(1.327646314e-03f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675540961e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550713465e-02f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402212024e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469440e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.000000119e+00f));
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, n));
  __m512 inv = _mm512_rcp14_ps(d);
  inv = _mm512_mul_ps(inv, _mm512_fnmadd_ps(d, inv, _mm512_set1_ps(2.0f)));
  return _mm512_mul_ps(x, inv);
}

// x·Φ(x) (exact, erf-based GELU) for the int8 epilogue. With z = |x|/√2, erfc(z) is taken as
// t·P(t)·e^(-z²), t = 1/(1 + 0.3275911·z), P of degree 4 (Abramowitz & Stegun 7.1.26: absolute
// error below 1.5e-7, the approximation oneDNN's gelu_erf uses too); then Φ(x) = erfc(z)/2 for
// x < 0 and 1 - erfc(z)/2 otherwise, so the negative side keeps its small values without
// cancellation. e^(-z²) by exp_nonpositive_scalef (past z² = 87 it gives 1e-38, not less: the
// result is then x to float precision, or below 1e-37·|x|). A NaN x gives NaN.
__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline __m512 gelu_erf_avx512(__m512 x) {
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f));
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  // half_erfc = erfc(z) / 2
  const __m512 e = exp_nonpositive_scalef(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z));
  const __m512 half_erfc = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(p, t), e), _mm512_set1_ps(0.5f));
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 phi = _mm512_mask_mov_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), half_erfc), neg, half_erfc);
  return _mm512_mul_ps(x, phi);
}

}  // namespace clipkit
