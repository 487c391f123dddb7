// Fetching an open_clip pretrained model (`clipkit models download ARCH/TAG`): the weights file
// from its Hugging Face hub repository into `$CLIPKIT_HOME/openclip/ARCH/TAG/` (resumable, checked
// against the SHA-256 the hub publishes for it), and an `open_clip_config.json` beside it holding
// open_clip's built-in model_cfg for ARCH and the preprocess_cfg open_clip uses for the tag.
// Lives in the model library because the model configurations are defined here
// (src/model/openclip_archs.h); the list of models and the cache layout are in
// src/io/openclip_pretrained.h.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "io/download.h"
#include "io/openclip_pretrained.h"

namespace clipkit {

// {"model_cfg": <built-in config of model.arch>, "preprocess_cfg": {mean, std, interpolation,
// resize_mode, fill_color}}. Throws Error(NotFound) when ARCH has no built-in configuration.
nlohmann::json openclip_config_json(const OpenClipPretrained& model);

struct OpenClipDownloadResult {
  std::string folder;       // the model's cache folder (what `--model ARCH/TAG` resolves to)
  std::string config_path;  // open_clip_config.json
  DownloadResult weights;
};

// Downloads the weights (see download_file: .part resume, atomic rename, SHA-256 verified when the
// hub publishes one, mismatch refused) and then writes open_clip_config.json atomically.
// `home` "" = clipkit_home().
OpenClipDownloadResult download_openclip_model(const OpenClipPretrained& model, const DownloadOptions& options = {},
                                               const std::string& home = "");

}  // namespace clipkit
