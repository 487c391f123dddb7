// clipkit list archs [--format table|json|csv]
// The open_clip architecture names that --arch accepts: one row per name with its image tower
// (kind, image size / patch), MLP activation, vision head width and MLP ratio, and text heads;
// json adds the whole built-in configuration (one compact object per line).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "clipkit/lists.h"
#include "clipkit/options.h"
#include "model/openclip_archs.h"

namespace clipkit::cli {

namespace {

nlohmann::ordered_json describe(const std::string& name) {
  const nlohmann::json& cfg = *openclip_arch_config(name);
  const nlohmann::json& v = cfg.at("vision_cfg");
  const nlohmann::json& t = cfg.at("text_cfg");
  const bool resnet = v.at("layers").is_array();
  nlohmann::ordered_json j;
  j["name"] = name;
  j["kind"] = resnet ? "resnet" : "vit";
  j["image_size"] = v.at("image_size");
  j["patch_size"] = v.at("patch_size");
  j["activation"] = cfg.value("quick_gelu", false) ? "quick_gelu" : "gelu";
  j["vision_head_width"] = v.value("head_width", 64);
  j["vision_mlp_ratio"] = v.value("mlp_ratio", 4.0);
  j["text_heads"] = t.at("heads");
  j["config"] = cfg;
  return j;
}

}  // namespace

void list_archs(const std::string& format) {
  if (format == "json") {
    std::string out;
    for (const std::string& n : openclip_arch_names()) out += describe(n).dump() + "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return;
  }
  std::vector<std::vector<std::string>> rows = {
      {"name", "tower", "activation", "vision_head_width", "vision_mlp_ratio", "text_heads"}};
  for (const std::string& n : openclip_arch_names()) {
    const nlohmann::ordered_json d = describe(n);
    std::string tower = d["kind"].get<std::string>() + " " + std::to_string(d["image_size"].get<int>());
    if (!d["patch_size"].is_null()) tower += "/" + std::to_string(d["patch_size"].get<int>());
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%g", d["vision_mlp_ratio"].get<double>());
    rows.push_back({n, tower, d["activation"].get<std::string>(), std::to_string(d["vision_head_width"].get<int>()),
                    ratio, std::to_string(d["text_heads"].get<int>())});
  }
  if (format == "csv") print_csv(rows);
  else print_table(rows);
}

}  // namespace clipkit::cli
