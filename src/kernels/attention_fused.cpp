#include "kernels/attention_fused.h"

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>

#include "kernels/cpu.h"
#include "kernels/vec_math.h"

#define CLIPKIT_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw")))

namespace clipkit {

namespace {

constexpr int64_t kHead = 64;                          // head size covered
constexpr int kHeadVecs = 4;                           // kHead / 16
constexpr int64_t kMaxCols = kFusedAttentionMaxSeq;    // padded score row, a multiple of 16

// The lanes of column vector `vec` (columns 16·vec .. 16·vec + 15) that lie below `valid`.
inline __mmask16 lanes_below(int64_t valid, int vec) {
  const int64_t lo = 16 * static_cast<int64_t>(vec);
  if (valid <= lo) return 0;
  if (valid >= lo + 16) return static_cast<__mmask16>(0xFFFF);
  return static_cast<__mmask16>((1u << (valid - lo)) - 1u);
}

// In-register transpose of a 16x16 block: r[i] holds row i on entry and column i on return.
CLIPKIT_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // Within each 128-bit lane L, u[4g + c] now gets column 4L + c of rows 4g .. 4g + 3.
  __m512 u[16];
  for (int g = 0; g < 16; g += 4) {
    const __m512d t0 = _mm512_castps_pd(t[g]), t1 = _mm512_castps_pd(t[g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[g + 2]), t3 = _mm512_castps_pd(t[g + 3]);
    u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  // A 4x4 transpose of 128-bit lanes among u[c], u[4 + c], u[8 + c], u[12 + c].
  for (int c = 0; c < 4; ++c) {
    const __m512 a01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), a23 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    const __m512 b01 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    const __m512 b23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_f32x4(a01, b01, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(a01, b01, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(a23, b23, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(a23, b23, 0xDD);
  }
}

// 16 values of row i, columns c .. c + 15 of the head, through the dequantisation when there is
// one: fma(x - zero_shift, row_scale, bias), the value of int8_dequantize_row (kernels/int8.h).
CLIPKIT_AVX512 inline __m512 load_value(const float* row, int64_t c, const PairDequant* dq, int which, int64_t i) {
  __m512 x = _mm512_loadu_ps(row + c);
  if (!dq) return x;
  if (dq->col_scale[which])
    x = _mm512_mul_round_ps(x, _mm512_loadu_ps(dq->col_scale[which] + c), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 d = _mm512_sub_ps(x, _mm512_loadu_ps(dq->zero_shift[which] + c));
  const __m512 s = _mm512_set1_ps(dq->row_scale[i]);
  return dq->bias[which] ? _mm512_fmadd_ps(d, s, _mm512_loadu_ps(dq->bias[which] + c)) : _mm512_mul_ps(d, s);
}

// dst[i · 64 + t] = the dequantised src[i · ld + t] for i < seq (see load_value).
CLIPKIT_AVX512 void dequantize_rows(const float* src, int64_t ld, int64_t seq, const PairDequant* dq, int which,
                                    float* dst) {
  for (int64_t i = 0; i < seq; ++i)
    for (int64_t c = 0; c < kHead; c += 16) _mm512_store_ps(dst + i * kHead + c, load_value(src + i * ld, c, dq, which, i));
}

// kt[t · cols + j] = scale · k[j, t] for t < 64, j < cols (rows j >= seq are zero).
CLIPKIT_AVX512 void transpose_keys(const float* k, int64_t ld, int64_t seq, float scale, int64_t cols, float* kt,
                                   const PairDequant* dq) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t jb = 0; jb < cols; jb += 16)
    for (int64_t tb = 0; tb < kHead; tb += 16) {
      __m512 r[16];
      for (int64_t i = 0; i < 16; ++i)
        r[i] = jb + i < seq ? _mm512_mul_ps(load_value(k + (jb + i) * ld, tb, dq, 1, jb + i), s) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t c = 0; c < 16; ++c) _mm512_store_ps(kt + (tb + c) * cols + jb, r[c]);
    }
}

// acc[r][c] = Σ_k a[r·lda + k] · b[k·ldb + 16c] over k < depth: R rows of a, broadcast one value
// at a time, against N vectors of each row of b. The register tile of both products.
template <int R, int N>
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"), always_inline)) inline void tile_product(
    const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth, __m512 (&acc)[R][N]) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < depth; ++k) {
    __m512 bv[N];
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) bv[c] = _mm512_loadu_ps(b + k * ldb + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 ab = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 8
      for (int c = 0; c < N; ++c) acc[r][c] = _mm512_fmadd_ps(ab, bv[c], acc[r][c]);
    }
  }
}

// Rows i0 .. i0 + R - 1: scores in registers (NV vectors per row), softmax, then p·v.
template <int NV, int R, bool causal>
CLIPKIT_AVX512 bool row_tile(const float* q, const float* v, int64_t ld, int64_t seq, const float* kt, int64_t i0,
                             float* out, int64_t ldo) {
  constexpr int64_t cols = 16 * NV;
  __m512 acc[R][NV];
  tile_product<R, NV>(q + i0 * ld, ld, kt, cols, kHead, acc);
  // The softmax of each row, left unnormalised: p = exp(s - max), and 1/Σp kept for the output.
  alignas(64) float p[R][cols];
  float inv_sum[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t valid = causal ? i0 + r + 1 : seq;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    __mmask16 bad = 0;
#pragma GCC unroll 8
    for (int c = 0; c < NV; ++c) {
      const __mmask16 m = lanes_below(valid, c);
      bad |= _mm512_mask_cmp_ps_mask(m, acc[r][c], acc[r][c], _CMP_UNORD_Q);
      mx = _mm512_mask_max_ps(mx, m, acc[r][c], mx);
    }
    const float top = _mm512_reduce_max_ps(mx);
    if (bad != 0 || !std::isfinite(top)) return false;
    const __m512 vtop = _mm512_set1_ps(top);
    __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int c = 0; c < NV; ++c) {
      const __m512 e =
          _mm512_maskz_mov_ps(lanes_below(valid, c), exp_nonpositive_scalef(_mm512_sub_ps(acc[r][c], vtop)));
      sum = _mm512_add_ps(sum, e);
      _mm512_store_ps(&p[r][16 * c], e);
    }
    inv_sum[r] = 1.0f / _mm512_reduce_add_ps(sum);
  }
  // out rows = p · v; p is zero past each row's valid columns, so a causal tile stops at its last row.
  __m512 o[R][kHeadVecs];
  tile_product<R, kHeadVecs>(&p[0][0], cols, v, ld, causal ? i0 + R : seq, o);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m512 f = _mm512_set1_ps(inv_sum[r]);
#pragma GCC unroll 4
    for (int c = 0; c < kHeadVecs; ++c) _mm512_storeu_ps(out + (i0 + r) * ldo + 16 * c, _mm512_mul_ps(o[r][c], f));
  }
  return true;
}

// All rows of one pair, R rows per tile (the register budget: R·NV scores plus NV keys, and R·4
// outputs plus 4 values, within 32 registers), the last tile with the rows left.
template <int NV, bool causal>
CLIPKIT_AVX512 bool all_rows(const float* q, const float* v, int64_t ld, int64_t seq, const float* kt, float* out,
                             int64_t ldo) {
  constexpr int R = NV <= 4 ? 6 : 4;
  int64_t i = 0;
  for (; i + R <= seq; i += R)
    if (!row_tile<NV, R, causal>(q, v, ld, seq, kt, i, out, ldo)) return false;
  switch (seq - i) {
    case 0: return true;
    case 1: return row_tile<NV, 1, causal>(q, v, ld, seq, kt, i, out, ldo);
    case 2: return row_tile<NV, 2, causal>(q, v, ld, seq, kt, i, out, ldo);
    case 3: return row_tile<NV, 3, causal>(q, v, ld, seq, kt, i, out, ldo);
    case 4: return row_tile<NV, 4, causal>(q, v, ld, seq, kt, i, out, ldo);
    default: return row_tile<NV, 5, causal>(q, v, ld, seq, kt, i, out, ldo);
  }
}

// The causal mask as a template argument: without it every row of a tile shares its lane masks.
template <int NV>
CLIPKIT_AVX512 bool all_rows(const float* q, const float* v, int64_t ld, int64_t seq, bool causal, const float* kt,
                             float* out, int64_t ldo) {
  return causal ? all_rows<NV, true>(q, v, ld, seq, kt, out, ldo) : all_rows<NV, false>(q, v, ld, seq, kt, out, ldo);
}

}  // namespace

bool attention_fused_supported(int64_t seq, int64_t head_dim) {
  return head_dim == kHead && seq >= 1 && seq <= kFusedAttentionMaxSeq && cpu_has_avx512();
}

bool attention_pair_fused(const float* q, const float* k, const float* v, int64_t ld, int64_t seq, bool causal,
                          float scale, float* out, int64_t ldo, const PairDequant* dequant) {
  if (!attention_fused_supported(seq, kHead)) return false;
  const int nv = static_cast<int>((seq + 15) / 16);
  const int64_t cols = 16 * static_cast<int64_t>(nv);
  alignas(64) float kt[kHead * kMaxCols];
  transpose_keys(k, ld, seq, scale, cols, kt, dequant);
  alignas(64) float qd[kMaxCols * kHead], vd[kMaxCols * kHead];
  if (dequant) {  // q and v rows dequantised once into L1-sized copies
    dequantize_rows(q, ld, seq, dequant, 0, qd);
    dequantize_rows(v, ld, seq, dequant, 2, vd);
    q = qd;
    v = vd;
    ld = kHead;
  }
  switch (nv) {
    case 1: return all_rows<1>(q, v, ld, seq, causal, kt, out, ldo);
    case 2: return all_rows<2>(q, v, ld, seq, causal, kt, out, ldo);
    case 3: return all_rows<3>(q, v, ld, seq, causal, kt, out, ldo);
    case 4: return all_rows<4>(q, v, ld, seq, causal, kt, out, ldo);
    default: return all_rows<5>(q, v, ld, seq, causal, kt, out, ldo);
  }
}

}  // namespace clipkit
