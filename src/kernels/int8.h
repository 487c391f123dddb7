// Symmetric int8 quantisation used by Linear(WeightFormat::Int8) and `clipkit convert --dtype int8`.
//
// Weights: one scale per output channel (row of the [out, in] PyTorch layout),
//   scale[o] = max_i |W[o, i]| / 127, q[o, i] = round_half_even(W[o, i] / scale[o]) in [-127, 127].
// Activations: the same rule per row (token), computed on the fly at every forward.
// A row that is all zero gets scale 0 and q = 0.
#pragma once
#include <cstdint>
#include <vector>

namespace clipkit {

struct QuantizedWeights {
  std::vector<int8_t> q;      // [out, in]
  std::vector<float> scale;   // [out]
};

// Per-output-channel quantisation of a [out, in] weight matrix.
QuantizedWeights quantize_weights_int8(const float* w, int64_t out, int64_t in);
// Inverse: w[o, i] = q[o, i] * scale[o].
std::vector<float> dequantize_weights_int8(const int8_t* q, const float* scale, int64_t out, int64_t in);

// Per-row quantisation of activations x[rows, cols] into q (rows*cols) and scale (rows).
void quantize_rows_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale);

// The same quantisation, stored offset by +128 as u8 (q + 128 in [1, 255]) for u8 x s8 kernels.
void quantize_rows_u8_offset(const float* x, int64_t rows, int64_t cols, uint8_t* q, float* scale);
// ... with row r read at x + r * ld (ld >= cols), e.g. the first columns of a wider matrix.
void quantize_rows_u8_offset(const float* x, int64_t rows, int64_t cols, int64_t ld, uint8_t* q, float* scale);

// One row of quantize_rows_u8_offset: writes cols bytes, returns the row's scale.
float quantize_row_u8_offset(const float* x, int64_t cols, uint8_t* q);

// The same row when its max|x| is already known (NaN entries ignored, as the row scale ignores
// them): the bytes quantize_row_u8_offset writes; returns the same scale, amax / 127.
float quantize_row_u8_offset_known_max(const float* x, int64_t cols, float amax, uint8_t* q);

// The int8 layers' dequantisation of one output row (Linear's epilogue before any activation):
// y[c] = fma(t[c] - zero_shift[c], row_scale, bias[c]), i.e. rounded after the subtraction and
// once more after the multiply-add; without a bias (null), (t[c] - zero_shift[c]) · row_scale.
// With accumulate, y[c] += that value instead (a residual add, rounded once more). With
// col_scale (a layer's weight scales, Linear::weight_scale), t holds the layer's sums
// (Linear::forward_quantized_sum) and t[c] · col_scale[c], rounded, takes t[c]'s place: the raw
// product (Linear::forward_quantized_raw), so the same y.
// Every path (AVX-512, AVX2, scalar) gives the same bits. t and y may be the same array when
// not accumulating.
void int8_dequantize_row(const float* t, const float* zero_shift, const float* bias, float row_scale, int64_t n,
                         float* y, bool accumulate = false, const float* col_scale = nullptr);
// Its AVX2+FMA and portable paths, callable directly so that tests can compare all three.
void int8_dequantize_row_avx2(const float* t, const float* zero_shift, const float* bias, float row_scale, int64_t n,
                              float* y, bool accumulate = false, const float* col_scale = nullptr);
void int8_dequantize_row_scalar(const float* t, const float* zero_shift, const float* bias, float row_scale,
                                int64_t n, float* y, bool accumulate = false, const float* col_scale = nullptr);

}  // namespace clipkit
