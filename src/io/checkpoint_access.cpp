#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <set>

#include "clipkit/error.h"
#include "core/half.h"
#include "io/checkpoint.h"

namespace clipkit {

const Tensor& Checkpoint::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end())
    throw Error(ErrorCode::NotFound, "checkpoint '" + path + "' has no tensor '" + name + "'");
  return it->second;
}

namespace {

void check_float_shape(const Checkpoint& c, const std::string& name, const Tensor& t, const Shape& expected) {
  if (t.shape != expected)
    throw Error(ErrorCode::Shape, "checkpoint '" + c.path + "': tensor '" + name + "' has shape " + shape_str(t.shape) +
                                      ", expected " + shape_str(expected));
  if (!t.is_float())
    throw Error(ErrorCode::Shape, "checkpoint '" + c.path + "': tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                                      ", expected a floating-point type");
}

}  // namespace

Checkpoint::F32Span Checkpoint::f32_span(const std::string& name, const Shape& expected) const {
  const Tensor& t = get(name);
  check_float_shape(*this, name, t, expected);
  F32Span s;
  if (t.dtype == DType::F32 && !t.packed && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0) {
    s.data = static_cast<const float*>(t.data);
  } else {
    s.owned = t.to_f32();
    s.data = s.owned.data();
  }
  return s;
}

Checkpoint::SharedF32 Checkpoint::f32_shared(const std::string& name, const Shape& expected) const {
  const Tensor& t = get(name);
  check_float_shape(*this, name, t, expected);
  SharedF32 s;
  s.size = t.numel();
  if (t.dtype == DType::F32 && !t.packed && t.owner && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0) {
    s.data = static_cast<const float*>(t.data);
    s.owner = t.owner;
  } else {
    auto copy = std::make_shared<std::vector<float>>(t.to_f32());
    s.data = copy->data();
    s.owner = std::move(copy);
  }
  return s;
}

Checkpoint::SharedTable Checkpoint::table_shared(const std::string& name, const Shape& expected) const {
  const Tensor& t = get(name);
  check_float_shape(*this, name, t, expected);
  SharedTable s;
  s.size = t.numel();
  if (t.dtype == DType::F16 && !t.packed && t.owner && reinterpret_cast<uintptr_t>(t.data) % alignof(uint16_t) == 0) {
    s.f16 = static_cast<const uint16_t*>(t.data);
    s.owner = t.owner;
    return s;
  }
  SharedF32 f = f32_shared(name, expected);
  s.f32 = f.data;
  s.owner = std::move(f.owner);
  return s;
}

const float* Checkpoint::SharedTable::row(int64_t r, int64_t width, float* scratch) const {
  if (f32) return f32 + r * width;
  const uint16_t* src = f16 + r * width;
  for (int64_t c = 0; c < width; ++c) scratch[c] = half_to_float(src[c]);
  return scratch;
}

void Checkpoint::release_pages(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end() || !it->second.mapped || it->second.nbytes() == 0) return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(it->second.data);
  const uintptr_t first = (begin + page - 1) / page * page;       // whole pages inside the tensor only:
  const uintptr_t last = (begin + it->second.nbytes()) / page * page;  // neighbours keep theirs
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::vector<float> Checkpoint::f32(const std::string& name, const Shape& expected) const {
  const Tensor& t = get(name);
  if (t.shape != expected)
    throw Error(ErrorCode::Shape, "checkpoint '" + path + "': tensor '" + name + "' has shape " + shape_str(t.shape) +
                                      ", expected " + shape_str(expected));
  if (!t.is_float())
    throw Error(ErrorCode::Shape, "checkpoint '" + path + "': tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                                      ", expected a floating-point type");
  std::vector<float> v = t.to_f32();
  release_pages(name);  // the caller holds its own copy now
  return v;
}

std::vector<float> Checkpoint::f32(const std::string& name) const { return get(name).to_f32(); }

std::string Checkpoint::weight_dtypes() const {
  std::set<std::string> seen;
  for (const auto& [n, t] : tensors)
    if (t.is_float()) seen.insert(t.is_quantized_int8() ? "I8" : dtype_name(t.dtype));
  std::string out;
  for (const auto& s : seen) out += (out.empty() ? "" : "+") + s;
  return out;
}

}  // namespace clipkit
