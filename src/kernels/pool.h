// Average pooling as PyTorch's AvgPool2d(k): kernel = stride = k, no padding, floor output size
// (trailing rows/columns that do not fill a window are dropped).
#pragma once
#include <cstdint>

#include "kernels/act_layout.h"

namespace clipkit {

// Output size of one spatial dimension for AvgPool2d(k). Throws Error(Shape) when in < k.
int64_t avg_pool_out_size(int64_t in, int64_t k);

// x: [batch, c, h, w] -> y: [batch, c, h/k, w/k], both in `layout`, through oneDNN's pooling
// primitive (cached per shape). k == 1 copies. x and y must not overlap.
void avg_pool2d(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, int64_t k, float* y,
                ActLayout layout = ActLayout::Nhwc);

// Scalar reference over NCHW data with double accumulation: x [batch, c, h, w] -> y [batch, c, h/k, w/k].
void avg_pool2d_reference(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, int64_t k, float* y);

}  // namespace clipkit
