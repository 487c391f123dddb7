// The int8 layers' epilogue: dequantisation of the integer product, bias, activation, and (for a
// product that feeds another int8 layer) the u8 requantisation of the result.
#include "kernels/int8_epilogue.h"

// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/cpu.h"
#include "kernels/int8.h"
#include "kernels/onednn_util.h"
#include "kernels/vec_math.h"

namespace clipkit {

namespace {

// How far ahead of its reads (in floats) the epilogue prefetches the product; prefetches past
// the end of the array are hints that never fault.
constexpr int64_t kEpiloguePrefetch = 512;

// Int8 epilogue for one row, AVX-512: y = act(fma(t - zs, s, b)) or y += fma(t - zs, s, b) (the
// value int8_dequantize_row defines), act being QuickGELU or erf-GELU (vec_math.h). With cs (the
// weight scales), t is first t · cs, rounded. With amax, also *amax = max|y| over the row, NaN
// ignored (the row scale's max).
__attribute__((target("avx512f,avx512dq,avx512vl"))) void int8_epilogue_row_avx512(
    const float* t, float s, const float* zs, const float* bp, int64_t out, float* yr, Activation act,
    bool accumulate, const float* cs, float* amax = nullptr) {
  const __m512 vs = _mm512_set1_ps(s);
  __m512 m = _mm512_setzero_ps();
  for (int64_t j = 0; j < out; j += 16) {
    const __mmask16 k = out - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (out - j)) - 1u);
    // The product comes from memory (the matmul wrote more than the caches hold); asking for it
    // kEpiloguePrefetch floats ahead keeps more lines in flight than the hardware prefetch does.
    _mm_prefetch(reinterpret_cast<const char*>(t + j + kEpiloguePrefetch), _MM_HINT_T0);
    __m512 tv = _mm512_maskz_loadu_ps(k, t + j);
    // The weight scale as the matmul applies it (vcvtdq2ps then vmulps): an explicitly rounded
    // multiply, never fused with the subtraction that follows.
    if (cs) tv = _mm512_mul_round_ps(tv, _mm512_maskz_loadu_ps(k, cs + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 d = _mm512_sub_ps(tv, _mm512_maskz_loadu_ps(k, zs + j));
    // Without a bias the product is rounded on its own (an explicitly rounded multiply, which GCC
    // does not fuse with the residual add below into one FMA), as int8_dequantize_row rounds it.
    __m512 v = bp ? _mm512_fmadd_ps(d, vs, _mm512_maskz_loadu_ps(k, bp + j))
                  : _mm512_mul_round_ps(d, vs, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (act == Activation::QuickGelu) v = quick_gelu_avx512(v);
    if (act == Activation::Gelu) v = gelu_erf_avx512(v);
    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, yr + j));
    _mm512_mask_storeu_ps(yr + j, k, v);
    // vmaxps returns its second operand when the first is NaN: a NaN value leaves m unchanged.
    if (amax) m = _mm512_mask_max_ps(m, k, _mm512_abs_ps(v), m);
  }
  if (amax) *amax = _mm512_reduce_max_ps(m);
}

}  // namespace

void int8_epilogue(const float* tmp, const float* row_scale, const std::vector<float>& zero_shift,
                   const std::vector<float>& bias, int64_t rows, int64_t out, float* y, Activation act,
                   bool accumulate, const float* col_scale) {
  const float* zs = zero_shift.data();
  const float* bp = bias.empty() ? nullptr : bias.data();
  if (cpu_has_avx512()) {
#pragma omp parallel for schedule(static) if (rows * out > (1 << 16))
    for (int64_t r = 0; r < rows; ++r)
      int8_epilogue_row_avx512(tmp + r * out, row_scale[r], zs, bp, out, y + r * out, act, accumulate, col_scale);
    return;
  }
#pragma omp parallel for schedule(static) if (rows * out > (1 << 18))
  for (int64_t r = 0; r < rows; ++r)
    int8_dequantize_row(tmp + r * out, zs, bp, row_scale[r], out, y + r * out, accumulate, col_scale);
  if (act == Activation::None) return;
  // oneDNN's JIT eltwise (same kernels the f32 path fuses); the primitive cache makes this cheap.
  try {
    const dnnl::memory::desc d({rows * out}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
    const auto alg = act == Activation::QuickGelu ? dnnl::algorithm::eltwise_swish : dnnl::algorithm::eltwise_gelu_erf;
    const float alpha = act == Activation::QuickGelu ? 1.702f : 0.0f;
    dnnl::eltwise_forward::primitive_desc pd(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference, alg, d, alpha, 0.0f), onednn::cpu_engine());
    dnnl::memory m(d, onednn::cpu_engine(), y);
    dnnl::stream& s = onednn::thread_stream();
    dnnl::eltwise_forward(pd).execute(s, {{DNNL_ARG_SRC, m}, {DNNL_ARG_DST, m}});
    s.wait();
  } catch (const dnnl::error&) {
    apply_activation(y, rows * out, act);
  }
}

void int8_epilogue_quantize(const float* tmp, const float* row_scale, const std::vector<float>& zero_shift,
                            const std::vector<float>& bias, int64_t rows, int64_t out, Activation act, uint8_t* q,
                            float* q_scale, const float* col_scale) {
  if (!cpu_has_avx512()) {
    thread_local std::vector<float> ybuf;
    float* y = onednn::grow(ybuf, static_cast<size_t>(rows * out));
    int8_epilogue(tmp, row_scale, zero_shift, bias, rows, out, y, act, false, col_scale);
    quantize_rows_u8_offset(y, rows, out, q, q_scale);
    return;
  }
  const float* zs = zero_shift.data();
  const float* bp = bias.empty() ? nullptr : bias.data();
#pragma omp parallel if (rows * out > (1 << 16))
  {
    std::vector<float> row(static_cast<size_t>(out));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      // The row's max|y| comes out of the epilogue: the quantisation needs one pass, not two.
      float amax = 0.0f;
      int8_epilogue_row_avx512(tmp + r * out, row_scale[r], zs, bp, out, row.data(), act, false, col_scale, &amax);
      q_scale[r] = quantize_row_u8_offset_known_max(row.data(), out, amax, q + r * out);
    }
  }
}

}  // namespace clipkit
