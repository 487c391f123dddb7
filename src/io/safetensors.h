// safetensors files: u64 little-endian header length, JSON header, raw little-endian data.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace clipkit {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;           // views into the memory-mapped file
  std::map<std::string, std::string> metadata;     // "__metadata__"
  std::vector<std::string> order;                  // tensor names in data-offset order
};

// Memory-maps and validates the file: header bounds, JSON, dtypes, offsets inside the data
// and consistent with shape × dtype. Throws Error(Format) naming the file and the tensor.
SafetensorsFile read_safetensors(const std::string& path);
// True when the first bytes look like a safetensors header.
bool looks_like_safetensors(const uint8_t* data, size_t size);

// Writes tensors (in the given order) atomically; each tensor's data is copied verbatim. The data
// section starts at a multiple of `align` bytes (a multiple of 8; the header is padded with spaces),
// so a tensor whose offset is a multiple of it is that aligned in a mapping of the file.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {}, size_t align = 8);

}  // namespace clipkit
