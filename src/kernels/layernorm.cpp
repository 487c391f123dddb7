#include "kernels/layernorm.h"

#include <cmath>

namespace clipkit {

namespace {

void layernorm_row(const float* x, int64_t dim, const float* gamma, const float* beta, float eps, float* y) {
  // Mean and variance accumulated in double (two passes), then the affine map in float32.
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += x[i];
  const double mean_d = sum / static_cast<double>(dim);
  double sq = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    const double d = x[i] - mean_d;
    sq += d * d;
  }
  const double var = sq / static_cast<double>(dim);
  const float mean = static_cast<float>(mean_d);
  const float rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  for (int64_t i = 0; i < dim; ++i) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
}

}  // namespace

void layernorm(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps, float* y) {
  if (rows <= 0 || dim <= 0) return;
#pragma omp parallel for schedule(static) if (rows * dim >= (1 << 20))
  for (int64_t r = 0; r < rows; ++r) layernorm_row(x + r * dim, dim, gamma, beta, eps, y + r * dim);
}

void layernorm_reference(const float* x, int64_t rows, int64_t dim, const float* gamma, const float* beta, float eps,
                         float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double mean = 0.0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= static_cast<double>(dim);
    double var = 0.0;
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<double>(dim);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i)
      y[r * dim + i] = static_cast<float>((xr[i] - mean) * rstd * gamma[i] + beta[i]);
  }
}

}  // namespace clipkit
