// Scalar reference definitions of the MLP activations (the fast path is apply_activation in
// kernels/linear.h): QuickGELU(x) = x · σ(1.702 x) as in CLIP, GELU(x) = x · Φ(x) (erf form, as
// torch.nn.GELU and Hugging Face "gelu").
#pragma once
#include <cmath>
#include <string>

#include "kernels/linear.h"

namespace clipkit {

inline double quick_gelu_reference(double x) { return x / (1.0 + std::exp(-1.702 * x)); }
inline double gelu_reference(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// "quick_gelu" | "gelu" -> Activation; throws Error(InvalidArgument) naming the value otherwise.
Activation activation_from_name(const std::string& name);
const char* activation_name(Activation act);

}  // namespace clipkit
