// The open_clip pretrained models clipkit can fetch and run, named `ARCH/TAG` as open_clip names
// them (`ViT-H-14/laion2b_s32b_b79k`, `ViT-H-14-378-quickgelu/dfn5b`): the Hugging Face hub
// repository and file of each, the preprocessing open_clip uses for the tag, and open_clip's
// published zero-shot ImageNet-1k top-1 accuracy.
//
// Downloaded models live in a cache folder, `$CLIPKIT_HOME/openclip/ARCH/TAG/` (CLIPKIT_HOME
// defaults to $XDG_CACHE_HOME/clipkit, else ~/.cache/clipkit), holding the weights file and an
// `open_clip_config.json` (model_cfg + preprocess_cfg) beside it. `load_checkpoint` resolves an
// `ARCH/TAG` name to that folder; nothing is downloaded at run time.
#pragma once
#include <array>
#include <optional>
#include <string>
#include <vector>

namespace clipkit {

// The configuration file written beside the weights (the name open_clip's hub repositories use).
inline constexpr const char* kOpenClipConfigFile = "open_clip_config.json";

struct OpenClipPretrained {
  std::string arch;                  // open_clip configuration name, e.g. "ViT-H-14-378-quickgelu"
  std::string tag;                   // pretrained tag, e.g. "dfn5b"
  std::string hf_repo;               // e.g. "apple/DFN5B-CLIP-ViT-H-14-378"
  std::string file;                  // file fetched from the repository's main branch
  std::array<double, 3> mean{}, std{};
  std::string interpolation;         // "bicubic" for every model listed
  std::string resize_mode;           // "shortest" or "squash"
  int fill_color = 0;
  double imagenet_top1 = -1;         // zero-shot ImageNet-1k top-1 (0..1) published by open_clip; < 0: none
  double params_millions = 0;        // parameters of the architecture, in millions

  std::string name() const { return arch + "/" + tag; }
  std::string url() const { return "https://huggingface.co/" + hf_repo + "/resolve/main/" + file; }
};

// Every listed model, grouped by architecture.
const std::vector<OpenClipPretrained>& openclip_pretrained();

// The entry for "ARCH/TAG" (also "ARCH:TAG"); the architecture matches case-insensitively, the tag
// also with '-' for '_' (as open_clip cleans tags). nullptr when unknown.
const OpenClipPretrained* find_openclip_pretrained(const std::string& name);

// True when `name` has the ARCH/TAG form with an architecture open_clip models are listed for.
bool is_openclip_arch(const std::string& arch);

// $CLIPKIT_HOME, else $XDG_CACHE_HOME/clipkit, else $HOME/.cache/clipkit (else ./clipkit-cache).
std::string clipkit_home();
// The cache folder of a model: <home>/openclip/ARCH/TAG (home "" = clipkit_home()).
std::string openclip_cache_dir(const OpenClipPretrained& model, const std::string& home = "");

// Resolves a model name to its downloaded folder. Returns nullopt when `name` is not an open_clip
// ARCH/TAG name (an ordinary path); throws Error(NotFound) with a one-line message naming the
// command that fetches it (`clipkit models download ARCH/TAG`) when the model is not downloaded,
// and for an ARCH/TAG of a listed architecture with an unknown tag.
std::optional<std::string> resolve_openclip_model(const std::string& name);

}  // namespace clipkit
