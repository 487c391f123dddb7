#include "io/quantized_int8.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "clipkit/error.h"

namespace clipkit {

void dequantize_int8_tensors(std::map<std::string, Tensor>& tensors, const std::string& path) {
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
    const Tensor& q = w->second;
    const Tensor& s = tensors.at(scale_name);
    if (q.dtype != DType::I8) throw bad(std::string("has dtype ") + dtype_name(q.dtype) + ", expected I8");
    if (q.shape.empty()) throw bad("is a scalar");
    if (s.dtype != DType::F32 || s.shape != Shape{q.shape[0]})
      throw bad("has scale " + std::string(dtype_name(s.dtype)) + " " + shape_str(s.shape) + ", expected F32 [" +
                std::to_string(q.shape[0]) + "]");
    const int64_t out = q.shape[0];
    const int64_t per = out > 0 ? q.numel() / out : 0;
    std::vector<float> scale(static_cast<size_t>(out));
    std::memcpy(scale.data(), s.data, scale.size() * sizeof(float));
    const int8_t* qd = static_cast<const int8_t*>(q.data);
    std::vector<float> values(static_cast<size_t>(q.numel()));
    for (int64_t o = 0; o < out; ++o) {
      if (!std::isfinite(scale[static_cast<size_t>(o)]) || scale[static_cast<size_t>(o)] < 0.0f)
        throw bad("has an invalid scale for channel " + std::to_string(o));
      for (int64_t i = 0; i < per; ++i)
        values[static_cast<size_t>(o * per + i)] = static_cast<float>(qd[o * per + i]) * scale[static_cast<size_t>(o)];
    }
    Shape shape = q.shape;
    w->second = Tensor::from_f32(std::move(values), std::move(shape));
    tensors.erase(scale_name);
  }
}

}  // namespace clipkit
