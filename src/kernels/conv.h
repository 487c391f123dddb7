// 2-D convolution (PyTorch Conv2d semantics: zero padding, no dilation, one group) and
// BatchNorm folding. The fast path (`Conv2d`) is oneDNN's convolution primitive on channels-last
// (NHWC) or blocked (nChw16c) activations, direct or Winograd. The *_reference functions are plain scalar loops over NCHW data with
// double accumulation; the tests compare the fast path against them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/act_layout.h"
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

// Auto: oneDNN's Winograd F(2x2, 3x3) / F(4x4, 3x3) kernels where they apply (F32 weights, 3x3
// kernel, stride 1, Blocked16 input and output, a CPU oneDNN has Winograd kernels for, see
// winograd_available, and at most two Winograd weight layouts per layer), direct convolution
// elsewhere. Winograd
// measured 1.5-2.4x faster than direct on RN50's 3x3 layers at batch 16 and as accurate (see
// docs/performance.md), but its transformed weights take 1.8x (batch <= 2) or 4x (larger batches)
// the space of the plain ones. Direct: direct convolution only (least memory).
enum class ConvAlgorithm { Auto, Direct };

// Whether oneDNN offers an optimised (non-reference) Winograd kernel on this CPU for an F32 3x3,
// stride-1, padding-1 convolution from `in` to `out` channels over a batch x h x w input in the
// blocked layout. oneDNN decides by ISA and shape; where it says no, ConvAlgorithm::Auto runs
// the direct algorithm.
bool winograd_available(int64_t in_channels, int64_t out_channels, int64_t batch, int64_t h, int64_t w);

// How a convolution is called: the layouts of its input and output and the algorithm policy.
// Fixed at construction.
struct ConvIo {
  ActLayout src = ActLayout::Nhwc;
  ActLayout dst = ActLayout::Nhwc;
  ConvAlgorithm algorithm = ConvAlgorithm::Auto;
};

// A 2-D convolution with its weights prepared once, at construction, for oneDNN's convolution
// primitive (docs/performance.md, "ResNet convolutions"). Activations are float32 in the layouts
// given by ConvIo (channels-last by default); bias, ReLU and the residual sum are fused into the
// primitive. Primitives are created
// lazily per input shape and cached (bounded); forward is const and may run from several threads.
//
//   F32  — weights reordered once into the blocked layout the primitive asks for.
//   F16  — that layout stored as IEEE half, widened to f32 at every call (fp32 math).
//   Int8 — per-output-channel symmetric int8 weights (kernels/int8.h); activations quantised
//          dynamically per image: u8 with scale max/255 when the image's input is non-negative
//          (ReLU outputs), otherwise u8 = q + 128 with a zero point of 128 and scale max|x|/127.
//          int32 accumulation; weight scales, the image's scale, bias, residual and ReLU are
//          applied by the primitive; the output is f32. NHWC input and output only.
class Conv2d {
 public:
  Conv2d() = default;
  // weight: [out, in, kh, kw] (PyTorch layout); bias: [out] or empty. probe_h/probe_w (and
  // probe_batch): the input size the weights are first laid out for (the layout oneDNN wants can
  // depend on the problem size; other sizes that want another layout get a one-time copy).
  // 0 = a default size. io: the activation layouts forward() reads and writes.
  Conv2d(const std::vector<float>& weight, std::vector<float> bias, const ConvShape& shape,
         WeightFormat format = WeightFormat::F32, int64_t probe_h = 0, int64_t probe_w = 0, int64_t probe_batch = 0,
         ConvIo io = {});

  const ConvShape& shape() const { return shape_; }
  WeightFormat format() const { return format_; }
  const ConvIo& io() const { return io_; }
  int64_t out_h(int64_t h) const { return conv_out_size(h, shape_.kernel_h, shape_.stride, shape_.padding); }
  int64_t out_w(int64_t w) const { return conv_out_size(w, shape_.kernel_w, shape_.stride, shape_.padding); }
  int64_t parameter_count() const;
  // Bytes held for the prepared weights (all layouts currently cached).
  int64_t weight_bytes() const;

  // x: [batch, in, h, w] in io().src -> y: [batch, out, out_h, out_w] in io().dst,
  // y = epilogue(conv(x) + b). x and y must not overlap.
  void forward(const float* x, int64_t batch, int64_t h, int64_t w, float* y,
               ConvEpilogue epilogue = ConvEpilogue::None) const;
  // Residual form: y = epilogue(conv(x) + b + y), y holding the shortcut on entry.
  void forward_accumulate(const float* x, int64_t batch, int64_t h, int64_t w, float* y,
                          ConvEpilogue epilogue = ConvEpilogue::None) const;

  // The oneDNN implementation that runs for this input size, e.g. "brgconv:avx512_core" or
  // "jit_wino_4x3:avx512_core".
  std::string implementation(int64_t batch, int64_t h, int64_t w) const;

  struct Impl;

 private:
  void run(const float* x, int64_t batch, int64_t h, int64_t w, float* y, bool accumulate, ConvEpilogue epilogue) const;

  ConvShape shape_;
  WeightFormat format_ = WeightFormat::F32;
  ConvIo io_;
  std::shared_ptr<Impl> impl_;  // shared between copies; immutable apart from its caches
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
