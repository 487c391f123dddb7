// The table of open_clip architecture names against the configuration the fixtures' generator
// read from open_clip itself, and against the flags the pretrained models are known by.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "io/openclip_pretrained.h"
#include "model/openclip_archs.h"
#include "model/random_model.h"

using namespace clipkit;

namespace {

nlohmann::json read_json(const std::string& rel) {
  std::ifstream f(std::string(CLIPKIT_TEST_DATA) + "/" + rel);
  return nlohmann::json::parse(f);
}

}  // namespace

TEST(OpenClipArchs, ViTH14EqualsOpenClipsOwnConfig) {
  const nlohmann::json golden = read_json("openclip/golden/vit-h-14.json");
  ASSERT_EQ(golden.at("arch"), "ViT-H-14");
  const nlohmann::json* cfg = openclip_arch_config("ViT-H-14");
  ASSERT_NE(cfg, nullptr);
  EXPECT_EQ(*cfg, golden.at("builtin_config"));
}

TEST(OpenClipArchs, NamesAndQuickGeluTwins) {
  const std::vector<std::string> names = openclip_arch_names();
  EXPECT_EQ(names.size(), 27u);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size());
  for (const char* plain : {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-32-256", "ViT-B-16",
                            "ViT-B-16-plus-240", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-H-14-378", "ViT-g-14",
                            "ViT-bigG-14"}) {
    const nlohmann::json* cfg = openclip_arch_config(plain);
    ASSERT_NE(cfg, nullptr) << plain;
    EXPECT_FALSE(cfg->contains("quick_gelu")) << plain;
    const nlohmann::json* twin = openclip_arch_config(std::string(plain) + "-quickgelu");
    if (twin == nullptr) continue;  // ViT-B-32-256, ViT-B-16-plus-240, ViT-g-14 have none
    EXPECT_EQ(twin->at("quick_gelu"), true) << plain;
    nlohmann::json stripped = *twin;
    stripped.erase("quick_gelu");
    EXPECT_EQ(stripped, *cfg) << plain;
  }
  EXPECT_EQ(openclip_arch_config("ViT-g-14-quickgelu"), nullptr);
  EXPECT_EQ(openclip_arch_config("ViT-B-32-SigLIP"), nullptr);
  EXPECT_EQ(openclip_arch_config("vit-h-14"), nullptr);  // names are case-sensitive, as in open_clip
}

TEST(OpenClipArchs, HeadWidthsMlpRatiosAndImageSizes) {
  auto vision = [](const char* name) { return openclip_arch_config(name)->at("vision_cfg"); };
  EXPECT_EQ(vision("ViT-H-14").at("head_width"), 80);
  EXPECT_EQ(vision("ViT-H-14-378").at("image_size"), 378);
  EXPECT_EQ(vision("ViT-g-14").at("head_width"), 88);
  EXPECT_DOUBLE_EQ(vision("ViT-g-14").at("mlp_ratio").get<double>(), 4.3637);
  EXPECT_EQ(vision("ViT-bigG-14").at("head_width"), 104);
  EXPECT_DOUBLE_EQ(vision("ViT-bigG-14").at("mlp_ratio").get<double>(), 4.9231);
  EXPECT_EQ(static_cast<int>(1664 * vision("ViT-bigG-14").at("mlp_ratio").get<double>()), 8192);
  EXPECT_EQ(static_cast<int>(1408 * vision("ViT-g-14").at("mlp_ratio").get<double>()), 6144);
  EXPECT_FALSE(vision("ViT-L-14").contains("head_width"));
  EXPECT_EQ(vision("ViT-B-16-plus-240").at("image_size"), 240);
  EXPECT_EQ(vision("ViT-B-32-256").at("image_size"), 256);
  EXPECT_EQ(vision("ViT-L-14-336").at("image_size"), 336);
  EXPECT_TRUE(vision("RN50x4").at("layers").is_array());
  EXPECT_TRUE(vision("RN50x4").at("patch_size").is_null());
  EXPECT_EQ(vision("RN50x64").at("image_size"), 448);
  // Every in-scope text tower has 64-wide heads.
  for (const std::string& n : openclip_arch_names()) {
    const auto& t = openclip_arch_config(n)->at("text_cfg");
    EXPECT_EQ(t.at("width").get<int>(), 64 * t.at("heads").get<int>()) << n;
  }
}

// `clipkit create-random --arch NAME` for an open_clip name writes open_clip's tensors: every
// architecture's parameter count equals open_clip's published model profile (the figure the
// pretrained table carries), which catches a wrong MLP ratio (ViT-g-14, ViT-bigG-14) or size.
TEST(OpenClipArchs, RandomModelsHaveOpenClipsParameterCounts) {
  int checked = 0;
  std::set<std::string> seen;
  for (const OpenClipPretrained& p : openclip_pretrained()) {
    if (!seen.insert(p.arch).second) continue;
    const ClipConfig c = clip_config(p.arch);
    const double millions = static_cast<double>(clip_parameter_count(clip_state_dict_layout(c))) / 1e6;
    EXPECT_NEAR(millions, p.params_millions, 0.005 + 1e-9) << p.arch;
    ++checked;
  }
  EXPECT_GE(checked, 15);
  const ClipConfig big = clip_config("ViT-bigG-14");
  EXPECT_EQ(big.vision_mlp_width, 8192);  // int(1664 * 4.9231)
  EXPECT_EQ(clip_config("ViT-g-14").vision_mlp_width, 6144);  // int(1408 * 4.3637)
  EXPECT_EQ(clip_config("ViT-H-14").vision_mlp_width, 5120);
}
