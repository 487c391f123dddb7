// The int8 layers' epilogue (Linear's int8 paths): the integer product back to floats, then bias
// and activation, optionally requantised for the next int8 layer.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/linear.h"

namespace clipkit {

// y[r, :] = act(fma(tmp[r, :] - zero_shift, row_scale[r], bias)) (or y += ... with accumulate),
// the value int8_dequantize_row defines on every CPU. tmp holds scale[n] · Σ_k (q_x + 128) q_w,
// so subtracting zero_shift leaves the s8 x s8 product. `bias` may be empty. With col_scale
// (the weight scales, [out]), tmp holds the sum alone (as float) and each value is first
// multiplied by its column's scale, rounded as the matmul would have rounded it.
void int8_epilogue(const float* tmp, const float* row_scale, const std::vector<float>& zero_shift,
                   const std::vector<float>& bias, int64_t rows, int64_t out, float* y, Activation act,
                   bool accumulate, const float* col_scale = nullptr);

// int8_epilogue followed by the u8 row quantisation of its result, one row at a time through an
// L1 buffer: the bytes and scales quantize_rows_u8_offset would give on int8_epilogue's output.
void int8_epilogue_quantize(const float* tmp, const float* row_scale, const std::vector<float>& zero_shift,
                            const std::vector<float>& bias, int64_t rows, int64_t out, Activation act, uint8_t* q,
                            float* q_scale, const float* col_scale = nullptr);

}  // namespace clipkit
