// A linear layer y = x · Wᵀ + b with weights packed once at load for the GEMM backend.
// Every projection in the encoders goes through this class, so the weight storage
// (f32, f16, int8) is decided here and nowhere else.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clipkit {

enum class Activation { None, QuickGelu, Gelu };

enum class WeightFormat { F32, F16, Int8 };

class Linear {
 public:
  Linear() = default;
  // weight: [out, in] row-major (PyTorch layout); bias: [out] or empty.
  Linear(std::vector<float> weight, std::vector<float> bias, int64_t in, int64_t out,
         WeightFormat format = WeightFormat::F32);

  // y[rows, out] = act(x[rows, in] · Wᵀ + b). x and y must not alias.
  void forward(const float* x, int64_t rows, float* y, Activation act = Activation::None) const;
  // y += x · Wᵀ + b (for residual connections).
  void forward_accumulate(const float* x, int64_t rows, float* y) const;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t parameter_count() const { return in_ * out_ + static_cast<int64_t>(bias_.size()); }

 private:
  int64_t in_ = 0, out_ = 0;
  WeightFormat format_ = WeightFormat::F32;
  std::vector<float> weight_;  // [out, in]
  std::vector<float> bias_;
};

// Applies an activation in place (scalar-exact definitions: QuickGELU x·σ(1.702x), GELU erf form).
void apply_activation(float* x, int64_t n, Activation act);

}  // namespace clipkit
