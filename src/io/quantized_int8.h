// Int8-quantised checkpoints written by `clipkit convert --dtype int8` (docs/performance.md):
// a quantised weight "W" is stored as an I8 tensor named "W" (same shape as the float weight,
// first axis = output channels) plus an F32 tensor "W.int8_scale" of shape [shape[0]] holding
// one symmetric scale per output channel (w = q · scale). The file's metadata carries
// "clipkit.quantization" = "int8-per-channel-symmetric".
#pragma once
#include <map>
#include <string>

#include "core/tensor.h"

namespace clipkit {

inline constexpr const char* kInt8ScaleSuffix = ".int8_scale";
inline constexpr const char* kQuantizationKey = "clipkit.quantization";
inline constexpr const char* kQuantizationInt8 = "int8-per-channel-symmetric";

// Joins every (I8 "W", F32 "W.int8_scale") pair into one tensor "W": the I8 data with its row
// scales attached (Tensor::row_scale), which reads as the dequantised floats wherever floats are
// asked for, and lets an int8 model use the stored integers as they are (no float copy, no
// re-quantisation). Throws Error(Format) naming the file and tensor for an orphan scale, a non-I8
// weight, a scale of the wrong shape or an invalid (negative or non-finite) scale.
void attach_int8_scales(std::map<std::string, Tensor>& tensors, const std::string& path);

}  // namespace clipkit
