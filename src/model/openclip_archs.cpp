// The table of open_clip architecture names. Values are those of open_clip's model_configs/*.json;
// a "-quickgelu" name is its plain twin with quick_gelu set (QuickGELU in both towers).
#include "model/openclip_archs.h"

#include <map>

namespace clipkit {

namespace {

struct ArchRow {
  const char* name;
  int embed_dim;
  int image_size;
  int vision_layers;            // ViT blocks; 0 for a ResNet
  int resnet_layers[4];         // ResNet blocks per stage; zeros for a ViT
  int vision_width;
  int head_width;               // 0: open_clip's default (64), not written
  double mlp_ratio;             // 0: open_clip's default (4.0), not written
  int patch_size;               // 0 for a ResNet (written as null)
  int text_width;
  int text_heads;
  int text_layers;
};

// Plain names only; each gets a "-quickgelu" twin below where open_clip ships one.
constexpr ArchRow kRows[] = {
    {"RN50", 1024, 224, 0, {3, 4, 6, 3}, 64, 0, 0, 0, 512, 8, 12},
    {"RN101", 512, 224, 0, {3, 4, 23, 3}, 64, 0, 0, 0, 512, 8, 12},
    {"RN50x4", 640, 288, 0, {4, 6, 10, 6}, 80, 0, 0, 0, 640, 10, 12},
    {"RN50x16", 768, 384, 0, {6, 8, 18, 8}, 96, 0, 0, 0, 768, 12, 12},
    {"RN50x64", 1024, 448, 0, {3, 15, 36, 10}, 128, 0, 0, 0, 1024, 16, 12},
    {"ViT-B-32", 512, 224, 12, {0, 0, 0, 0}, 768, 0, 0, 32, 512, 8, 12},
    {"ViT-B-32-256", 512, 256, 12, {0, 0, 0, 0}, 768, 0, 0, 32, 512, 8, 12},
    {"ViT-B-16", 512, 224, 12, {0, 0, 0, 0}, 768, 0, 0, 16, 512, 8, 12},
    {"ViT-B-16-plus-240", 640, 240, 12, {0, 0, 0, 0}, 896, 0, 0, 16, 640, 10, 12},
    {"ViT-L-14", 768, 224, 24, {0, 0, 0, 0}, 1024, 0, 0, 14, 768, 12, 12},
    {"ViT-L-14-336", 768, 336, 24, {0, 0, 0, 0}, 1024, 0, 0, 14, 768, 12, 12},
    {"ViT-H-14", 1024, 224, 32, {0, 0, 0, 0}, 1280, 80, 0, 14, 1024, 16, 24},
    {"ViT-H-14-378", 1024, 378, 32, {0, 0, 0, 0}, 1280, 80, 0, 14, 1024, 16, 24},
    {"ViT-g-14", 1024, 224, 40, {0, 0, 0, 0}, 1408, 88, 4.3637, 14, 1024, 16, 24},
    {"ViT-bigG-14", 1280, 224, 48, {0, 0, 0, 0}, 1664, 104, 4.9231, 14, 1280, 20, 32},
};

// Names whose "-quickgelu" twin open_clip ships.
const char* const kQuickGeluTwins[] = {"RN50",     "RN101",    "RN50x4",       "RN50x16",  "RN50x64",
                                       "ViT-B-32", "ViT-B-16", "ViT-L-14",     "ViT-L-14-336",
                                       "ViT-H-14", "ViT-H-14-378", "ViT-bigG-14"};

nlohmann::json row_config(const ArchRow& r, bool quick_gelu) {
  nlohmann::json vision = nlohmann::json::object();
  vision["image_size"] = r.image_size;
  if (r.vision_layers > 0)
    vision["layers"] = r.vision_layers;
  else
    vision["layers"] = {r.resnet_layers[0], r.resnet_layers[1], r.resnet_layers[2], r.resnet_layers[3]};
  vision["width"] = r.vision_width;
  if (r.head_width > 0) vision["head_width"] = r.head_width;
  if (r.mlp_ratio > 0) vision["mlp_ratio"] = r.mlp_ratio;
  vision["patch_size"] = r.patch_size > 0 ? nlohmann::json(r.patch_size) : nlohmann::json(nullptr);
  nlohmann::json text = {{"context_length", 77}, {"vocab_size", 49408}, {"width", r.text_width},
                         {"heads", r.text_heads}, {"layers", r.text_layers}};
  nlohmann::json cfg = nlohmann::json::object();
  cfg["embed_dim"] = r.embed_dim;
  if (quick_gelu) cfg["quick_gelu"] = true;
  cfg["vision_cfg"] = std::move(vision);
  cfg["text_cfg"] = std::move(text);
  return cfg;
}

struct Table {
  std::vector<std::string> names;
  std::map<std::string, nlohmann::json> configs;
};

const Table& table() {
  static const Table t = [] {
    Table out;
    for (const ArchRow& r : kRows) {
      out.names.push_back(r.name);
      out.configs[r.name] = row_config(r, false);
    }
    for (const ArchRow& r : kRows)
      for (const char* twin : kQuickGeluTwins)
        if (std::string(twin) == r.name) {
          const std::string name = std::string(r.name) + "-quickgelu";
          out.names.push_back(name);
          out.configs[name] = row_config(r, true);
        }
    return out;
  }();
  return t;
}

}  // namespace

const nlohmann::json* openclip_arch_config(const std::string& name) {
  const Table& t = table();
  auto it = t.configs.find(name);
  return it == t.configs.end() ? nullptr : &it->second;
}

std::vector<std::string> openclip_arch_names() { return table().names; }

}  // namespace clipkit
