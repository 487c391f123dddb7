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

// exp(x) for x <= 0 (the softmax arguments): x = n·ln2 + r with |r| <= ln2/2, e^r by a degree-7
// Taylor polynomial (relative error below 2e-8 on that interval), times 2^n built in the exponent
// bits. Arguments below -87 give 0 (their true value is below float's normal range).
__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline __m512 exp_nonpositive(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_max_ps(x, lo);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n·ln2 in two steps (Cody–Waite) to keep r exact to float precision.
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
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  const __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), y);
}

// x·σ(1.702x) (QuickGELU). σ(z) = 1/(1+e^-z) for z >= 0 and e^z/(1+e^z) below, so the exponential
// only ever sees non-positive arguments.
__attribute__((target("avx512f,avx512dq,avx512vl"))) static inline __m512 quick_gelu_avx512(__m512 x) {
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(1.702f));
  const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(z)));
  const __m512 one = _mm512_set1_ps(1.0f);
  const __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 num = _mm512_mask_mov_ps(one, neg, e);
  // 1/(1+e) with e in (0, 1]: the 14-bit reciprocal estimate and one Newton step (about 2^-27
  // relative), much cheaper than a division.
  const __m512 d = _mm512_add_ps(one, e);
  __m512 r = _mm512_rcp14_ps(d);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
  return _mm512_mul_ps(x, _mm512_mul_ps(num, r));
}

}  // namespace clipkit
