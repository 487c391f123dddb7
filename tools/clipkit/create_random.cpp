// clipkit create-random --arch NAME [--seed S] [--dtype f32|f16] --out FILE.safetensors
// Writes a full-size CLIP model with random weights in OpenAI's state_dict layout (for tests and
// benchmarks). NAME: ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, RN50, RN101, RN50x4, RN50x16,
// RN50x64, an open_clip name (`clipkit list archs`: ViT-H-14, ViT-bigG-14, ...; the file then
// states that name in its metadata), custom:key=value,... (kind, embed_dim, image_resolution,
// vision_width, vision_layers, vision_patch_size, context_length, vocab_size, text_width,
// text_layers), or an M-CLIP text tower (mclip-xlmr-base, mclip-xlmr-large) written as a folder:
// config.json + model.safetensors.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "clipkit/error.h"
#include "core/mapped_file.h"
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
                  "(`clipkit list archs`, e.g. ViT-H-14), custom:k=v,... "
                  "or an M-CLIP text tower: mclip-xlmr-base, mclip-xlmr-large (--out is then a folder)")
      ->required();
  cmd->add_option("--seed", o->seed, "Random seed (a non-negative integer)")
      ->capture_default_str()
      ->check(clipkit::cli::integer_at_least(0));
  cmd->add_option("--dtype", o->dtype, "Stored dtype of the weights: f32 (default) or f16");
  cmd->add_option("--out", o->out, "Output .safetensors file (M-CLIP: folder)")->required();
  clipkit::cli::add_examples(cmd, {"clipkit create-random --arch ViT-B/32 --seed 1 --out random-vit-b-32.safetensors",
                                   "clipkit create-random --arch mclip-xlmr-large --out mclip-large"});
  cmd->callback([o] {
    clipkit::cli::check_output_path(o->out, "--out");
    const uint64_t seed = o->seed;
    clipkit::DType dtype;
    if (o->dtype == "f32") dtype = clipkit::DType::F32;
    else if (o->dtype == "f16") dtype = clipkit::DType::F16;
    else throw Error(ErrorCode::InvalidArgument, "--dtype: '" + o->dtype + "' is not f32 or f16");
    const auto& mclip = clipkit::mclip_random_names();
    if (std::find(mclip.begin(), mclip.end(), o->arch) != mclip.end()) {
      // An M-CLIP folder: config.json and model.safetensors (no tokenizer: give XLM-RoBERTa's
      // sentencepiece.bpe.model with --tokenizer, or copy it into the folder).
      int64_t embed_dim = 0, width = 0;
      const auto layout = clipkit::mclip_state_dict_layout(o->arch, &embed_dim, &width);
      std::error_code ec;
      std::filesystem::create_directories(o->out, ec);
      if (ec) throw Error(ErrorCode::Io, "cannot create folder '" + o->out + "': " + ec.message());
      nlohmann::ordered_json cfg;
      cfg["architectures"] = {"MultilingualCLIP"};
      cfg["modelBase"] = o->arch == "mclip-xlmr-large" ? "xlm-roberta-large" : "xlm-roberta-base";
      cfg["model_type"] = "M-CLIP";
      cfg["numDims"] = embed_dim;
      cfg["transformerDimensions"] = width;
      const std::string cfg_text = cfg.dump(2) + "\n";
      clipkit::write_file_atomic(o->out + "/config.json", cfg_text.data(), cfg_text.size());
      clipkit::write_random_layout(o->out + "/model.safetensors", layout, seed, dtype,
                                   {{"format", "pt"}, {"generator", "clipkit create-random"}, {"arch", o->arch},
                                    {"seed", std::to_string(seed)}});
      int64_t params = 0;
      for (const auto& s : layout) params += clipkit::shape_numel(s.shape);
      nlohmann::ordered_json summary;
      summary["out"] = o->out;
      summary["arch"] = o->arch;
      summary["seed"] = seed;
      summary["dtype"] = o->dtype;
      summary["parameter_count"] = params;
      const std::string line = summary.dump() + "\n";
      std::fwrite(line.data(), 1, line.size(), stdout);
      return;
    }
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
