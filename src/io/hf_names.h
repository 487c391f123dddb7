// Hugging Face CLIPModel tensor names -> OpenAI clip/model.py names.
#pragma once
#include <map>
#include <string>

#include "core/tensor.h"

namespace clipkit {

// True when the names are Hugging Face CLIPModel ones (text_model.*, vision_model.*, *_projection.weight).
bool has_hf_clip_names(const std::map<std::string, Tensor>& tensors);

// Renames and reshapes: q/k/v projections are concatenated (row blocks q, k, v) into
// attn.in_proj_weight / in_proj_bias, visual_projection.weight and text_projection.weight are
// transposed into visual.proj and text_projection, `position_ids` buffers are dropped. Throws
// Error(Format) naming `path` and the tensor for an unknown name, a missing q/k/v part or a
// shape/dtype mismatch.
std::map<std::string, Tensor> map_hf_clip_names(const std::map<std::string, Tensor>& hf, const std::string& path);

}  // namespace clipkit
