#include <set>

#include "clipkit/error.h"
#include "io/checkpoint.h"

namespace clipkit {

const Tensor& Checkpoint::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end())
    throw Error(ErrorCode::NotFound, "checkpoint '" + path + "' has no tensor '" + name + "'");
  return it->second;
}

std::vector<float> Checkpoint::f32(const std::string& name, const Shape& expected) const {
  const Tensor& t = get(name);
  if (t.shape != expected)
    throw Error(ErrorCode::Shape, "checkpoint '" + path + "': tensor '" + name + "' has shape " + shape_str(t.shape) +
                                      ", expected " + shape_str(expected));
  if (!t.is_float())
    throw Error(ErrorCode::Shape, "checkpoint '" + path + "': tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                                      ", expected a floating-point type");
  return t.to_f32();
}

std::vector<float> Checkpoint::f32(const std::string& name) const { return get(name).to_f32(); }

std::string Checkpoint::weight_dtypes() const {
  std::set<std::string> seen;
  for (const auto& [n, t] : tensors)
    if (t.is_float()) seen.insert(dtype_name(t.dtype));
  std::string out;
  for (const auto& s : seen) out += (out.empty() ? "" : "+") + s;
  return out;
}

}  // namespace clipkit
