// 2-D convolution (PyTorch Conv2d semantics: zero padding, no dilation, one group) and
// BatchNorm folding. The fast path works on channels-last (NHWC) activations: a 1×1 stride-1
// convolution is a single GEMM over batch·H·W rows, anything else goes through im2col + GEMM,
// with the GEMM done by `Linear` (so the weight storage follows the model's WeightFormat).
// The *_reference functions are plain scalar loops over NCHW data with double accumulation;
// the tests compare the fast path against them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/linear.h"

namespace clipkit {

struct ConvShape {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t kernel_h = 1;
  int64_t kernel_w = 1;
  int64_t stride = 1;
  int64_t padding = 0;
};

// Output size of one spatial dimension: floor((in + 2·padding - kernel) / stride) + 1.
// Throws Error(Shape) when the input is smaller than the padded kernel.
int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding);

// Eval-mode BatchNorm y = (x - mean) / sqrt(var + eps) · gamma + beta folded into the preceding
// bias-free convolution: weight [out, in, kh, kw] is scaled per output channel in place and the
// returned vector is the new bias [out]. Computed in double, rounded once to float.
// Throws Error(Shape) when a variance is negative (the message names `what`).
std::vector<float> fold_batchnorm(std::vector<float>& weight, int64_t out_channels, const float* gamma,
                                  const float* beta, const float* mean, const float* var, double eps,
                                  const std::string& what = "batchnorm");

enum class ConvEpilogue { None, Relu };

class Conv2d {
 public:
  Conv2d() = default;
  // weight: [out, in, kh, kw] (PyTorch layout); bias: [out] or empty.
  Conv2d(const std::vector<float>& weight, std::vector<float> bias, const ConvShape& shape,
         WeightFormat format = WeightFormat::F32);

  const ConvShape& shape() const { return shape_; }
  int64_t out_h(int64_t h) const { return conv_out_size(h, shape_.kernel_h, shape_.stride, shape_.padding); }
  int64_t out_w(int64_t w) const { return conv_out_size(w, shape_.kernel_w, shape_.stride, shape_.padding); }
  int64_t parameter_count() const { return gemm_.parameter_count(); }

  // x: NHWC [batch, h, w, in] -> y: NHWC [batch, out_h, out_w, out]. x and y must not alias.
  // workspace_bytes bounds the im2col buffer (images are processed in groups that fit; at
  // least one image at a time).
  void forward(const float* x, int64_t batch, int64_t h, int64_t w, float* y,
               ConvEpilogue epilogue = ConvEpilogue::None, int64_t workspace_bytes = kDefaultWorkspace) const;
  // y += conv(x) (bias included), for residual connections.
  void forward_accumulate(const float* x, int64_t batch, int64_t h, int64_t w, float* y,
                          int64_t workspace_bytes = kDefaultWorkspace) const;

  static constexpr int64_t kDefaultWorkspace = int64_t{64} << 20;

 private:
  void run(const float* x, int64_t batch, int64_t h, int64_t w, float* y, bool accumulate,
           int64_t workspace_bytes) const;
  bool pointwise() const;

  ConvShape shape_;
  Linear gemm_;  // [out, kh·kw·in] with the reduction ordered (ky, kx, ci) to match NHWC im2col
};

// In-place max(x, 0).
void relu_inplace(float* x, int64_t n);

// Layout changes for a batch of images: [batch, c, h, w] <-> [batch, h, w, c].
void nchw_to_nhwc(const float* x, int64_t batch, int64_t c, int64_t h, int64_t w, float* y);
void nhwc_to_nchw(const float* x, int64_t batch, int64_t h, int64_t w, int64_t c, float* y);

// Scalar direct convolution, NCHW: x [batch, in, h, w], weight [out, in, kh, kw], bias [out] or
// nullptr -> y [batch, out, oh, ow].
void conv2d_reference(const float* x, int64_t batch, int64_t h, int64_t w, const float* weight, const float* bias,
                      const ConvShape& shape, float* y);

// Scalar eval-mode BatchNorm over NCHW data, in place, as PyTorch computes it:
// (x - mean) / sqrt(var + eps) · gamma + beta.
void batchnorm_reference(float* x, int64_t batch, int64_t channels, int64_t hw, const float* gamma, const float* beta,
                         const float* mean, const float* var, double eps);

}  // namespace clipkit
