// LayerNorm over the last dimension, as torch.nn.LayerNorm computes it in float32:
// mean, then the biased variance, rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * gamma + beta.
#pragma once
#include <cstdint>

namespace clipkit {

// x, y: [rows, dim] row-major (y may equal x); gamma, beta: [dim].
void layernorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y);

// Plain scalar reference in double precision (for tests).
void layernorm_reference(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                         float* y);

}  // namespace clipkit
