#include "kernels/int8.h"

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "clipkit/error.h"
#include "kernels/cpu.h"

namespace clipkit {

namespace {

inline float row_scale(const float* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax / 127.0f;
}

inline void quantize_row(const float* x, int64_t n, float scale, int8_t* q) {
  if (!(scale > 0.0f) || !std::isfinite(scale)) {
    std::fill(q, q + n, int8_t{0});
    return;
  }
  const float inv = 1.0f / scale;
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv);  // default rounding mode: half to even
    v = std::min(127.0f, std::max(-127.0f, v));
    q[i] = static_cast<int8_t>(v);
  }
}

// AVX-512 versions of the two steps above, bit-identical for finite inputs: max|x| ignores NaN as
// std::max does (a NaN operand in the first position yields the second), and the conversion
// rounds half to even (the default MXCSR mode, as std::nearbyint) before clamping to ±127.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) float row_scale_avx512(const float* x, int64_t n) {
  // Four independent maxima so that the loop is not bound by one chain of dependent vmaxps.
  __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    m0 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m0);
    m1 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 16)), m1);
    m2 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 32)), m2);
    m3 = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i + 48)), m3);
  }
  __m512 m = _mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3));
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m);
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1u);
    m = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(k, x + i)), m);
  }
  return _mm512_reduce_max_ps(m) / 127.0f;
}

// q[i] = clamp(round(x[i] * inv), -127, 127) + offset, stored as bytes (offset 0: s8, 128: u8).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) void quantize_row_avx512(const float* x, int64_t n,
                                                                                        float inv, int offset,
                                                                                        void* out) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), off = _mm512_set1_epi32(offset);
  auto* q = static_cast<uint8_t*>(out);
  int64_t i = 0;
  // Whole vectors: the low byte of each clamped lane (vpmovdb) to a plain 16-byte store, which is
  // cheaper than the masked narrowing store the tail needs.
  for (; i + 16 <= n; i += 16) {
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
    v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), off);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(v));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vinv));
    v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), off);
    _mm512_mask_cvtepi32_storeu_epi8(q + i, k, v);
  }
}

// The bytes of one row for a known scale s (offset 0 or 128). Returns s.
float quantize_row_with_scale(const float* x, int64_t n, float s, int offset, uint8_t* q);

// One row: scale, then the bytes (offset 0 or 128). Returns the scale.
float quantize_row_dispatch(const float* x, int64_t n, int offset, uint8_t* q) {
  return quantize_row_with_scale(x, n, cpu_has_avx512() ? row_scale_avx512(x, n) : row_scale(x, n), offset, q);
}

float quantize_row_with_scale(const float* x, int64_t n, float s, int offset, uint8_t* q) {
  if (cpu_has_avx512()) {
    if (!(s > 0.0f) || !std::isfinite(s)) {
      std::fill(q, q + n, static_cast<uint8_t>(offset));
      return s;
    }
    quantize_row_avx512(x, n, 1.0f / s, offset, q);
    return s;
  }
  if (offset == 0) {
    quantize_row(x, n, s, reinterpret_cast<int8_t*>(q));
    return s;
  }
  if (!(s > 0.0f) || !std::isfinite(s)) {
    std::fill(q, q + n, uint8_t{128});
    return s;
  }
  const float inv = 1.0f / s;
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv);
    v = std::min(127.0f, std::max(-127.0f, v));
    q[i] = static_cast<uint8_t>(static_cast<int>(v) + 128);
  }
  return s;
}

}  // namespace

QuantizedWeights quantize_weights_int8(const float* w, int64_t out, int64_t in) {
  if (out < 0 || in < 0) throw Error(ErrorCode::Shape, "int8 quantisation: negative weight shape");
  QuantizedWeights r;
  r.q.resize(static_cast<size_t>(out * in));
  r.scale.resize(static_cast<size_t>(out));
  bool finite = true;
#pragma omp parallel for schedule(static) if (out * in > (1 << 16)) reduction(&& : finite)
  for (int64_t o = 0; o < out; ++o) {
    const float* row = w + o * in;
    // An exponent of all ones is an infinity or a NaN; branch-free so that it vectorises.
    uint32_t special = 0;
    for (int64_t i = 0; i < in; ++i) {
      uint32_t bits;
      std::memcpy(&bits, row + i, sizeof bits);
      special |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    const bool ok = special == 0;
    finite = finite && ok;
    if (!ok) continue;
    r.scale[static_cast<size_t>(o)] =
        quantize_row_dispatch(row, in, 0, reinterpret_cast<uint8_t*>(r.q.data() + o * in));
  }
  if (!finite)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i)
        if (!std::isfinite(w[o * in + i]))
          throw Error(ErrorCode::InvalidArgument, "int8 quantisation: weight row " + std::to_string(o) +
                                                      " holds a non-finite value");
  return r;
}

std::vector<float> dequantize_weights_int8(const int8_t* q, const float* scale, int64_t out, int64_t in) {
  std::vector<float> w(static_cast<size_t>(out * in));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) w[static_cast<size_t>(o * in + i)] = static_cast<float>(q[o * in + i]) * scale[o];
  return w;
}

void quantize_rows_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r)
    scale[r] = quantize_row_dispatch(x + r * cols, cols, 0, reinterpret_cast<uint8_t*>(q + r * cols));
}

void quantize_rows_u8_offset(const float* x, int64_t rows, int64_t cols, uint8_t* q, float* scale) {
  quantize_rows_u8_offset(x, rows, cols, cols, q, scale);
}

void quantize_rows_u8_offset(const float* x, int64_t rows, int64_t cols, int64_t ld, uint8_t* q, float* scale) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) scale[r] = quantize_row_dispatch(x + r * ld, cols, 128, q + r * cols);
}

float quantize_row_u8_offset(const float* x, int64_t cols, uint8_t* q) { return quantize_row_dispatch(x, cols, 128, q); }

float quantize_row_u8_offset_known_max(const float* x, int64_t cols, float amax, uint8_t* q) {
  return quantize_row_with_scale(x, cols, amax / 127.0f, 128, q);
}

namespace {

// The dequantisation below must round d · s and the residual add separately on every path (no
// bias, accumulating), and a sum times its weight scale before the subtraction: GCC would
// otherwise fuse the vector multiply and add into one FMA.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

// Prefetch distance (floats) of the AVX-512 dequantisation, and the shortest row it prefetches
// for; prefetches past the end of an array are hints that never fault.
constexpr int64_t kDequantPrefetch = 512;
constexpr int64_t kDequantPrefetchMinRow = 512;

__attribute__((target("avx512f,avx512dq,avx512vl"))) void dequantize_row_avx512(const float* t, const float* zs,
                                                                              const float* b, float s, int64_t n,
                                                                              float* y, bool accumulate,
                                                                              const float* cs) {
  const __m512 vs = _mm512_set1_ps(s);
  // A whole layer's row (a residual add over a product the caches no longer hold) is read ahead
  // of its use; a short piece (an attention head's) is left to its caller.
  const bool ahead = n >= kDequantPrefetchMinRow;
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1u);
    if (ahead) {
      _mm_prefetch(reinterpret_cast<const char*>(t + j + kDequantPrefetch), _MM_HINT_T0);
      if (accumulate) _mm_prefetch(reinterpret_cast<const char*>(y + j + kDequantPrefetch), _MM_HINT_T0);
    }
    __m512 tv = _mm512_maskz_loadu_ps(k, t + j);
    if (cs) tv = _mm512_mul_round_ps(tv, _mm512_maskz_loadu_ps(k, cs + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 d = _mm512_sub_ps(tv, _mm512_maskz_loadu_ps(k, zs + j));
    __m512 v = b ? _mm512_fmadd_ps(d, vs, _mm512_maskz_loadu_ps(k, b + j)) : _mm512_mul_ps(d, vs);
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, y + j), v);
    _mm512_mask_storeu_ps(y + j, k, v);
  }
}

}  // namespace

__attribute__((target("avx2,fma"))) void int8_dequantize_row_avx2(const float* t, const float* zs, const float* b,
                                                                  float s, int64_t n, float* y, bool accumulate,
                                                                  const float* cs) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 tv = _mm256_loadu_ps(t + j);
    if (cs) tv = _mm256_mul_ps(tv, _mm256_loadu_ps(cs + j));
    const __m256 d = _mm256_sub_ps(tv, _mm256_loadu_ps(zs + j));
    __m256 v = b ? _mm256_fmadd_ps(d, vs, _mm256_loadu_ps(b + j)) : _mm256_mul_ps(d, vs);
    if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(y + j), v);
    _mm256_storeu_ps(y + j, v);
  }
  for (; j < n; ++j) {
    const float tj = cs ? t[j] * cs[j] : t[j];
    const float v = b ? std::fma(tj - zs[j], s, b[j]) : (tj - zs[j]) * s;
    y[j] = accumulate ? y[j] + v : v;
  }
}

void int8_dequantize_row_scalar(const float* t, const float* zero_shift, const float* bias, float row_scale,
                                int64_t n, float* y, bool accumulate, const float* col_scale) {
  for (int64_t j = 0; j < n; ++j) {
    const float tj = col_scale ? t[j] * col_scale[j] : t[j];
    const float v = bias ? std::fma(tj - zero_shift[j], row_scale, bias[j]) : (tj - zero_shift[j]) * row_scale;
    y[j] = accumulate ? y[j] + v : v;
  }
}

void int8_dequantize_row(const float* t, const float* zero_shift, const float* bias, float row_scale, int64_t n,
                         float* y, bool accumulate, const float* col_scale) {
  if (cpu_has_avx512()) return dequantize_row_avx512(t, zero_shift, bias, row_scale, n, y, accumulate, col_scale);
  if (cpu_has_avx2_fma())
    return int8_dequantize_row_avx2(t, zero_shift, bias, row_scale, n, y, accumulate, col_scale);
  int8_dequantize_row_scalar(t, zero_shift, bias, row_scale, n, y, accumulate, col_scale);
}

#pragma GCC pop_options

}  // namespace clipkit
