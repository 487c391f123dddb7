// Packed weights in safetensors files written by `clipkit convert` (core/packed_weight.h):
// a weight "W" stored in the kernels' blocked layout is
//   - the tensor "W.packed": U8, the pieces' bytes one after the other (each 64-byte aligned in
//     the file, so that a load uses them in place);
//   - its description in the metadata "clipkit.packed_weights", a JSON object naming each packed
//     weight: {"W": {"dtype": "F32"|"F16"|"I8", "shape": [...], "pieces": [{"row0", "rows",
//     "offset", "bytes", "dims", "padded", "strides", "blocks": [[dim, size], ...]}, ...]}};
//   - for I8 weights also "W.int8_scale" (src/io/quantized_int8.h) and "W.int8_zero_shift"
//     (F32 [out]: 128 · scale · Σ q per output row).
// "clipkit.packed_layout" holds the version of this scheme, "clipkit.packed_isa" the CPU features
// of the kernels whose layouts were stored (informative: a load compares the layouts themselves).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/packed_weight.h"
#include "core/tensor.h"

namespace clipkit {

inline constexpr const char* kPackedLayoutKey = "clipkit.packed_layout";
inline constexpr const char* kPackedLayoutVersion = "1";
inline constexpr const char* kPackedIsaKey = "clipkit.packed_isa";
inline constexpr const char* kPackedWeightsKey = "clipkit.packed_weights";
inline constexpr const char* kPackedSuffix = ".packed";
inline constexpr const char* kZeroShiftSuffix = ".int8_zero_shift";

// Replaces every "W.packed" tensor described in the metadata (and its "W.int8_zero_shift") by the
// logical tensor "W" with Tensor::packed set, reading as the weight's values. Throws Error(Format)
// naming the file for a packed-layout version this build does not read, a description that does
// not fit the stored bytes, or a packed tensor without a description.
void attach_packed_weights(std::map<std::string, Tensor>& tensors, const std::map<std::string, std::string>& metadata,
                           const std::string& path);

// The tensors and the metadata entry that store `weights` (name → packed weight whose pieces point
// at the bytes to write), in the order a file should hold them: the packed bytes first, in
// `order` (names of `weights`; by name when empty), each weight's bytes right after the previous
// one's, then the int8 zero shifts.
struct PackedTensors {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::string description;  // the value of kPackedWeightsKey
};
PackedTensors packed_tensors(const std::map<std::string, PackedWeight>& weights, const std::map<std::string, Shape>& shapes,
                             const std::vector<std::string>& order = {});

}  // namespace clipkit
