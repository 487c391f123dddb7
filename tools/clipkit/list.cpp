// clipkit list archs [--format text|json]
// Prints the open_clip architecture names that --arch accepts: one per line with its image tower
// (kind, image size / patch), MLP activation and vision head width; or one JSON array.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "clipkit/error.h"
#include "clipkit/verb.h"
#include "model/openclip_archs.h"

namespace {

nlohmann::ordered_json describe(const std::string& name) {
  const nlohmann::json& cfg = *clipkit::openclip_arch_config(name);
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

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("list", "List what clipkit knows: `list archs` prints the --arch names");
  struct Opts {
    std::string what;
    std::string format = "text";
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("what", o->what, "archs: the open_clip architecture names --arch accepts")->required();
  cmd->add_option("--format", o->format, "text (default: one name per line) or json");
  cmd->callback([o] {
    if (o->what != "archs")
      throw clipkit::Error(clipkit::ErrorCode::InvalidArgument,
                           "list: unknown list '" + o->what + "' (expected archs)");
    if (o->format != "text" && o->format != "json")
      throw clipkit::Error(clipkit::ErrorCode::InvalidArgument,
                           "--format: unknown format '" + o->format + "' (expected text or json)");
    std::string out;
    if (o->format == "json") {
      nlohmann::ordered_json all = nlohmann::ordered_json::array();
      for (const std::string& n : clipkit::openclip_arch_names()) all.push_back(describe(n));
      out = all.dump(2) + "\n";
    } else {
      for (const std::string& n : clipkit::openclip_arch_names()) {
        const nlohmann::ordered_json d = describe(n);
        std::string tower = d["kind"].get<std::string>() + " " + std::to_string(d["image_size"].get<int>());
        if (!d["patch_size"].is_null()) tower += "/" + std::to_string(d["patch_size"].get<int>());
        char line[256];
        std::snprintf(line, sizeof line, "%-24s %-12s %-11s head_width %d\n", n.c_str(), tower.c_str(),
                      d["activation"].get<std::string>().c_str(), d["vision_head_width"].get<int>());
        out += line;
      }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  });
});

}  // namespace
