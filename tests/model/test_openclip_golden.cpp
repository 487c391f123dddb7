// open_clip's own CLIP models against goldens computed by open_clip (tests/data/openclip/, see
// tests/data/FIXTURES.md): configured from an open_clip_config.json beside the weights, or from a
// built-in architecture name for a bare weights file. Preprocessing, token ids and both towers'
// embeddings, in f32 (open_clip's tolerance) and in f16 / int8.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/image.h"
#include "clipkit/model.h"
#include "clipkit/tokenizer.h"
#include "io/openclip_pretrained.h"
#include "io/safetensors.h"
#include "model/openclip_archs.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

struct Fixture {
  const char* name;  // golden/<name>.{json,safetensors}
  const char* path;  // relative to tests/data/openclip
  const char* arch;  // --arch for the bare file, "" for folders
};

const Fixture kFixtures[] = {
    {"vit-h-14", "vit-h-14.safetensors", "ViT-H-14"},
    {"vit-bigg-14", "vit-bigg-14", ""},
    {"vit-h-14-378-quickgelu", "vit-h-14-378-quickgelu", ""},
    {"rn50-quickgelu", "rn50-quickgelu", ""},
};

std::string openclip_path(const std::string& rel) { return test::data_path("openclip/" + rel); }

const nlohmann::json& golden_json(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    std::ifstream f(openclip_path("golden/" + name + ".json"));
    it = cache.emplace(name, nlohmann::json::parse(f)).first;
  }
  return it->second;
}

const SafetensorsFile& golden_tensors(const std::string& name) {
  static std::map<std::string, SafetensorsFile> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, read_safetensors(openclip_path("golden/" + name + ".safetensors"))).first;
  return it->second;
}

std::vector<float> golden_f32(const std::string& name, const std::string& tensor) {
  return golden_tensors(name).tensors.at(tensor).to_f32();
}

std::string sha256_hex(const void* data, size_t n) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data, n, digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

// The image files of the golden JSON ("../images/<file>", relative to tests/data/openclip).
std::string image_path(const nlohmann::json& image) {
  const std::string f = image.at("file").get<std::string>();
  return test::data_path("images/" + f.substr(f.rfind('/') + 1));
}

std::shared_ptr<Model> load(const Fixture& fx, const std::string& dtype = "f32",
                            std::vector<std::string>* warnings = nullptr) {
  ModelOptions o;
  o.arch = fx.arch;
  o.dtype = dtype;
  o.on_warning = [warnings](const std::string& w) {
    if (warnings) warnings->push_back(w);
  };
  return Model::load(openclip_path(fx.path), o);
}

void expect_rows_match(const Embeddings& got, const std::vector<float>& want, const std::string& what,
                       double min_cos, double rel) {
  ASSERT_EQ(got.data.size(), want.size()) << what;
  const size_t dim = static_cast<size_t>(got.dim);
  for (int64_t r = 0; r < got.rows; ++r)
    EXPECT_GE(test::cosine(got.row(r), want.data() + r * dim, dim), min_cos) << what << " row " << r;
  if (rel > 0) {
    const double diff = test::max_abs_diff(got.data.data(), want.data(), want.size());
    const double ref = test::max_abs(want.data(), want.size());
    EXPECT_LE(diff, rel * ref) << what << ": max|diff| " << diff << ", max|ref| " << ref;
  }
}

class OpenClipGolden : public ::testing::TestWithParam<Fixture> {};

TEST_P(OpenClipGolden, ConfigurationAsOpenClipResolvesIt) {
  const Fixture& fx = GetParam();
  std::vector<std::string> warnings;
  const auto m = load(fx, "f32", &warnings);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  const nlohmann::json& g = golden_json(fx.name);
  const nlohmann::json& a = g.at("architecture");
  const Architecture& arch = m->info().arch;
  EXPECT_EQ(arch.embed_dim, a.at("embed_dim").get<int>());
  EXPECT_EQ(arch.text_width, a.at("text_width").get<int>());
  EXPECT_EQ(arch.text_heads, a.at("text_heads").get<int>());
  EXPECT_EQ(arch.text_layers, a.at("text_layers").get<int>());
  if (a.at("tower") == "VisionTransformer") {
    EXPECT_EQ(arch.kind, "vit");
    EXPECT_EQ(arch.vision_width, a.at("vision_width").get<int>());
    EXPECT_EQ(arch.vision_heads, a.at("vision_heads").get<int>());
    EXPECT_EQ(arch.vision_width / arch.vision_heads, a.at("vision_head_width").get<int>());
    EXPECT_EQ(arch.vision_patch_size, a.at("patch_size").get<int>());
    EXPECT_EQ(arch.image_resolution, a.at("image_size").get<int>());
    EXPECT_EQ(arch.activation, a.at("activation") == "QuickGELU" ? "quick_gelu" : "gelu");
  } else {
    EXPECT_EQ(arch.kind, "resnet");
  }
  EXPECT_EQ(m->info().config_source, *fx.arch ? "--arch " + std::string(fx.arch) : "open_clip_config.json");
  const nlohmann::json& p = g.at("preprocess");
  const PreprocessConfig& pc = m->preprocess_config();
  EXPECT_EQ(pc.resolution, p.at("size").get<int>());
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(pc.mean[c], p.at("mean")[c].get<float>());
    EXPECT_EQ(pc.std[c], p.at("std")[c].get<float>());
  }
  EXPECT_EQ(interpolation_name(pc.interpolation), p.at("interpolation").get<std::string>());
  EXPECT_EQ(resize_mode_name(pc.resize_mode), p.at("resize_mode").get<std::string>());
  EXPECT_EQ(pc.fill_color, p.at("fill_color").get<int>());
  // logit_scale as open_clip applies it: logits_per_image = scale · cos(image, text).
  const std::vector<float> in = golden_f32(fx.name, "image_embeds_normalized");
  const std::vector<float> tn = golden_f32(fx.name, "text_embeds_normalized");
  const std::vector<float> logits = golden_f32(fx.name, "logits_per_image");
  const size_t dim = static_cast<size_t>(arch.embed_dim), texts = tn.size() / dim;
  double dot = 0;
  for (size_t k = 0; k < dim; ++k) dot += static_cast<double>(in[k]) * tn[k];
  EXPECT_NEAR(m->logit_scale() * dot, logits[0], 1e-5 * std::fabs(logits[0]) + 1e-6);
  EXPECT_EQ(logits.size(), texts * (in.size() / dim));
}

// The model's preprocessing of every fixture image: the uint8 crop and the float32 tensor are the
// bytes open_clip made (sha256 of both), and the tensor is (pixel_u8 / 255 - mean) / std within 1e-6.
TEST_P(OpenClipGolden, PreprocessingIsOpenClips) {
  const Fixture& fx = GetParam();
  const auto m = load(fx);
  const PreprocessConfig& cfg = m->preprocess_config();
  const nlohmann::json& g = golden_json(fx.name);
  const SafetensorsFile& gt = golden_tensors(fx.name);
  const auto u8 = gt.tensors.find("pixel_u8");
  const int n = cfg.resolution;
  const size_t plane = static_cast<size_t>(n) * n;
  size_t i = 0;
  for (const nlohmann::json& im : g.at("images")) {
    SCOPED_TRACE(im.at("file").get<std::string>());
    const Image img = decode_image_file(image_path(im));
    const Image rgb = preprocess_to_rgb8(img, cfg);
    ASSERT_EQ(rgb.width, n);
    ASSERT_EQ(rgb.height, n);
    EXPECT_EQ(sha256_hex(rgb.pixels.data(), rgb.pixels.size()), im.at("crop_u8_sha256").get<std::string>());
    const std::vector<float> px = preprocess(img, cfg);
    EXPECT_EQ(sha256_hex(px.data(), px.size() * sizeof(float)), im.at("pixels_f32_sha256").get<std::string>());
    if (u8 != gt.tensors.end()) {
      const uint8_t* want = static_cast<const uint8_t*>(u8->second.data) + i * plane * 3;
      double worst = 0;
      for (size_t k = 0; k < plane; ++k)
        for (int c = 0; c < 3; ++c) {
          const float ref = (static_cast<float>(want[3 * k + c]) / 255.0f - cfg.mean[c]) / cfg.std[c];
          worst = std::max(worst, static_cast<double>(std::fabs(px[c * plane + k] - ref)));
        }
      EXPECT_LE(worst, 1e-6);
    }
    ++i;
  }
  EXPECT_EQ(i, 12u);
}

TEST_P(OpenClipGolden, EmbeddingsMatchInF32) {
  const Fixture& fx = GetParam();
  const auto m = load(fx);
  const nlohmann::json& g = golden_json(fx.name);
  std::vector<std::string> files;
  for (const nlohmann::json& im : g.at("images")) files.push_back(image_path(im));
  expect_rows_match(m->encode_image_files(files), golden_f32(fx.name, "image_embeds"), "image_embeds", 0.99999, 1e-4);
  const std::vector<std::string> texts = g.at("texts").get<std::vector<std::string>>();
  const auto ids = Tokenizer::instance().tokenize(texts, 77, /*truncate=*/true);
  const Tensor& want_ids = golden_tensors(fx.name).tensors.at("input_ids");
  ASSERT_EQ(ids.size() * 77, static_cast<size_t>(want_ids.numel()));
  for (size_t t = 0; t < ids.size(); ++t)
    EXPECT_EQ(0, std::memcmp(ids[t].data(), static_cast<const int32_t*>(want_ids.data) + t * 77, 77 * sizeof(int32_t)))
        << texts[t];
  expect_rows_match(m->encode_tokens(ids), golden_f32(fx.name, "text_embeds"), "text_embeds", 0.99999, 1e-4);
}

// f16 storage and int8 compute: the tolerances of the other golden tests for those dtypes (f16
// cosine >= 0.9999; int8 >= 0.999), except int8 text: these text towers are 8 and 16 wide (heads 1 to
// 4 wide), where quantising each token's 8 or 16 activations costs far more than at real widths
// (measured 1 - cos 1.4e-3 .. 1.6e-2; a wrong head count gives cosines below 0).
TEST_P(OpenClipGolden, EmbeddingsInF16AndInt8) {
  const Fixture& fx = GetParam();
  const nlohmann::json& g = golden_json(fx.name);
  std::vector<std::string> files;
  for (const nlohmann::json& im : g.at("images")) files.push_back(image_path(im));
  const std::vector<std::string> texts = g.at("texts").get<std::vector<std::string>>();
  struct Tol {
    const char* dtype;
    double image, text;
  };
  for (const auto& [dtype, min_image, min_text] : {Tol{"f16", 0.9999, 0.9999}, Tol{"int8", 0.999, 0.97}}) {
    SCOPED_TRACE(dtype);
    const auto m = load(fx, dtype);
    const Embeddings ie = m->encode_image_files(files), te = m->encode_texts(texts);
    const std::vector<float> iw = golden_f32(fx.name, "image_embeds"), tw = golden_f32(fx.name, "text_embeds");
    double wi = 1, wt = 1;
    for (int64_t r = 0; r < ie.rows; ++r) wi = std::min(wi, test::cosine(ie.row(r), iw.data() + r * ie.dim, ie.dim));
    for (int64_t r = 0; r < te.rows; ++r) wt = std::min(wt, test::cosine(te.row(r), tw.data() + r * te.dim, te.dim));
    std::printf("  %s %s: image 1-cos %.2e, text 1-cos %.2e\n", fx.name, dtype, 1 - wi, 1 - wt);
    expect_rows_match(ie, iw, "image_embeds", min_image, 0);
    expect_rows_match(te, tw, "text_embeds", min_text, 0);
  }
}

// The golden JSON's "mistakes" record how far open_clip's image embeddings move when one
// preprocessing setting is changed (bilinear for bicubic, squash for shortest and back). The same
// change in clipkit's preprocessing moves its embeddings by the same amounts: a check of the
// bilinear filter and the resize modes on every fixture image against open_clip's own numbers.
TEST_P(OpenClipGolden, OtherPreprocessingSettingsMoveTheEmbeddingsAsInOpenClip) {
  const Fixture& fx = GetParam();
  const auto m = load(fx);
  const nlohmann::json& g = golden_json(fx.name);
  const std::vector<float> want = golden_f32(fx.name, "image_embeds");
  const size_t dim = static_cast<size_t>(m->info().arch.embed_dim);
  const int n = m->preprocess_config().resolution;
  const size_t image_floats = 3 * static_cast<size_t>(n) * n;
  int checked = 0;
  for (const nlohmann::json& mistake : g.at("mistakes")) {
    const std::string what = mistake.at("mistake").get<std::string>();
    PreprocessConfig cfg = m->preprocess_config();
    if (what == "bilinear instead of bicubic")
      cfg.interpolation = Interpolation::Bilinear;
    else if (what.rfind("resize_mode squash instead of", 0) == 0)
      cfg.resize_mode = ResizeMode::Squash;
    else if (what.rfind("resize_mode shortest", 0) == 0)
      cfg.resize_mode = ResizeMode::Shortest;
    else
      continue;
    SCOPED_TRACE(what);
    std::vector<float> pixels;
    for (const nlohmann::json& im : g.at("images")) {
      const std::vector<float> px = preprocess(decode_image_file(image_path(im)), cfg);
      ASSERT_EQ(px.size(), image_floats);
      pixels.insert(pixels.end(), px.begin(), px.end());
    }
    const Embeddings e = m->encode_images(pixels.data(), static_cast<int64_t>(g.at("images").size()));
    double min_cos = 1.0;
    for (int64_t r = 0; r < e.rows; ++r)
      min_cos = std::min(min_cos, test::cosine(e.row(r), want.data() + r * dim, dim));
    const double max_abs = test::max_abs_diff(e.data.data(), want.data(), want.size());
    const double scale = test::max_abs(want.data(), want.size());
    const nlohmann::json& ref = mistake.at("image");
    EXPECT_NEAR(max_abs, ref.at("max_abs").get<double>(), 2e-5 * scale);
    const double ref_cos = ref.at("min_cosine").get<double>();
    EXPECT_NEAR(min_cos, ref_cos, 1e-7 + 1e-5 * (1.0 - ref_cos));
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, OpenClipGolden, ::testing::ValuesIn(kFixtures),
                         [](const ::testing::TestParamInfo<Fixture>& info) {
                           std::string n = info.param.name;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// A bare file without --arch: loads with OpenAI's defaults (QuickGELU, 64-wide heads) and one
// warning naming what was assumed and how to state it; the embeddings then differ from open_clip's.
TEST(OpenClipBare, WithoutArchLoadsWithOneWarning) {
  std::vector<std::string> warnings;
  ModelOptions o;
  o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  const auto m = Model::load(openclip_path("vit-h-14.safetensors"), o);
  ASSERT_EQ(warnings.size(), 1u);
  const std::string& w = warnings[0];
  EXPECT_EQ(w.find('\n'), std::string::npos);
  EXPECT_NE(w.find("vit-h-14.safetensors"), std::string::npos) << w;
  EXPECT_NE(w.find("QuickGELU"), std::string::npos) << w;
  EXPECT_NE(w.find("64-wide heads"), std::string::npos) << w;
  EXPECT_NE(w.find("--arch NAME"), std::string::npos) << w;
  EXPECT_NE(w.find("open_clip_config.json"), std::string::npos) << w;
  EXPECT_EQ(m->info().warnings, warnings);
  EXPECT_EQ(m->info().config_source, "assumed");
  EXPECT_EQ(m->info().arch.activation, "quick_gelu");
  EXPECT_EQ(m->info().arch.vision_heads, 160 / 64);
  EXPECT_EQ(m->info().arch.text_heads, 1);  // width 16: one head at least
  // Stating only the activation leaves the head widths assumed: still one warning, about them.
  warnings.clear();
  o.activation = "gelu";
  const auto g = Model::load(openclip_path("vit-h-14.safetensors"), o);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0].find("QuickGELU"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("head widths"), std::string::npos) << warnings[0];
  // The assumed text heads (1 instead of 16) give other text embeddings than open_clip's.
  const auto texts = golden_json("vit-h-14").at("texts").get<std::vector<std::string>>();
  const Embeddings e = g->encode_texts(texts);
  const std::vector<float> want = golden_f32("vit-h-14", "text_embeds");
  EXPECT_GT(test::max_abs_diff(e.data.data(), want.data(), want.size()), 1e-2 * test::max_abs(want.data(), want.size()));
}

TEST(OpenClipBare, UnknownArchIsRefused) {
  ModelOptions o;
  o.arch = "ViT-Q-99";
  try {
    Model::load(openclip_path("vit-h-14.safetensors"), o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("ViT-Q-99"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("clipkit list archs"), std::string::npos) << e.what();
  }
  o.arch = "RN50";  // a ResNet name for a ViT file
  EXPECT_THROW(Model::load(openclip_path("vit-h-14.safetensors"), o), Error);
}

}  // namespace

// Every pretrained model `clipkit models download` lists has its architecture in the built-in
// table, so a download can write its open_clip_config.json and the model loads configured.
TEST(OpenClipTables, EveryListedPretrainedModelHasABuiltInArchitecture) {
  ASSERT_FALSE(clipkit::openclip_pretrained().empty());
  for (const auto& m : clipkit::openclip_pretrained()) {
    const nlohmann::json* cfg = clipkit::openclip_arch_config(m.arch);
    ASSERT_NE(cfg, nullptr) << m.name();
    EXPECT_EQ(cfg->value("quick_gelu", false), m.arch.find("-quickgelu") != std::string::npos) << m.name();
  }
}

// A file whose metadata keeps OpenAI's CLIP constructor arguments (the tiny test models, the demo
// model) states OpenAI's architecture: no warning, QuickGELU, and the heads it names.
TEST(OpenClipBare, OpenAiConfigInTheMetadataStatesTheArchitecture) {
  std::vector<std::string> warnings;
  ModelOptions o;
  o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  const auto m = Model::load(test::data_path("models/tiny-vit.safetensors"), o);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  EXPECT_EQ(m->info().config_source, "metadata config");
  EXPECT_EQ(m->info().arch.activation, "quick_gelu");
  EXPECT_EQ(m->info().arch.text_heads, 1);    // "transformer_heads": 1
  EXPECT_EQ(m->info().arch.vision_heads, 2);  // "vision_heads": 2
  // The same weights without that metadata state nothing: the load warns.
  std::ifstream in(test::data_path("models/tiny-vit.safetensors"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  header.erase("__metadata__");
  const std::string h = header.dump();
  const uint64_t hn = h.size();
  const std::string bare = test::temp_dir() + "/bare.safetensors";
  {
    std::ofstream out(bare, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&hn), 8);
    out << h << bytes.substr(8 + n);
  }
  const auto b = Model::load(bare, o);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(b->info().config_source, "assumed");
}
