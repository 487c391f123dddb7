#include "kernels/activation.h"

#include "clipkit/error.h"

namespace clipkit {

Activation activation_from_name(const std::string& name) {
  if (name == "quick_gelu") return Activation::QuickGelu;
  if (name == "gelu") return Activation::Gelu;
  if (name == "none") return Activation::None;
  throw Error(ErrorCode::InvalidArgument, "unknown activation '" + name + "' (expected quick_gelu or gelu)");
}

const char* activation_name(Activation act) {
  switch (act) {
    case Activation::QuickGelu: return "quick_gelu";
    case Activation::Gelu: return "gelu";
    case Activation::None: break;
  }
  return "none";
}

}  // namespace clipkit
