// NumPy .npy files (format 1.0): float32 / int32 / int64 C-order arrays.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace clipkit {

// Serialises a C-order array as .npy bytes. dtype: F32, I32 or I64.
std::string npy_encode(DType dtype, const Shape& shape, const void* data);
// Writes a .npy file atomically.
void write_npy(const std::string& path, DType dtype, const Shape& shape, const void* data);
inline void write_npy(const std::string& path, const Shape& shape, const float* data) {
  write_npy(path, DType::F32, shape, data);
}
// Reads a little-endian C-order .npy (f4, f8, i4, i8, u1, f2). Throws Error(Format) naming the file.
Tensor read_npy(const std::string& path);

}  // namespace clipkit
