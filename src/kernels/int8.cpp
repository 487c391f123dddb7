#include "kernels/int8.h"

#include <algorithm>
#include <cmath>

#include "clipkit/error.h"

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

}  // namespace

QuantizedWeights quantize_weights_int8(const float* w, int64_t out, int64_t in) {
  if (out < 0 || in < 0) throw Error(ErrorCode::Shape, "int8 quantisation: negative weight shape");
  QuantizedWeights r;
  r.q.resize(static_cast<size_t>(out * in));
  r.scale.resize(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    const float* row = w + o * in;
    for (int64_t i = 0; i < in; ++i)
      if (!std::isfinite(row[i]))
        throw Error(ErrorCode::InvalidArgument, "int8 quantisation: weight row " + std::to_string(o) +
                                                    " holds a non-finite value");
    const float s = row_scale(row, in);
    r.scale[static_cast<size_t>(o)] = s;
    quantize_row(row, in, s, r.q.data() + o * in);
  }
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
  for (int64_t r = 0; r < rows; ++r) {
    const float s = row_scale(x + r * cols, cols);
    scale[r] = s;
    quantize_row(x + r * cols, cols, s, q + r * cols);
  }
}

void quantize_rows_u8_offset(const float* x, int64_t rows, int64_t cols, uint8_t* q, float* scale) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    uint8_t* qr = q + r * cols;
    const float s = row_scale(xr, cols);
    scale[r] = s;
    if (!(s > 0.0f) || !std::isfinite(s)) {
      std::fill(qr, qr + cols, uint8_t{128});
      continue;
    }
    const float inv = 1.0f / s;
    for (int64_t i = 0; i < cols; ++i) {
      float v = std::nearbyint(xr[i] * inv);
      v = std::min(127.0f, std::max(-127.0f, v));
      qr[i] = static_cast<uint8_t>(static_cast<int>(v) + 128);
    }
  }
}

}  // namespace clipkit
