#include "core/tensor.h"

#include <cstring>

#include "clipkit/error.h"
#include "core/half.h"
#include "core/packed_weight.h"

namespace clipkit {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::Bool: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "F64") return DType::F64;
  if (n == "I64") return DType::I64;
  if (n == "I32") return DType::I32;
  if (n == "I16") return DType::I16;
  if (n == "I8") return DType::I8;
  if (n == "U8") return DType::U8;
  if (n == "BOOL") return DType::Bool;
  throw Error(ErrorCode::Format, "unsupported tensor dtype '" + n + "'");
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

template <typename T>
static void convert_plain(const void* src, float* dst, int64_t n) {
  const T* p = static_cast<const T*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]);
}

std::vector<float> Tensor::to_f32() const {
  const int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  if (packed) {
    const int64_t rows = packed->out, per = packed->in;
    std::vector<uint8_t> plain(static_cast<size_t>(rows * per) * dtype_size(packed->dtype));
    packed->unpack_rows(0, rows, plain.data());
    Tensor t;
    t.dtype = packed->dtype;
    t.shape = shape;
    t.data = plain.data();
    t.row_scale = row_scale;
    return t.to_f32();
  }
  if (is_quantized_int8()) {
    const int64_t rows = shape.empty() ? 0 : shape[0];
    const int64_t per = rows > 0 ? n / rows : 0;
    const int8_t* q = static_cast<const int8_t*>(data);
    for (int64_t r = 0; r < rows; ++r) {
      const float sc = (*row_scale)[static_cast<size_t>(r)];
      for (int64_t i = 0; i < per; ++i) out[static_cast<size_t>(r * per + i)] = static_cast<float>(q[r * per + i]) * sc;
    }
    return out;
  }
  switch (dtype) {
    case DType::F32: if (n) std::memcpy(out.data(), data, static_cast<size_t>(n) * 4); break;
    case DType::F16: {
      const uint16_t* p = static_cast<const uint16_t*>(data);
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(p[i]);
      break;
    }
    case DType::BF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(p[i]);
      break;
    }
    case DType::F64: convert_plain<double>(data, out.data(), n); break;
    case DType::I64: convert_plain<int64_t>(data, out.data(), n); break;
    case DType::I32: convert_plain<int32_t>(data, out.data(), n); break;
    case DType::I16: convert_plain<int16_t>(data, out.data(), n); break;
    case DType::I8: convert_plain<int8_t>(data, out.data(), n); break;
    case DType::U8: case DType::Bool: convert_plain<uint8_t>(data, out.data(), n); break;
  }
  return out;
}

float Tensor::value_f32(int64_t i) const {
  if (packed) {
    const int64_t r = i / packed->in;
    return packed->value(r, i % packed->in) * (row_scale ? (*row_scale)[static_cast<size_t>(r)] : 1.0f);
  }
  if (is_quantized_int8()) {
    const int64_t per = numel() / shape[0];
    return static_cast<float>(static_cast<const int8_t*>(data)[i]) * (*row_scale)[static_cast<size_t>(i / per)];
  }
  Tensor one;
  one.dtype = dtype;
  one.shape = {1};
  one.data = static_cast<const uint8_t*>(data) + i * static_cast<int64_t>(dtype_size(dtype));
  return one.to_f32()[0];
}

Tensor Tensor::from_f32(std::vector<float> values, Shape shape) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size()))
    throw Error(ErrorCode::Shape, "tensor of " + std::to_string(values.size()) + " values cannot have shape " + shape_str(shape));
  auto holder = std::make_shared<std::vector<float>>(std::move(values));
  Tensor t;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  t.data = holder->data();
  t.owner = holder;
  return t;
}

Tensor Tensor::from_bytes(DType dtype, Shape shape, std::vector<uint8_t> bytes) {
  if (static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype) != bytes.size())
    throw Error(ErrorCode::Shape, "tensor of " + std::to_string(bytes.size()) + " bytes cannot have shape " +
                                      shape_str(shape) + " and dtype " + dtype_name(dtype));
  auto holder = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = holder->data();
  t.owner = holder;
  return t;
}

}  // namespace clipkit
