#include "kernels/linear.h"

#include <cmath>

#include "clipkit/error.h"
#include "kernels/gemm.h"

namespace clipkit {

Linear::Linear(std::vector<float> weight, std::vector<float> bias, int64_t in, int64_t out, WeightFormat format)
    : in_(in), out_(out), format_(format), weight_(std::move(weight)), bias_(std::move(bias)) {
  if (static_cast<int64_t>(weight_.size()) != in * out)
    throw Error(ErrorCode::Shape, "linear layer weight has " + std::to_string(weight_.size()) + " values, expected " +
                                      std::to_string(in * out));
  if (!bias_.empty() && static_cast<int64_t>(bias_.size()) != out)
    throw Error(ErrorCode::Shape, "linear layer bias has " + std::to_string(bias_.size()) + " values, expected " +
                                      std::to_string(out));
}

void Linear::forward(const float* x, int64_t rows, float* y, Activation act) const {
  if (!bias_.empty()) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < out_; ++j) y[r * out_ + j] = bias_[j];
  }
  sgemm(false, true, rows, out_, in_, 1.0f, x, in_, weight_.data(), in_, bias_.empty() ? 0.0f : 1.0f, y, out_);
  if (act != Activation::None) apply_activation(y, rows * out_, act);
}

void Linear::forward_accumulate(const float* x, int64_t rows, float* y) const {
  if (!bias_.empty()) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < out_; ++j) y[r * out_ + j] += bias_[j];
  }
  sgemm(false, true, rows, out_, in_, 1.0f, x, in_, weight_.data(), in_, 1.0f, y, out_);
}

void apply_activation(float* x, int64_t n, Activation act) {
  switch (act) {
    case Activation::None: return;
    case Activation::QuickGelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
      return;
    case Activation::Gelu:
      for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
      return;
  }
}

}  // namespace clipkit
