// What an open_clip configuration states about a model beyond its tensor shapes: read from a
// model_cfg (open_clip_config.json beside the weights, or a built-in name of openclip_archs.h) and
// a preprocess_cfg. Every field open_clip's CLIP towers read is either applied or, when it asks
// for something clipkit does not run, refused with an error naming the field.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clipkit/image.h"

namespace clipkit {

// Safetensors metadata keys under which `clipkit convert` (and `create-random` for open_clip
// names) store the configuration a file was read with, so that it loads again configured the same
// way: the content of the open_clip_config.json it came with, or the built-in name (--arch) that
// configured it. Read after --arch and an open_clip_config.json beside the weights.
inline constexpr const char* kOpenClipConfigKey = "open_clip_config";
inline constexpr const char* kOpenClipArchKey = "open_clip_arch";

struct StatedConfig {
  std::string source;            // where it came from, for messages: "open_clip_config.json", "--arch ViT-H-14"
  bool from_name = false;        // a built-in name: its sizes are not compared with the tensors
  std::string kind;              // "vit" | "resnet"
  std::string activation;        // "quick_gelu" | "gelu" (model_cfg.quick_gelu; absent = nn.GELU)
  int vision_head_width = 64;    // ViT heads = width / head_width; ResNet pool heads = 32 · width / head_width
  double vision_mlp_ratio = 4.0; // MLP width = int(width · mlp_ratio)
  int text_heads = 0;
  double text_mlp_ratio = 4.0;
  // Sizes as written (0 / empty: not written); a folder's own config must agree with the tensors.
  int embed_dim = 0, image_size = 0, patch_size = 0, vision_width = 0, vision_layers = 0;
  std::vector<int> resnet_layers;
  int context_length = 0, vocab_size = 0, text_width = 0, text_layers = 0;
};

// Parses open_clip's model_cfg object (embed_dim, quick_gelu, vision_cfg, text_cfg, ...). Throws
// Error(Format) naming `source` and the field for a malformed value and for any setting clipkit
// does not implement (an unknown field included: open_clip itself rejects those).
StatedConfig parse_openclip_model_cfg(const nlohmann::json& model_cfg, const std::string& source, bool from_name);

// Applies open_clip's preprocess_cfg (mean, std, interpolation, resize_mode, fill_color; mode must
// be RGB; size is not read: the resolution is the model's image size; unknown keys are ignored, as
// open_clip does). Throws Error(Format) naming `source` and the field.
void apply_openclip_preprocess_cfg(const nlohmann::json& preprocess_cfg, const std::string& source,
                                   PreprocessConfig& config);

}  // namespace clipkit
