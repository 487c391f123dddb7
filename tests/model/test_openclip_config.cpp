// open_clip_config.json handling: what is read, what is refused (naming the field), folder weight
// preference, and sizes that disagree with the tensors.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "io/checkpoint.h"
#include "model/openclip_archs.h"
#include "model/openclip_config.h"
#include "support/test_support.h"

using namespace clipkit;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

json fixture_config(const std::string& name) {
  std::ifstream f(test::data_path("openclip/" + name + "/open_clip_config.json"));
  return json::parse(f);
}

// A copy of a fixture folder with its open_clip_config.json replaced.
std::string folder_with_config(const std::string& name, const json& config) {
  const std::string dir = test::temp_dir() + "/" + name;
  fs::create_directories(dir);
  fs::copy_file(test::data_path("openclip/" + name + "/open_clip_model.safetensors"), dir + "/open_clip_model.safetensors");
  std::ofstream(dir + "/open_clip_config.json") << config.dump(2);
  return dir;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(OpenClipConfig, ReadsTheTowerSettings) {
  const StatedConfig s = parse_openclip_model_cfg(fixture_config("vit-bigg-14").at("model_cfg"), "cfg", false);
  EXPECT_EQ(s.kind, "vit");
  EXPECT_EQ(s.activation, "gelu");  // no quick_gelu: nn.GELU
  EXPECT_EQ(s.vision_head_width, 104);
  EXPECT_DOUBLE_EQ(s.vision_mlp_ratio, 4.9231);
  EXPECT_EQ(s.text_heads, 2);
  EXPECT_EQ(s.image_size, 28);
  EXPECT_EQ(s.patch_size, 7);
  const StatedConfig r = parse_openclip_model_cfg(fixture_config("rn50-quickgelu").at("model_cfg"), "cfg", false);
  EXPECT_EQ(r.kind, "resnet");
  EXPECT_EQ(r.activation, "quick_gelu");
  EXPECT_EQ(r.resnet_layers, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(r.vision_head_width, 64);
  // Every built-in configuration parses.
  for (const std::string& n : openclip_arch_names())
    EXPECT_NO_THROW(parse_openclip_model_cfg(*openclip_arch_config(n), n, true)) << n;
}

TEST(OpenClipConfig, UnsupportedFieldsAreRefusedByName) {
  const json base = fixture_config("vit-h-14-378-quickgelu").at("model_cfg");
  struct Case {
    const char* section;  // "" = model_cfg itself
    const char* field;
    json value;
  };
  const std::vector<Case> cases = {
      {"vision_cfg", "ls_init_value", 1e-5},       {"vision_cfg", "attentional_pool", true},
      {"vision_cfg", "pool_type", "avg"},          {"vision_cfg", "no_ln_pre", true},
      {"vision_cfg", "final_ln_after_pool", true}, {"vision_cfg", "output_tokens", true},
      {"vision_cfg", "act_kwargs", {{"approximate", "tanh"}}},
      {"vision_cfg", "norm_kwargs", {{"eps", 1e-6}}},
      {"vision_cfg", "timm_model_name", "vit_base_patch16_224"},
      {"vision_cfg", "pos_embed_type", "sin_cos_2d"},
      {"vision_cfg", "proj_bias", true},           {"vision_cfg", "some_new_field", 1},
      {"text_cfg", "hf_model_name", "roberta-base"}, {"text_cfg", "hf_tokenizer_name", "bert-base-uncased"},
      {"text_cfg", "pool_type", "last"},           {"text_cfg", "no_causal_mask", true},
      {"text_cfg", "proj_type", "mlp"},            {"text_cfg", "proj_bias", true},
      {"text_cfg", "ls_init_value", 1e-5},         {"text_cfg", "embed_cls", true},
      {"", "custom_text", true},                   {"", "init_logit_bias", -10},
      {"", "multimodal_cfg", {{"width", 512}}},
  };
  for (const Case& c : cases) {
    json cfg = base;
    (*c.section ? cfg[c.section] : cfg)[c.field] = c.value;
    const std::string msg = error_of([&] { parse_openclip_model_cfg(cfg, "x/open_clip_config.json", false); });
    EXPECT_NE(msg.find(c.field), std::string::npos) << c.field << ": " << msg;
    EXPECT_NE(msg.find("x/open_clip_config.json"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // Defaults, null and false are accepted.
  json ok = base;
  ok["vision_cfg"]["ls_init_value"] = nullptr;
  ok["vision_cfg"]["attentional_pool"] = false;
  ok["vision_cfg"]["pool_type"] = "tok";
  ok["vision_cfg"]["act_kwargs"] = json::object();
  ok["vision_cfg"]["patch_dropout"] = 0.5;  // training only
  ok["text_cfg"]["pool_type"] = "argmax";
  ok["text_cfg"]["proj_bias"] = false;
  ok["text_cfg"]["hf_model_name"] = nullptr;
  ok["custom_text"] = false;
  ok["init_logit_scale"] = 2.65;
  EXPECT_NO_THROW(parse_openclip_model_cfg(ok, "cfg", false));
}

TEST(OpenClipConfig, BadValuesAndOtherSettingsNameTheField) {
  const json base = fixture_config("vit-h-14-378-quickgelu").at("model_cfg");
  struct Case {
    const char* section;  // "" = model_cfg itself
    const char* field;
    json value;
    const char* message;  // what follows "model_cfg.<section>.<field>"
  };
  const std::vector<Case> cases = {
      {"text_cfg", "width", "wide", " must be an integer >= 1, got \"wide\""},
      {"text_cfg", "layers", 0, " must be an integer >= 1, got 0"},
      {"vision_cfg", "mlp_ratio", -1, " must be a positive number, got -1"},
      {"vision_cfg", "image_size", {28, 30}, " = [28,30] is not supported by clipkit"},
      {"vision_cfg", "patch_dropout", "x", " must be a number"},
      {"vision_cfg", "attn_pooler_queries", 128, " = 128 is not supported"},
      {"vision_cfg", "attn_pooler_heads", 4, " = 4 is not supported"},
      {"vision_cfg", "proj_type", "mlp", " = \"mlp\" is not supported"},
      {"text_cfg", "tokenizer_mode", "bert", " = \"bert\" is not supported"},
      {"text_cfg", "pad_id", 1, " = 1 is not supported"},
      {"text_cfg", "some_new_field", 1, " = 1 is not supported"},
      {"", "some_new_field", true, " = true is not supported"},
  };
  for (const Case& c : cases) {
    json cfg = base;
    (*c.section ? cfg[c.section] : cfg)[c.field] = c.value;
    try {
      parse_openclip_model_cfg(cfg, "x/open_clip_config.json", false);
      ADD_FAILURE() << c.field << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Format);
      const std::string want = std::string("x/open_clip_config.json: model_cfg.") + c.section + (*c.section ? "." : "") +
                               c.field + c.message;
      EXPECT_EQ(std::string(e.what()).rfind(want, 0), 0u) << e.what();
    }
  }
  // a square image size given as a pair, the end-of-text id and the settings of an hf text tower
  // (read only with hf_model_name) are accepted
  json ok = base;
  ok["vision_cfg"]["image_size"] = {28, 28};
  ok["text_cfg"]["pad_id"] = 0;
  ok["text_cfg"]["eos_id"] = 2;
  ok["text_cfg"]["hf_pooler_type"] = "mean_pooler";
  EXPECT_EQ(parse_openclip_model_cfg(ok, "cfg", false).image_size, 28);
}

TEST(OpenClipConfig, ModelLoadRefusesAnUnsupportedFolderConfig) {
  json cfg = fixture_config("vit-bigg-14");
  cfg["model_cfg"]["vision_cfg"]["ls_init_value"] = 1e-5;
  const std::string dir = folder_with_config("vit-bigg-14", cfg);
  const std::string msg = error_of([&] { Model::load(dir); });
  EXPECT_NE(msg.find("ls_init_value"), std::string::npos) << msg;
  EXPECT_NE(msg.find("open_clip_config.json"), std::string::npos) << msg;
}

TEST(OpenClipConfig, SizesThatDisagreeWithTheTensorsAreRefused) {
  json cfg = fixture_config("vit-bigg-14");
  cfg["model_cfg"]["vision_cfg"]["mlp_ratio"] = 4.0;  // 832 != 1024 rows of c_fc
  std::string msg = error_of([&] { Model::load(folder_with_config("vit-bigg-14", cfg)); });
  EXPECT_NE(msg.find("mlp_ratio"), std::string::npos) << msg;
  cfg = fixture_config("vit-bigg-14");
  cfg["model_cfg"]["vision_cfg"].erase("head_width");  // 208 // 64 = 3 heads: 208 does not split
  msg = error_of([&] { Model::load(folder_with_config("vit-bigg-14", cfg)); });
  EXPECT_NE(msg.find("does not split into 3 attention heads"), std::string::npos) << msg;
  cfg = fixture_config("vit-bigg-14");
  cfg["model_cfg"]["vision_cfg"]["image_size"] = 224;
  msg = error_of([&] { Model::load(folder_with_config("vit-bigg-14", cfg)); });
  EXPECT_NE(msg.find("image_size 224"), std::string::npos) << msg;
  cfg = fixture_config("vit-bigg-14");
  cfg["model_cfg"]["text_cfg"]["heads"] = 3;  // width 8
  msg = error_of([&] { Model::load(folder_with_config("vit-bigg-14", cfg)); });
  EXPECT_NE(msg.find("text_cfg.heads"), std::string::npos) << msg;
  cfg = fixture_config("vit-bigg-14");
  cfg.erase("model_cfg");
  msg = error_of([&] { Model::load(folder_with_config("vit-bigg-14", cfg)); });
  EXPECT_NE(msg.find("model_cfg"), std::string::npos) << msg;
}

TEST(OpenClipConfig, PreprocessCfg) {
  PreprocessConfig p;
  apply_openclip_preprocess_cfg({{"mean", {0.5, 0.5, 0.5}}, {"std", 0.25}, {"interpolation", "bilinear"},
                                 {"resize_mode", "longest"}, {"fill_color", 128}, {"size", 999},
                                 {"an_unknown_key", 1}},
                                "cfg", p);
  EXPECT_EQ(p.mean[1], 0.5f);
  EXPECT_EQ(p.std[2], 0.25f);
  EXPECT_EQ(p.interpolation, Interpolation::Bilinear);
  EXPECT_EQ(p.resize_mode, ResizeMode::Longest);
  EXPECT_EQ(p.fill_color, 128);
  EXPECT_EQ(p.resolution, 224);  // size is the model's, never the file's
  PreprocessConfig q;
  apply_openclip_preprocess_cfg({{"mean", {0.1, 0.2, 0.3}}, {"std", {0.4, 0.5, 0.6}}}, "cfg", q);  // older files
  EXPECT_EQ(q.resize_mode, ResizeMode::Shortest);
  EXPECT_EQ(q.interpolation, Interpolation::Bicubic);
  PreprocessConfig r;
  apply_openclip_preprocess_cfg({{"interpolation", "random"}, {"resize_mode", nullptr}}, "cfg", r);
  EXPECT_EQ(r.interpolation, Interpolation::Bicubic);  // open_clip resizes "random" bicubic at inference
  for (const auto& field_value : std::vector<std::pair<std::string, json>>{
           {"interpolation", "lanczos"}, {"resize_mode", "crop"}, {"mode", "RGBA"}, {"std", {1, 0, 1}},
           {"mean", {1, 2}}, {"fill_color", "white"}}) {
    const std::string& field = field_value.first;  // plain names: clang 14 lambdas cannot capture structured bindings
    const json& bad = field_value.second;
    PreprocessConfig x;
    const std::string msg = error_of([&] { apply_openclip_preprocess_cfg({{field, bad}}, "cfg", x); });
    EXPECT_NE(msg.find("preprocess_cfg." + field), std::string::npos) << field << ": " << msg;
  }
}

TEST(OpenClipConfig, FolderPrefersOpenClipWeights) {
  // An open_clip hub folder may also hold a timm or Hugging Face model.safetensors: with
  // open_clip_config.json present, open_clip_model.safetensors is the one read.
  const std::string dir = test::temp_dir() + "/hub";
  fs::create_directories(dir);
  for (const char* f : {"open_clip_config.json", "open_clip_model.safetensors"})
    fs::copy_file(test::data_path(std::string("openclip/rn50-quickgelu/") + f), dir + "/" + f);
  fs::copy_file(test::data_path("openclip/vit-h-14.safetensors"), dir + "/model.safetensors");
  const Checkpoint ck = load_checkpoint(dir);
  EXPECT_TRUE(ck.has("visual.attnpool.positional_embedding"));  // the ResNet, not the ViT beside it
  EXPECT_TRUE(ck.openclip_config.is_object());
  EXPECT_EQ(ck.openclip_config_path, (fs::path(dir) / "open_clip_config.json").string());
  // open_clip_pytorch_model.bin is taken when there is no open_clip_model.safetensors: here a
  // missing-file check only (the name order), with the .safetensors removed.
  fs::remove(dir + "/open_clip_model.safetensors");
  EXPECT_TRUE(load_checkpoint(dir).has("visual.proj"));  // falls back to model.safetensors
}
