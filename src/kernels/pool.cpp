#include "kernels/pool.h"

#include <cstring>
#include <string>

#include "clipkit/error.h"

namespace clipkit {

int64_t avg_pool_out_size(int64_t in, int64_t k) {
  if (k < 1) throw Error(ErrorCode::Shape, "average pooling: invalid kernel size " + std::to_string(k));
  if (in < k)
    throw Error(ErrorCode::Shape, "average pooling: input size " + std::to_string(in) + " is smaller than the kernel " +
                                      std::to_string(k));
  return in / k;
}

void avg_pool2d_nhwc(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t k, float* y) {
  const int64_t oh = avg_pool_out_size(h, k), ow = avg_pool_out_size(w, k);
  if (k == 1) {
    std::memcpy(y, x, static_cast<size_t>(batch * h * w * c) * sizeof(float));
    return;
  }
  const float area = static_cast<float>(k * k);
  const int64_t rows = batch * oh;
#pragma omp parallel for schedule(static) if (batch * h * w * c > (int64_t{1} << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / oh, oy = r % oh;
    const float* xb = x + b * h * w * c;
    for (int64_t ox = 0; ox < ow; ++ox) {
      float* dst = y + ((b * oh + oy) * ow + ox) * c;
      for (int64_t ch = 0; ch < c; ++ch) dst[ch] = 0.0f;
      for (int64_t ky = 0; ky < k; ++ky)
        for (int64_t kx = 0; kx < k; ++kx) {
          const float* src = xb + ((oy * k + ky) * w + ox * k + kx) * c;
          for (int64_t ch = 0; ch < c; ++ch) dst[ch] += src[ch];
        }
      for (int64_t ch = 0; ch < c; ++ch) dst[ch] /= area;
    }
  }
}

void avg_pool2d_reference(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, int64_t k, float* y) {
  const int64_t oh = avg_pool_out_size(h, k), ow = avg_pool_out_size(w, k);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          double acc = 0.0;
          for (int64_t ky = 0; ky < k; ++ky)
            for (int64_t kx = 0; kx < k; ++kx) acc += x[((b * c + ch) * h + oy * k + ky) * w + ox * k + kx];
          y[((b * c + ch) * oh + oy) * ow + ox] = static_cast<float>(acc / static_cast<double>(k * k));
        }
}

}  // namespace clipkit
