// clipkit info --model PATH [--activation auto|quick_gelu|gelu] [--arch NAME] [--dtype D] [--threads N]
//              [--format json|table|csv]
// Prints one JSON object (one line) describing the model: format, what configured it, architecture
// (head counts and widths, activation), parameter count, stored weight dtype, logit scale,
// fingerprint, GEMM kernels and preprocessing; or the same fields as a table or CSV (nested fields
// as "architecture.kind").
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"

namespace {

// A float as the JSON number with its shortest round-trip decimal form (0.48145466, not 0.4814546704...).
double float_for_json(float v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::stod(std::string(buf, res.ptr));
}

nlohmann::ordered_json describe(const clipkit::ModelInfo& info) {
  const clipkit::Architecture& a = info.arch;
  nlohmann::ordered_json arch;
  arch["kind"] = a.kind;
  arch["embed_dim"] = a.embed_dim;
  arch["image_resolution"] = a.image_resolution;
  arch["vision_width"] = a.vision_width;
  arch["vision_layers"] = a.vision_layers;
  arch["vision_heads"] = a.vision_heads;
  // ResNet: the attention pool's heads over the 32 · width features.
  const int vision_features = a.kind == "vit" ? a.vision_width : a.vision_width * 32;
  arch["vision_head_width"] = a.vision_heads > 0 ? vision_features / a.vision_heads : 0;
  if (a.kind == "vit")
    arch["vision_patch_size"] = a.vision_patch_size;
  else
    arch["resnet_layers"] = a.resnet_layers;
  arch["context_length"] = a.context_length;
  arch["vocab_size"] = a.vocab_size;
  arch["text_width"] = a.text_width;
  arch["text_layers"] = a.text_layers;
  arch["text_heads"] = a.text_heads;
  arch["text_head_width"] = a.text_heads > 0 ? a.text_width / a.text_heads : 0;
  arch["activation"] = a.activation;
  nlohmann::ordered_json pre;
  pre["resolution"] = info.preprocess.resolution;
  pre["mean"] = nlohmann::ordered_json::array();
  pre["std"] = nlohmann::ordered_json::array();
  for (float m : info.preprocess.mean) pre["mean"].push_back(float_for_json(m));
  for (float s : info.preprocess.std) pre["std"].push_back(float_for_json(s));
  pre["interpolation"] = clipkit::interpolation_name(info.preprocess.interpolation);
  pre["resize_mode"] = clipkit::resize_mode_name(info.preprocess.resize_mode);
  pre["fill_color"] = info.preprocess.fill_color;
  nlohmann::ordered_json j;
  j["path"] = info.path;
  j["format"] = info.format;
  j["config_source"] = info.config_source;
  j["architecture"] = std::move(arch);
  j["parameter_count"] = info.parameter_count;
  j["weight_bytes"] = info.weight_bytes;
  j["weight_dtype"] = info.weight_dtype;
  j["compute_dtype"] = info.compute_dtype;
  j["logit_scale"] = float_for_json(info.logit_scale);
  j["fingerprint"] = info.fingerprint;
  j["kernels"] = info.kernels;
  j["preprocess"] = std::move(pre);
  return j;
}

// (field, value) pairs of a JSON object, nested objects flattened as "outer.inner".
void flatten(const nlohmann::ordered_json& j, const std::string& prefix, std::vector<std::vector<std::string>>& rows) {
  for (const auto& [key, value] : j.items()) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (value.is_object()) flatten(value, name, rows);
    else rows.push_back({name, value.is_string() ? value.get<std::string>() : value.dump()});
  }
}

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model: architecture, parameters, fingerprint (one JSON object by default)");
  struct Opts {
    std::string model;
    std::string activation = "auto";
    std::string dtype = "f32";
    int threads = 0;
    std::string format = "json";
    std::string arch;
  };
  auto opts = std::make_shared<Opts>();
  cmd->add_option("--model", opts->model, "Model file or folder (.pt, .safetensors, Hugging Face or open_clip folder)")
      ->required();
  cmd->add_option("--activation", opts->activation, "MLP activation: auto (default), quick_gelu or gelu");
  clipkit::cli::add_arch_option(cmd, opts->arch);
  cmd->add_option("--dtype", opts->dtype, "Weights/compute: f32 (default), f16 or int8 (shown as compute_dtype)");
  cmd->add_option("--threads", opts->threads, "Compute threads (0 = one per core)");
  clipkit::cli::add_format(cmd, opts->format, {"json", "table", "csv"});
  clipkit::cli::add_examples(cmd, {"clipkit info --model ViT-B-32.pt", "clipkit info --model RN50.pt --format table"});
  cmd->callback([opts] {
    clipkit::ModelOptions mo;
    mo.activation = opts->activation;
    mo.dtype = opts->dtype;
    mo.threads = opts->threads;
    mo.arch = opts->arch;
    auto model = clipkit::Model::load(opts->model, mo);
    const auto j = describe(model->info());
    if (opts->format != "json") {
      std::vector<std::vector<std::string>> rows;
      flatten(j, "", rows);
      if (opts->format == "table") {
        rows.insert(rows.begin(), {"field", "value"});
        clipkit::cli::print_table(rows);
      } else {
        std::vector<std::vector<std::string>> csv(2);
        for (const auto& r : rows) {
          csv[0].push_back(r[0]);
          csv[1].push_back(r[1]);
        }
        clipkit::cli::print_csv(csv);
      }
      std::fflush(stdout);
      return;
    }
    const std::string out = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  });
});

}  // namespace
