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

// Replaces every (I8 "W", F32 "W.int8_scale") pair by the dequantised F32 "W". A model loaded with
// dtype "int8" re-quantises these weights to exactly the stored integers. Throws Error(Format)
// naming the file and tensor for an orphan scale, a non-I8 weight or a scale of the wrong shape.
void dequantize_int8_tensors(std::map<std::string, Tensor>& tensors, const std::string& path);

}  // namespace clipkit
