// open_clip's built-in model configurations (model_configs/<NAME>.json) for the CLIP architectures
// clipkit runs: OpenAI-layout ViT and modified-ResNet image towers with the CLIP text Transformer.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace clipkit {

// open_clip's built-in model config for an architecture name (e.g. "ViT-H-14", "RN50-quickgelu"),
// as the JSON object open_clip's model_configs/NAME.json holds (embed_dim, quick_gelu, vision_cfg, text_cfg);
// nullptr when the name is not in the table.
const nlohmann::json* openclip_arch_config(const std::string& name);

// Every name in the table, in display order.
std::vector<std::string> openclip_arch_names();

}  // namespace clipkit
