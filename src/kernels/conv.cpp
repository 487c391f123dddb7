#include "kernels/conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "clipkit/error.h"

namespace clipkit {

int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding) {
  if (kernel < 1 || stride < 1 || padding < 0)
    throw Error(ErrorCode::Shape, "convolution: invalid kernel " + std::to_string(kernel) + ", stride " +
                                      std::to_string(stride) + " or padding " + std::to_string(padding));
  if (in + 2 * padding < kernel)
    throw Error(ErrorCode::Shape, "convolution: input size " + std::to_string(in) + " (padding " +
                                      std::to_string(padding) + ") is smaller than the kernel size " +
                                      std::to_string(kernel));
  return (in + 2 * padding - kernel) / stride + 1;
}

std::vector<float> fold_batchnorm(std::vector<float>& weight, int64_t out_channels, const float* gamma,
                                  const float* beta, const float* mean, const float* var, double eps,
                                  const std::string& what) {
  if (out_channels <= 0 || weight.size() % static_cast<size_t>(out_channels) != 0)
    throw Error(ErrorCode::Shape, what + ": convolution weight of " + std::to_string(weight.size()) +
                                      " values does not split into " + std::to_string(out_channels) + " channels");
  const size_t per = weight.size() / static_cast<size_t>(out_channels);
  std::vector<float> bias(static_cast<size_t>(out_channels));
  for (int64_t o = 0; o < out_channels; ++o) {
    const double v = static_cast<double>(var[o]) + eps;
    if (!(v > 0.0))
      throw Error(ErrorCode::Shape, what + ": running variance of channel " + std::to_string(o) +
                                        " is negative or not a number");
    const double scale = static_cast<double>(gamma[o]) / std::sqrt(v);
    float* wo = weight.data() + static_cast<size_t>(o) * per;
    for (size_t i = 0; i < per; ++i) wo[i] = static_cast<float>(wo[i] * scale);
    bias[static_cast<size_t>(o)] = static_cast<float>(static_cast<double>(beta[o]) - static_cast<double>(mean[o]) * scale);
  }
  return bias;
}

namespace {

// [out, in, kh, kw] -> [out, kh, kw, in]
std::vector<float> reorder_weight(const std::vector<float>& w, const ConvShape& s) {
  std::vector<float> r(w.size());
  const int64_t ci = s.in_channels, kh = s.kernel_h, kw = s.kernel_w;
  for (int64_t o = 0; o < s.out_channels; ++o)
    for (int64_t c = 0; c < ci; ++c)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x)
          r[static_cast<size_t>(((o * kh + y) * kw + x) * ci + c)] =
              w[static_cast<size_t>(((o * ci + c) * kh + y) * kw + x)];
  return r;
}

}  // namespace

Conv2d::Conv2d(const std::vector<float>& weight, std::vector<float> bias, const ConvShape& shape, WeightFormat format)
    : shape_(shape) {
  if (shape.in_channels < 1 || shape.out_channels < 1 || shape.kernel_h < 1 || shape.kernel_w < 1 ||
      shape.stride < 1 || shape.padding < 0)
    throw Error(ErrorCode::Shape, "convolution: invalid geometry (in " + std::to_string(shape.in_channels) + ", out " +
                                      std::to_string(shape.out_channels) + ", kernel " +
                                      std::to_string(shape.kernel_h) + "x" + std::to_string(shape.kernel_w) +
                                      ", stride " + std::to_string(shape.stride) + ", padding " +
                                      std::to_string(shape.padding) + ")");
  const int64_t k = shape.in_channels * shape.kernel_h * shape.kernel_w;
  if (static_cast<int64_t>(weight.size()) != k * shape.out_channels)
    throw Error(ErrorCode::Shape, "convolution weight has " + std::to_string(weight.size()) + " values, expected " +
                                      std::to_string(k * shape.out_channels));
  gemm_ = Linear(reorder_weight(weight, shape), std::move(bias), k, shape.out_channels, format);
}

bool Conv2d::pointwise() const {
  return shape_.kernel_h == 1 && shape_.kernel_w == 1 && shape_.stride == 1 && shape_.padding == 0;
}

void Conv2d::forward(const float* x, int64_t batch, int64_t h, int64_t w, float* y, ConvEpilogue epilogue,
                     int64_t workspace_bytes) const {
  run(x, batch, h, w, y, false, workspace_bytes);
  if (epilogue == ConvEpilogue::Relu) relu_inplace(y, batch * out_h(h) * out_w(w) * shape_.out_channels);
}

void Conv2d::forward_accumulate(const float* x, int64_t batch, int64_t h, int64_t w, float* y,
                                int64_t workspace_bytes) const {
  run(x, batch, h, w, y, true, workspace_bytes);
}

void Conv2d::run(const float* x, int64_t batch, int64_t h, int64_t w, float* y, bool accumulate,
                 int64_t workspace_bytes) const {
  if (batch <= 0) return;
  const int64_t oh = out_h(h), ow = out_w(w);
  const int64_t ci = shape_.in_channels, co = shape_.out_channels;
  if (pointwise()) {
    if (accumulate)
      gemm_.forward_accumulate(x, batch * h * w, y);
    else
      gemm_.forward(x, batch * h * w, y);
    return;
  }
  const int64_t kh = shape_.kernel_h, kw = shape_.kernel_w, st = shape_.stride, pad = shape_.padding;
  const int64_t k = ci * kh * kw;
  const int64_t rows_per_image = oh * ow;
  const int64_t bytes_per_image = rows_per_image * k * static_cast<int64_t>(sizeof(float));
  const int64_t group = std::clamp<int64_t>(workspace_bytes / std::max<int64_t>(bytes_per_image, 1), 1, batch);
  std::vector<float> col(static_cast<size_t>(group * rows_per_image * k));
  for (int64_t b0 = 0; b0 < batch; b0 += group) {
    const int64_t nb = std::min(group, batch - b0);
    const int64_t rows = nb * rows_per_image;
#pragma omp parallel for schedule(static) if (rows * k > (int64_t{1} << 16))
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = b0 + r / rows_per_image;
      const int64_t oy = (r % rows_per_image) / ow, ox = r % ow;
      const float* img = x + b * h * w * ci;
      float* dst = col.data() + r * k;
      for (int64_t ky = 0; ky < kh; ++ky) {
        const int64_t iy = oy * st - pad + ky;
        for (int64_t kx = 0; kx < kw; ++kx, dst += ci) {
          const int64_t ix = ox * st - pad + kx;
          if (iy < 0 || iy >= h || ix < 0 || ix >= w)
            std::memset(dst, 0, static_cast<size_t>(ci) * sizeof(float));
          else
            std::memcpy(dst, img + (iy * w + ix) * ci, static_cast<size_t>(ci) * sizeof(float));
        }
      }
    }
    float* yb = y + b0 * rows_per_image * co;
    if (accumulate)
      gemm_.forward_accumulate(col.data(), rows, yb);
    else
      gemm_.forward(col.data(), rows, yb);
  }
}

void relu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void nchw_to_nhwc(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, float* y) {
  const int64_t hw = h * w;
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * c * hw;
    float* yb = y + b * c * hw;
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < hw; ++p) yb[p * c + ch] = xb[ch * hw + p];
  }
}

void nhwc_to_nchw(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, float* y) {
  const int64_t hw = h * w;
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * c * hw;
    float* yb = y + b * c * hw;
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t ch = 0; ch < c; ++ch) yb[ch * hw + p] = xb[p * c + ch];
  }
}

void conv2d_reference(const float* x, int64_t batch, int64_t h, int64_t w, const float* weight, const float* bias,
                      const ConvShape& s, float* y) {
  const int64_t oh = conv_out_size(h, s.kernel_h, s.stride, s.padding);
  const int64_t ow = conv_out_size(w, s.kernel_w, s.stride, s.padding);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t o = 0; o < s.out_channels; ++o)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          double acc = bias ? static_cast<double>(bias[o]) : 0.0;
          for (int64_t c = 0; c < s.in_channels; ++c)
            for (int64_t ky = 0; ky < s.kernel_h; ++ky) {
              const int64_t iy = oy * s.stride - s.padding + ky;
              if (iy < 0 || iy >= h) continue;
              for (int64_t kx = 0; kx < s.kernel_w; ++kx) {
                const int64_t ix = ox * s.stride - s.padding + kx;
                if (ix < 0 || ix >= w) continue;
                acc += static_cast<double>(x[((b * s.in_channels + c) * h + iy) * w + ix]) *
                       weight[((o * s.in_channels + c) * s.kernel_h + ky) * s.kernel_w + kx];
              }
            }
          y[((b * s.out_channels + o) * oh + oy) * ow + ox] = static_cast<float>(acc);
        }
}

void batchnorm_reference(float* x, int64_t batch, int64_t channels, int64_t hw, const float* gamma, const float* beta,
                         const float* mean, const float* var, double eps) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c) {
      const double inv = 1.0 / std::sqrt(static_cast<double>(var[c]) + eps);
      float* p = x + (b * channels + c) * hw;
      for (int64_t i = 0; i < hw; ++i)
        p[i] = static_cast<float>((static_cast<double>(p[i]) - mean[c]) * inv * gamma[c] + beta[c]);
    }
}

}  // namespace clipkit
