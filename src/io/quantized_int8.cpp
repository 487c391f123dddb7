#include "io/quantized_int8.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "clipkit/error.h"

namespace clipkit {

void attach_int8_scales(std::map<std::string, Tensor>& tensors, const std::string& path) {
  const std::string suffix = kInt8ScaleSuffix;
  std::vector<std::string> scales;
  for (const auto& [name, t] : tensors)
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      scales.push_back(name);
  for (const std::string& scale_name : scales) {
    const std::string weight_name = scale_name.substr(0, scale_name.size() - suffix.size());
    auto bad = [&](const std::string& why) {
      return Error(ErrorCode::Format, "checkpoint '" + path + "': int8 tensor '" + weight_name + "' " + why);
    };
    auto w = tensors.find(weight_name);
    if (w == tensors.end()) throw bad("is missing (its scale '" + scale_name + "' is present)");
    Tensor& q = w->second;
    const Tensor& s = tensors.at(scale_name);
    if (q.dtype != DType::I8) throw bad(std::string("has dtype ") + dtype_name(q.dtype) + ", expected I8");
    if (q.shape.empty()) throw bad("is a scalar");
    if (s.dtype != DType::F32 || s.shape != Shape{q.shape[0]})
      throw bad("has scale " + std::string(dtype_name(s.dtype)) + " " + shape_str(s.shape) + ", expected F32 [" +
                std::to_string(q.shape[0]) + "]");
    auto scale = std::make_shared<std::vector<float>>(static_cast<size_t>(q.shape[0]));
    std::memcpy(scale->data(), s.data, scale->size() * sizeof(float));
    for (size_t o = 0; o < scale->size(); ++o)
      if (!std::isfinite((*scale)[o]) || (*scale)[o] < 0.0f) throw bad("has an invalid scale for channel " + std::to_string(o));
    q.row_scale = std::move(scale);
    tensors.erase(scale_name);
  }
}

}  // namespace clipkit
