#include "io/openclip_pretrained.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "clipkit/error.h"

namespace clipkit {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSafetensors = "open_clip_model.safetensors";
constexpr const char* kPytorchBin = "open_clip_pytorch_model.bin";

enum class Pre { OpenAI, Squash, Half };  // preprocessing: OpenAI's; OpenAI's with squash; mean = std = 0.5

// Parameters (millions) of each architecture, from open_clip's model profile.
double params_of(const std::string& arch) {
  static const std::pair<const char*, double> table[] = {
      {"RN50-quickgelu", 102.01},        {"RN101-quickgelu", 119.69},     {"RN50x4-quickgelu", 178.30},
      {"RN50x16-quickgelu", 290.98},     {"RN50x64-quickgelu", 623.26},   {"ViT-B-32", 151.28},
      {"ViT-B-32-quickgelu", 151.28},    {"ViT-B-32-256", 151.29},        {"ViT-B-16", 149.62},
      {"ViT-B-16-quickgelu", 149.62},    {"ViT-B-16-plus-240", 208.38},   {"ViT-L-14", 427.62},
      {"ViT-L-14-quickgelu", 427.62},    {"ViT-L-14-336-quickgelu", 427.94}, {"ViT-H-14", 986.11},
      {"ViT-H-14-quickgelu", 986.11},    {"ViT-H-14-378-quickgelu", 986.71}, {"ViT-g-14", 1366.68},
      {"ViT-bigG-14", 2539.57},          {"ViT-bigG-14-quickgelu", 2539.57},
  };
  for (const auto& [name, m] : table)
    if (arch == name) return m;
  return 0;
}

OpenClipPretrained entry(const char* arch, const char* tag, const char* repo, const char* file, double top1,
                         Pre pre = Pre::OpenAI) {
  OpenClipPretrained p;
  p.arch = arch;
  p.tag = tag;
  p.hf_repo = repo;
  p.file = file;
  if (pre == Pre::Half) {
    p.mean = {0.5, 0.5, 0.5};
    p.std = {0.5, 0.5, 0.5};
  } else {
    p.mean = {0.48145466, 0.4578275, 0.40821073};
    p.std = {0.26862954, 0.26130258, 0.27577711};
  }
  p.interpolation = "bicubic";
  p.resize_mode = pre == Pre::Squash ? "squash" : "shortest";
  p.imagenet_top1 = top1;
  p.params_millions = params_of(arch);
  return p;
}

constexpr double kNone = -1;  // no published ImageNet figure

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string clean_tag(const std::string& tag) {
  std::string t = lower(tag);
  std::replace(t.begin(), t.end(), '-', '_');
  return t;
}

// Splits "ARCH/TAG" or "ARCH:TAG" (exactly one separator, both parts non-empty).
bool split_name(const std::string& name, std::string& arch, std::string& tag) {
  const size_t pos = name.find_first_of("/:");
  if (pos == std::string::npos || pos == 0 || pos + 1 >= name.size()) return false;
  if (name.find_first_of("/:", pos + 1) != std::string::npos) return false;
  arch = name.substr(0, pos);
  tag = name.substr(pos + 1);
  return true;
}

}  // namespace

const std::vector<OpenClipPretrained>& openclip_pretrained() {
  // open_clip's pretrained.py entries whose model has open_clip's own towers (ViT or modified
  // ResNet image tower, CLIP text Transformer and tokenizer). Tags trained with QuickGELU are
  // listed under the -quickgelu configuration only. Zero-shot ImageNet-1k top-1: open_clip's
  // docs/openclip_results.csv.
  static const std::vector<OpenClipPretrained> models = {
      entry("RN50-quickgelu", "openai", "timm/resnet50_clip.openai", kSafetensors, 0.5982),
      entry("RN50-quickgelu", "yfcc15m", "timm/resnet50_clip.yfcc15m", kSafetensors, 0.3275),
      entry("RN50-quickgelu", "cc12m", "timm/resnet50_clip.cc12m", kSafetensors, 0.3647),
      entry("RN101-quickgelu", "openai", "timm/resnet101_clip.openai", kSafetensors, 0.6228),
      entry("RN101-quickgelu", "yfcc15m", "timm/resnet101_clip.yfcc15m", kSafetensors, 0.3487),
      entry("RN50x4-quickgelu", "openai", "timm/resnet50x4_clip.openai", kSafetensors, 0.6627),
      entry("RN50x16-quickgelu", "openai", "timm/resnet50x16_clip.openai", kSafetensors, 0.7072),
      entry("RN50x64-quickgelu", "openai", "timm/resnet50x64_clip.openai", kSafetensors, 0.7391),

      entry("ViT-B-32-quickgelu", "openai", "timm/vit_base_patch32_clip_224.openai", kSafetensors, 0.6332),
      entry("ViT-B-32-quickgelu", "laion400m_e31", "timm/vit_base_patch32_clip_224.laion400m_e31", kSafetensors, 0.6294),
      entry("ViT-B-32-quickgelu", "laion400m_e32", "timm/vit_base_patch32_clip_224.laion400m_e32", kSafetensors, 0.6293),
      entry("ViT-B-32-quickgelu", "metaclip_400m", "timm/vit_base_patch32_clip_224.metaclip_400m", kSafetensors, 0.6558),
      entry("ViT-B-32-quickgelu", "metaclip_fullcc", "timm/vit_base_patch32_clip_224.metaclip_2pt5b", kSafetensors, 0.6766),
      entry("ViT-B-32", "laion2b_e16", "timm/vit_base_patch32_clip_224.laion2b_e16", kSafetensors, 0.6565),
      entry("ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", kSafetensors, 0.6656),
      entry("ViT-B-32", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", kPytorchBin, 0.6917),
      entry("ViT-B-32", "datacomp_m_s128m_b4k", "laion/CLIP-ViT-B-32-DataComp.M-s128M-b4K", kPytorchBin, 0.2972),
      entry("ViT-B-32", "commonpool_m_clip_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.clip-s128M-b4K", kPytorchBin, 0.2725),
      entry("ViT-B-32", "commonpool_m_laion_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.laion-s128M-b4K", kPytorchBin, 0.2304),
      entry("ViT-B-32", "commonpool_m_image_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.image-s128M-b4K", kPytorchBin, 0.2678),
      entry("ViT-B-32", "commonpool_m_text_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.text-s128M-b4K", kPytorchBin, 0.2548),
      entry("ViT-B-32", "commonpool_m_basic_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M.basic-s128M-b4K", kPytorchBin, 0.2255),
      entry("ViT-B-32", "commonpool_m_s128m_b4k", "laion/CLIP-ViT-B-32-CommonPool.M-s128M-b4K", kPytorchBin, 0.1755),
      entry("ViT-B-32", "datacomp_s_s13m_b4k", "laion/CLIP-ViT-B-32-DataComp.S-s13M-b4K", kPytorchBin, 0.0392),
      entry("ViT-B-32", "commonpool_s_clip_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.clip-s13M-b4K", kPytorchBin, 0.0505),
      entry("ViT-B-32", "commonpool_s_laion_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.laion-s13M-b4K", kPytorchBin, 0.0305),
      entry("ViT-B-32", "commonpool_s_image_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.image-s13M-b4K", kPytorchBin, 0.0392),
      entry("ViT-B-32", "commonpool_s_text_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.text-s13M-b4K", kPytorchBin, 0.0460),
      entry("ViT-B-32", "commonpool_s_basic_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S.basic-s13M-b4K", kPytorchBin, 0.0377),
      entry("ViT-B-32", "commonpool_s_s13m_b4k", "laion/CLIP-ViT-B-32-CommonPool.S-s13M-b4K", kPytorchBin, 0.0270),
      entry("ViT-B-32-256", "datacomp_s34b_b86k", "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K", kPytorchBin, 0.7281),

      entry("ViT-B-16-quickgelu", "openai", "timm/vit_base_patch16_clip_224.openai", kSafetensors, 0.6834),
      entry("ViT-B-16-quickgelu", "dfn2b", "apple/DFN2B-CLIP-ViT-B-16", kPytorchBin, 0.7624),
      entry("ViT-B-16-quickgelu", "metaclip_400m", "timm/vit_base_patch16_clip_224.metaclip_400m", kSafetensors, 0.7080),
      entry("ViT-B-16-quickgelu", "metaclip_fullcc", "timm/vit_base_patch16_clip_224.metaclip_2pt5b", kSafetensors, 0.7212),
      entry("ViT-B-16", "laion400m_e31", "timm/vit_base_patch16_clip_224.laion400m_e31", kSafetensors, 0.6698),
      entry("ViT-B-16", "laion400m_e32", "timm/vit_base_patch16_clip_224.laion400m_e32", kSafetensors, 0.6705),
      entry("ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", kPytorchBin, 0.7023),
      entry("ViT-B-16", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", kPytorchBin, 0.7349),
      entry("ViT-B-16", "datacomp_l_s1b_b8k", "laion/CLIP-ViT-B-16-DataComp.L-s1B-b8K", kPytorchBin, 0.6310),
      entry("ViT-B-16", "commonpool_l_clip_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.clip-s1B-b8K", kPytorchBin, 0.5777),
      entry("ViT-B-16", "commonpool_l_laion_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.laion-s1B-b8K", kPytorchBin, 0.5526),
      entry("ViT-B-16", "commonpool_l_image_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.image-s1B-b8K", kPytorchBin, 0.5719),
      entry("ViT-B-16", "commonpool_l_text_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.text-s1B-b8K", kPytorchBin, 0.5605),
      entry("ViT-B-16", "commonpool_l_basic_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L.basic-s1B-b8K", kPytorchBin, 0.5155),
      entry("ViT-B-16", "commonpool_l_s1b_b8k", "laion/CLIP-ViT-B-16-CommonPool.L-s1B-b8K", kPytorchBin, 0.4593),
      // open_clip points both tags at the e31 repository.
      entry("ViT-B-16-plus-240", "laion400m_e31", "timm/vit_base_patch16_plus_clip_240.laion400m_e31", kSafetensors, 0.6904),
      entry("ViT-B-16-plus-240", "laion400m_e32", "timm/vit_base_patch16_plus_clip_240.laion400m_e31", kSafetensors, 0.6919),

      entry("ViT-L-14-quickgelu", "openai", "timm/vit_large_patch14_clip_224.openai", kSafetensors, 0.7554),
      entry("ViT-L-14-quickgelu", "metaclip_400m", "timm/vit_large_patch14_clip_224.metaclip_400m", kSafetensors, 0.7620),
      entry("ViT-L-14-quickgelu", "metaclip_fullcc", "timm/vit_large_patch14_clip_224.metaclip_2pt5b", kSafetensors, 0.7917),
      entry("ViT-L-14-quickgelu", "dfn2b", "apple/DFN2B-CLIP-ViT-L-14", kPytorchBin, 0.8141),
      entry("ViT-L-14", "laion400m_e31", "timm/vit_large_patch14_clip_224.laion400m_e31", kSafetensors, 0.7271),
      entry("ViT-L-14", "laion400m_e32", "timm/vit_large_patch14_clip_224.laion400m_e32", kSafetensors, 0.7277),
      entry("ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", kPytorchBin, 0.7525, Pre::Half),
      entry("ViT-L-14", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", kPytorchBin, 0.7921),
      entry("ViT-L-14", "commonpool_xl_clip_s13b_b90k", "laion/CLIP-ViT-L-14-CommonPool.XL.clip-s13B-b90K", kPytorchBin, 0.7637),
      entry("ViT-L-14", "commonpool_xl_laion_s13b_b90k", "laion/CLIP-ViT-L-14-CommonPool.XL.laion-s13B-b90K", kPytorchBin, 0.7545),
      entry("ViT-L-14", "commonpool_xl_s13b_b90k", "laion/CLIP-ViT-L-14-CommonPool.XL-s13B-b90K", kPytorchBin, 0.7229),
      entry("ViT-L-14", "dfn2b_s39b", "apple/DFN2B-CLIP-ViT-L-14-39B", kPytorchBin, kNone),
      entry("ViT-L-14-336-quickgelu", "openai", "timm/vit_large_patch14_clip_336.openai", kSafetensors, 0.7656),

      entry("ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", kSafetensors, 0.7796),
      entry("ViT-H-14", "metaclip_altogether", "timm/vit_huge_patch14_clip_224.metaclip_altogether", kSafetensors, kNone),
      entry("ViT-H-14-quickgelu", "metaclip_fullcc", "timm/vit_huge_patch14_clip_224.metaclip_2pt5b", kSafetensors, 0.8051),
      entry("ViT-H-14-quickgelu", "dfn5b", "apple/DFN5B-CLIP-ViT-H-14", kPytorchBin, 0.8344, Pre::Squash),
      entry("ViT-H-14-378-quickgelu", "dfn5b", "apple/DFN5B-CLIP-ViT-H-14-378", kPytorchBin, 0.8437, Pre::Squash),
      entry("ViT-g-14", "laion2b_s12b_b42k", "laion/CLIP-ViT-g-14-laion2B-s12B-b42K", kPytorchBin, 0.7663),
      entry("ViT-g-14", "laion2b_s34b_b88k", "laion/CLIP-ViT-g-14-laion2B-s34B-b88K", kPytorchBin, 0.7847),
      entry("ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", kPytorchBin, 0.8009),
      entry("ViT-bigG-14-quickgelu", "metaclip_fullcc", "timm/vit_gigantic_patch14_clip_224.metaclip_2pt5b", kSafetensors, kNone),
  };
  return models;
}

const OpenClipPretrained* find_openclip_pretrained(const std::string& name) {
  std::string arch, tag;
  if (!split_name(name, arch, tag)) return nullptr;
  const std::string want_arch = lower(arch), want_tag = clean_tag(tag);
  for (const auto& m : openclip_pretrained())
    if (lower(m.arch) == want_arch && m.tag == want_tag) return &m;
  return nullptr;
}

bool is_openclip_arch(const std::string& arch) {
  const std::string want = lower(arch);
  for (const auto& m : openclip_pretrained())
    if (lower(m.arch) == want) return true;
  return false;
}

std::string clipkit_home() {
  if (const char* h = std::getenv("CLIPKIT_HOME"); h && *h) return h;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/clipkit";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/clipkit";
  return "clipkit-cache";
}

std::string openclip_cache_dir(const OpenClipPretrained& model, const std::string& home) {
  return (fs::path(home.empty() ? clipkit_home() : home) / "openclip" / model.arch / model.tag).string();
}

std::optional<std::string> resolve_openclip_model(const std::string& name) {
  std::string arch, tag;
  if (!split_name(name, arch, tag)) return std::nullopt;
  const OpenClipPretrained* m = find_openclip_pretrained(name);
  if (!m) {
    // A QuickGELU-trained tag asked for under the plain configuration name.
    if (const OpenClipPretrained* q = find_openclip_pretrained(arch + "-quickgelu/" + tag))
      throw Error(ErrorCode::NotFound, "model '" + name + "' was trained with QuickGELU: use '" + q->name() + "'");
    if (is_openclip_arch(arch))
      throw Error(ErrorCode::NotFound,
                  "unknown open_clip tag '" + tag + "' for " + arch + " (see `clipkit models list`)");
    return std::nullopt;
  }
  const fs::path dir = openclip_cache_dir(*m);
  std::error_code ec;
  for (const fs::path f : {dir / m->file, dir / kOpenClipConfigFile})
    if (!fs::is_regular_file(f, ec))
      throw Error(ErrorCode::NotFound, "model '" + m->name() + "' is not downloaded (no '" + f.string() +
                                           "'); fetch it with `clipkit models download " + m->name() + "`");
  return dir.string();
}

}  // namespace clipkit
