// Numerically stable softmax over rows (max subtracted before exp), float32 in and out.
#pragma once
#include <cstdint>

namespace clipkit {

// In place over x[0..n).
void softmax_row(float* x, int64_t n);
// The same without the final division: x[i] = exp(x[i] - max), and the return value is
// 1 / Σ exp(x[j] - max), so that softmax_row(x) = x · returned value. Attention applies that factor
// to its output rows (d values) instead of to the probabilities (n values). NaN or +inf in x give
// what softmax_row gives (NaN propagates through the factor).
float softmax_row_unnormalized(float* x, int64_t n);
// In place over each of `rows` rows of length `cols`, stored `ld` floats apart.
void softmax_rows(float* x, int64_t rows, int64_t cols, int64_t ld);

// Scalar reference in double precision: y[i] = exp(x[i] - max) / sum_j exp(x[j] - max).
void softmax_reference(const float* x, int64_t n, float* y);

}  // namespace clipkit
