// PLACEHOLDER: replaced by the full table at merge
// open_clip's built-in model configurations (model_cfg), by name ("ViT-B-32", "RN50-quickgelu", ...).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace clipkit {

// The model_cfg of a built-in open_clip configuration; nullptr if the name is unknown.
const nlohmann::json* openclip_arch_config(const std::string& name);
// Every built-in configuration name, sorted.
std::vector<std::string> openclip_arch_names();

}  // namespace clipkit
