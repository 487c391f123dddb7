// LayerNorm over the last dimension, as torch.nn.LayerNorm computes it in float32:
// mean, then the biased variance, rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * gamma + beta.
#pragma once
#include <cstdint>

namespace clipkit {

// x, y: [rows, dim] row-major (y may equal x); gamma, beta: [dim].
void layernorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y);

// LayerNorm, then the int8 row quantisation of its output (kernels/int8.h, quantize_rows_u8_offset):
// the bytes and scales those two calls give, without the normalised rows ever stored as floats.
// q: [rows, dim] bytes (value + 128); scale: [rows].
void layernorm_quantize_u8(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                           uint8_t* q, float* scale);

// The same for one row, with `row` (dim floats) as scratch for the normalised values: writes q
// (dim bytes) and returns the row's scale. For callers fusing it with the step that made x.
float layernorm_quantize_row_u8(const float* x, int64_t dim, const float* gamma, const float* beta, float eps,
                                float* row, uint8_t* q);

// Plain scalar reference in double precision (for tests).
void layernorm_reference(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                         float* y);

}  // namespace clipkit
