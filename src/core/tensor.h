// A typed, shaped, read-only view of tensor data with shared ownership of its storage
// (a memory-mapped file, a decompressed buffer, or a vector). Checkpoint readers produce
// these; encoders convert what they need to float32 once at load.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clipkit {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "F32", "F16", ... as safetensors spells them
DType dtype_from_name(const std::string& name);  // throws Error(Format) for unknown names

using Shape = std::vector<int64_t>;
struct PackedWeight;  // core/packed_weight.h
std::string shape_str(const Shape& s);  // "[3, 224, 224]"
int64_t shape_numel(const Shape& s);

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;            // contiguous, row-major, little-endian
  std::shared_ptr<const void> owner;     // keeps `data` alive
  // `data` points into a read-only file mapping: its pages may be dropped after use (they are
  // read back from the file if touched again). Never set for heap buffers.
  bool mapped = false;
  // Set on an I8 tensor that stores quantised floating weights (`clipkit convert --dtype int8`):
  // element [r, ...] stands for q · scale[r], one scale per first-axis row. Such a tensor counts as
  // floating, and to_f32() returns those products.
  std::shared_ptr<const std::vector<float>> row_scale;
  // Set on a weight stored in a kernel's blocked layout (`clipkit convert`, core/packed_weight.h):
  // `data` is then null and the values are read through the layout (to_f32, value_f32), in
  // `dtype` (F32, F16, or I8 with row_scale).
  std::shared_ptr<const PackedWeight> packed;

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool is_float() const {
    return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F64 || row_scale;
  }
  bool is_quantized_int8() const { return dtype == DType::I8 && row_scale; }
  // Value of element `i` (flat index) as float32: the same number to_f32()[i] holds.
  float value_f32(int64_t i) const;

  // Converts to float32 (any numeric dtype).
  std::vector<float> to_f32() const;
  // Makes a tensor that owns a copy of `values`.
  static Tensor from_f32(std::vector<float> values, Shape shape);
  static Tensor from_bytes(DType dtype, Shape shape, std::vector<uint8_t> bytes);
};

}  // namespace clipkit
