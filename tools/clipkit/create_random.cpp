// clipkit create-random --arch NAME [--seed S] [--dtype f32|f16] --out FILE.safetensors
// Writes a full-size CLIP model with random weights in OpenAI's state_dict layout (for tests and
// benchmarks). NAME: ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, RN50, RN101, RN50x4, RN50x16,
// RN50x64, an open_clip name (`clipkit list archs`: ViT-H-14, ViT-bigG-14, ...; the file then
// states that name in its metadata), or custom:key=value,... (kind, embed_dim, image_resolution, vision_width, vision_layers,
// vision_patch_size, context_length, vocab_size, text_width, text_layers).
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "clipkit/error.h"
#include "clipkit/options.h"
#include "clipkit/verb.h"
#include "model/openclip_archs.h"
#include "model/openclip_config.h"
#include "model/random_model.h"

namespace {

using clipkit::Error;
using clipkit::ErrorCode;

const bool registered = clipkit::cli::register_verb([](CLI::App& app) {
  auto* cmd = app.add_subcommand("create-random", "Write a CLIP model with random weights (OpenAI layout) as safetensors");
  struct Opts {
    std::string arch, dtype = "f32", out;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--arch", o->arch,
                  "ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, RN50, RN101, RN50x4, RN50x16, RN50x64, an open_clip name "
                  "(`clipkit list archs`, e.g. ViT-H-14) or custom:k=v,...")
      ->required();
  cmd->add_option("--seed", o->seed, "Random seed (a non-negative integer)")
      ->capture_default_str()
      ->check(clipkit::cli::integer_at_least(0));
  cmd->add_option("--dtype", o->dtype, "Stored dtype of the weights: f32 (default) or f16");
  cmd->add_option("--out", o->out, "Output .safetensors file")->required();
  clipkit::cli::add_examples(cmd, {"clipkit create-random --arch ViT-B/32 --seed 1 --out random-vit-b-32.safetensors",
                                   "clipkit create-random --arch custom:kind=vit,embed_dim=64,image_resolution=64,vision_width=128,vision_layers=2,"
                                   "vision_patch_size=16,text_width=64,text_layers=2 --out tiny.safetensors"});
  cmd->callback([o] {
    clipkit::cli::check_output_path(o->out, "--out");
    const uint64_t seed = o->seed;
    clipkit::DType dtype;
    if (o->dtype == "f32") dtype = clipkit::DType::F32;
    else if (o->dtype == "f16") dtype = clipkit::DType::F16;
    else throw Error(ErrorCode::InvalidArgument, "--dtype: '" + o->dtype + "' is not f32 or f16");
    const clipkit::ClipConfig c = clipkit::clip_config(o->arch);
    nlohmann::ordered_json cfg;
    cfg["architecture"] = c.kind == "vit" ? "ViT" : "ModifiedResNet";
    cfg["embed_dim"] = c.embed_dim;
    cfg["image_resolution"] = c.image_resolution;
    if (c.kind == "vit") cfg["vision_layers"] = c.vision_layers;
    else cfg["vision_layers"] = c.resnet_layers;
    cfg["vision_width"] = c.vision_width;
    cfg["vision_patch_size"] = c.kind == "vit" ? nlohmann::ordered_json(c.vision_patch_size) : nlohmann::ordered_json();
    cfg["context_length"] = c.context_length;
    cfg["vocab_size"] = c.vocab_size;
    cfg["transformer_width"] = c.text_width;
    cfg["transformer_heads"] = c.text_width / 64;
    cfg["transformer_layers"] = c.text_layers;
    std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                   {"layout", "openai-clip"},
                                                   {"generator", "clipkit create-random"},
                                                   {"arch", o->arch},
                                                   {"seed", std::to_string(seed)}};
    if (const nlohmann::json* oc = clipkit::openclip_arch_config(o->arch)) {
      // An open_clip name: the file states it (head widths, activation) as `clipkit convert` does,
      // and carries the model_cfg for other readers (bench/compare/clip_torch.py).
      metadata[clipkit::kOpenClipArchKey] = o->arch;
      metadata[clipkit::kOpenClipConfigKey] = nlohmann::json{{"model_cfg", *oc}}.dump();
    } else {
      metadata["config"] = cfg.dump();  // OpenAI's constructor arguments
    }
    clipkit::write_random_clip(o->out, c, seed, dtype, metadata);
    nlohmann::ordered_json summary;
    summary["out"] = o->out;
    summary["arch"] = o->arch;
    summary["seed"] = seed;
    summary["dtype"] = o->dtype;
    summary["parameter_count"] = clipkit::clip_parameter_count(clipkit::clip_state_dict_layout(c));
    const std::string line = summary.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
  });
});

}  // namespace
