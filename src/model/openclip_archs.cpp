// PLACEHOLDER: replaced by the full table at merge
#include "model/openclip_archs.h"

#include <map>

namespace clipkit {

namespace {

const std::map<std::string, nlohmann::json>& configs() {
  static const std::map<std::string, nlohmann::json> table = [] {
    const nlohmann::json text_512 = {{"context_length", 77}, {"vocab_size", 49408}, {"width", 512}, {"heads", 8}, {"layers", 12}};
    const nlohmann::json text_768 = {{"context_length", 77}, {"vocab_size", 49408}, {"width", 768}, {"heads", 12}, {"layers", 12}};
    const nlohmann::json text_1024 = {{"context_length", 77}, {"vocab_size", 49408}, {"width", 1024}, {"heads", 16}, {"layers", 24}};
    const nlohmann::json text_1280 = {{"context_length", 77}, {"vocab_size", 49408}, {"width", 1280}, {"heads", 20}, {"layers", 32}};
    std::map<std::string, nlohmann::json> t;
    t["ViT-B-32"] = {{"embed_dim", 512},
                     {"vision_cfg", {{"image_size", 224}, {"layers", 12}, {"width", 768}, {"patch_size", 32}}},
                     {"text_cfg", text_512}};
    t["ViT-L-14"] = {{"embed_dim", 768},
                     {"vision_cfg", {{"image_size", 224}, {"layers", 24}, {"width", 1024}, {"patch_size", 14}}},
                     {"text_cfg", text_768}};
    t["ViT-H-14"] = {
        {"embed_dim", 1024},
        {"vision_cfg", {{"image_size", 224}, {"layers", 32}, {"width", 1280}, {"head_width", 80}, {"patch_size", 14}}},
        {"text_cfg", text_1024}};
    t["ViT-H-14-378-quickgelu"] = {
        {"embed_dim", 1024},
        {"quick_gelu", true},
        {"vision_cfg", {{"image_size", 378}, {"layers", 32}, {"width", 1280}, {"head_width", 80}, {"patch_size", 14}}},
        {"text_cfg", text_1024}};
    t["ViT-bigG-14"] = {{"embed_dim", 1280},
                        {"vision_cfg",
                         {{"image_size", 224},
                          {"layers", 48},
                          {"width", 1664},
                          {"head_width", 104},
                          {"mlp_ratio", 4.9231},
                          {"patch_size", 14}}},
                        {"text_cfg", text_1280}};
    t["RN50-quickgelu"] = {
        {"embed_dim", 1024},
        {"quick_gelu", true},
        {"vision_cfg", {{"image_size", 224}, {"layers", {3, 4, 6, 3}}, {"width", 64}, {"patch_size", nullptr}}},
        {"text_cfg", text_512}};
    return t;
  }();
  return table;
}

}  // namespace

const nlohmann::json* openclip_arch_config(const std::string& name) {
  const auto it = configs().find(name);
  return it == configs().end() ? nullptr : &it->second;
}

std::vector<std::string> openclip_arch_names() {
  std::vector<std::string> names;
  for (const auto& [name, cfg] : configs()) names.push_back(name);
  return names;
}

}  // namespace clipkit
