// infer_architecture on the fixture checkpoints and on synthetic shape sets of the released
// configurations; the random-model layout against the reference state_dicts of the fixtures.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "clipkit/error.h"
#include "model/encoder.h"
#include "model/model_test_util.h"
#include "model/openclip_config.h"
#include "io/checkpoint.h"
#include "model/random_model.h"

using namespace clipkit;
using namespace clipkit::modeltest;

namespace {

// A checkpoint holding only shapes (no data): all infer_architecture looks at.
Checkpoint shapes_only(const std::vector<TensorSpec>& layout) {
  Checkpoint c;
  c.path = "synthetic";
  c.format = "safetensors";
  for (const auto& s : layout) {
    Tensor t;
    t.dtype = s.dtype;
    t.shape = s.shape;
    c.tensors[s.name] = t;
  }
  return c;
}

Checkpoint shapes_of(const std::string& arch) { return shapes_only(clip_state_dict_layout(clip_config(arch))); }

}  // namespace

TEST(InferArchitecture, TinyVitFixture) {
  Architecture a = infer_architecture(read_openai_safetensors("models/tiny-vit.safetensors"));
  EXPECT_EQ(a.kind, "vit");
  EXPECT_EQ(a.embed_dim, 64);
  EXPECT_EQ(a.image_resolution, 64);
  EXPECT_EQ(a.vision_width, 128);
  EXPECT_EQ(a.vision_layers, 2);
  EXPECT_EQ(a.vision_heads, 2);
  EXPECT_EQ(a.vision_patch_size, 16);
  EXPECT_EQ(a.text_heads, 1);
  EXPECT_TRUE(a.activation.empty());
}

TEST(InferArchitecture, TinyRnFixture) {
  // FIXTURES.md: vision_layers [1,1,1,1], width 8, resolution 64, vision heads 4, embed 64.
  Architecture a = infer_architecture(read_openai_safetensors("models/tiny-rn.safetensors"));
  EXPECT_EQ(a.kind, "resnet");
  EXPECT_EQ(a.resnet_layers, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(a.vision_layers, 4);
  EXPECT_EQ(a.vision_width, 8);
  EXPECT_EQ(a.vision_heads, 4);
  EXPECT_EQ(a.image_resolution, 64);
  EXPECT_EQ(a.embed_dim, 64);
  EXPECT_EQ(a.vision_patch_size, 0);
  EXPECT_EQ(a.text_width, 64);
  EXPECT_EQ(a.text_layers, 2);
  EXPECT_EQ(a.context_length, 77);
}

TEST(InferArchitecture, ReleasedVitConfigs) {
  // Published CLIP configurations (clip/model.py build_model on the released checkpoints).
  struct Want {
    const char* name;
    int embed, res, width, layers, heads, patch, text_width, text_heads;
  };
  for (const Want& w : {Want{"ViT-B/32", 512, 224, 768, 12, 12, 32, 512, 8}, Want{"ViT-B/16", 512, 224, 768, 12, 12, 16, 512, 8},
                        Want{"ViT-L/14", 768, 224, 1024, 24, 16, 14, 768, 12},
                        Want{"ViT-L/14@336px", 768, 336, 1024, 24, 16, 14, 768, 12}}) {
    SCOPED_TRACE(w.name);
    Architecture a = infer_architecture(shapes_of(w.name));
    EXPECT_EQ(a.kind, "vit");
    EXPECT_EQ(a.embed_dim, w.embed);
    EXPECT_EQ(a.image_resolution, w.res);
    EXPECT_EQ(a.vision_width, w.width);
    EXPECT_EQ(a.vision_layers, w.layers);
    EXPECT_EQ(a.vision_heads, w.heads);
    EXPECT_EQ(a.vision_patch_size, w.patch);
    EXPECT_EQ(a.text_width, w.text_width);
    EXPECT_EQ(a.text_heads, w.text_heads);
    EXPECT_EQ(a.text_layers, 12);
    EXPECT_EQ(a.context_length, 77);
    EXPECT_EQ(a.vocab_size, 49408);
  }
}

TEST(InferArchitecture, ReleasedResNetConfigs) {
  struct Want {
    const char* name;
    int embed, res, width, heads, text_width;
    std::vector<int> layers;
  };
  for (const Want& w : {Want{"RN50", 1024, 224, 64, 32, 512, {3, 4, 6, 3}}, Want{"RN101", 512, 224, 64, 32, 512, {3, 4, 23, 3}},
                        Want{"RN50x4", 640, 288, 80, 40, 640, {4, 6, 10, 6}},
                        Want{"RN50x16", 768, 384, 96, 48, 768, {6, 8, 18, 8}},
                        Want{"RN50x64", 1024, 448, 128, 64, 1024, {3, 15, 36, 10}}}) {
    SCOPED_TRACE(w.name);
    Architecture a = infer_architecture(shapes_of(w.name));
    EXPECT_EQ(a.kind, "resnet");
    EXPECT_EQ(a.embed_dim, w.embed);
    EXPECT_EQ(a.image_resolution, w.res);
    EXPECT_EQ(a.vision_width, w.width);
    EXPECT_EQ(a.vision_heads, w.heads);
    EXPECT_EQ(a.resnet_layers, w.layers);
    EXPECT_EQ(a.text_width, w.text_width);
    EXPECT_EQ(a.text_heads, w.text_width / 64);
  }
}

TEST(InferArchitecture, UnusualShapes) {
  // Widths, depths and resolutions no released model has.
  Architecture a = infer_architecture(shapes_of(
      "custom:kind=vit,embed_dim=96,image_resolution=80,vision_width=192,vision_layers=3,vision_patch_size=10,"
      "text_width=128,text_layers=5,context_length=40,vocab_size=1000"));
  EXPECT_EQ(a.image_resolution, 80);
  EXPECT_EQ(a.vision_patch_size, 10);
  EXPECT_EQ(a.vision_heads, 3);
  EXPECT_EQ(a.vision_layers, 3);
  EXPECT_EQ(a.embed_dim, 96);
  EXPECT_EQ(a.text_heads, 2);
  EXPECT_EQ(a.text_layers, 5);
  EXPECT_EQ(a.context_length, 40);
  EXPECT_EQ(a.vocab_size, 1000);
  Architecture r = infer_architecture(shapes_of(
      "custom:kind=resnet,embed_dim=32,image_resolution=96,vision_width=6,vision_layers=2-1-3-1,text_width=64,text_layers=1"));
  EXPECT_EQ(r.resnet_layers, (std::vector<int>{2, 1, 3, 1}));
  EXPECT_EQ(r.vision_heads, 3);
  EXPECT_EQ(r.image_resolution, 96);
}

TEST(InferArchitecture, HuggingFaceHeadCountWins) {
  Checkpoint c = shapes_of("ViT-B/32");
  c.hf_config = {{"vision_config", {{"num_attention_heads", 16}}}, {"text_config", {{"num_attention_heads", 4}}}};
  Architecture a = infer_architecture(c);
  EXPECT_EQ(a.vision_heads, 16);
  EXPECT_EQ(a.text_heads, 4);
}

TEST(InferArchitecture, ErrorsNameTheTensor) {
  Checkpoint c = shapes_of("ViT-B/32");
  c.tensors.erase("ln_final.weight");
  try {
    infer_architecture(c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ln_final.weight"), std::string::npos) << e.what();
  }
  c = shapes_of("ViT-B/32");
  c.tensors["visual.positional_embedding"].shape = {49, 768};
  EXPECT_THROW(infer_architecture(c), Error);
  c = shapes_of("ViT-B/32");
  for (auto it = c.tensors.begin(); it != c.tensors.end();)
    it = it->first.rfind("visual.transformer.resblocks.3.", 0) == 0 ? c.tensors.erase(it) : std::next(it);
  try {
    infer_architecture(c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resblocks.3"), std::string::npos) << e.what();
  }
  Checkpoint empty;
  empty.path = "x";
  EXPECT_THROW(infer_architecture(empty), Error);
  c = shapes_of("custom:kind=vit,embed_dim=8,image_resolution=32,vision_width=64,vision_layers=1,vision_patch_size=16,"
                "text_width=64,text_layers=1");
  c.tensors["ln_final.weight"].shape = {32};
  EXPECT_EQ(infer_architecture(c).text_heads, 1);  // width 32 without a configuration: one head assumed
  StatedConfig stated = parse_openclip_model_cfg(
      {{"vision_cfg", {{"layers", 1}, {"width", 64}, {"head_width", 48}, {"patch_size", 16}}},
       {"text_cfg", {{"width", 32}, {"heads", 2}, {"mlp_ratio", 8}}}},  // c_fc keeps 256 rows
      "cfg", /*from_name=*/true);
  try {
    infer_architecture(c, &stated);  // 64 // 48 = 1 head: fine; text 32 / 2: fine
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  stated.text_heads = 3;
  try {
    infer_architecture(c, &stated);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("text_cfg.heads from cfg"), std::string::npos) << e.what();
  }
}

TEST(ResolveActivation, SourcesAndOverride) {
  Checkpoint c = shapes_of("ViT-B/32");
  EXPECT_EQ(resolve_activation(c, "auto"), "quick_gelu");
  EXPECT_EQ(resolve_activation(c, "gelu"), "gelu");
  c.hf_config = {{"text_config", {{"hidden_act", "gelu"}}}};
  EXPECT_EQ(resolve_activation(c, "auto"), "gelu");
  EXPECT_EQ(resolve_activation(c, "quick_gelu"), "quick_gelu");
  c.hf_config = {{"text_config", {{"hidden_act", "gelu_new"}}}};
  EXPECT_THROW(resolve_activation(c, "auto"), Error);
  c.hf_config = nullptr;
  c.metadata["activation"] = "gelu";
  EXPECT_EQ(resolve_activation(c, "auto"), "gelu");
  c.metadata.clear();
  c.metadata["config"] = R"({"embed_dim": 512, "quick_gelu": false})";
  EXPECT_EQ(resolve_activation(c, "auto"), "gelu");
  EXPECT_THROW(resolve_activation(c, "relu"), Error);
  // The fixtures' metadata names no activation: OpenAI's QuickGELU.
  EXPECT_EQ(resolve_activation(read_openai_safetensors("models/tiny-vit.safetensors"), "auto"), "quick_gelu");
}

// The random-model layout reproduces the reference state_dict of each fixture: same names, shapes,
// dtypes and order (the fixture files store 8-byte tensors first, otherwise state_dict order).
TEST(RandomLayout, MatchesTheFixtureStateDicts) {
  struct Fixture {
    const char* file;
    const char* config;
  };
  for (const Fixture& f :
       {Fixture{"models/tiny-vit.safetensors",
                "custom:kind=vit,embed_dim=64,image_resolution=64,vision_width=128,vision_layers=2,vision_patch_size=16,"
                "text_width=64,text_layers=2"},
        Fixture{"models/tiny-rn.safetensors",
                "custom:kind=resnet,embed_dim=64,image_resolution=64,vision_width=8,vision_layers=1-1-1-1,"
                "text_width=64,text_layers=2"}}) {
    SCOPED_TRACE(f.file);
    const SafetensorsFile ref = read_safetensors(test::data_path(f.file));
    std::vector<TensorSpec> layout = clip_state_dict_layout(clip_config(f.config));
    std::stable_partition(layout.begin(), layout.end(), [](const TensorSpec& s) { return s.dtype == DType::I64; });
    ASSERT_EQ(layout.size(), ref.order.size());
    for (size_t i = 0; i < layout.size(); ++i) {
      EXPECT_EQ(layout[i].name, ref.order[i]) << i;
      const Tensor& t = ref.tensors.at(ref.order[i]);
      EXPECT_EQ(layout[i].shape, t.shape) << layout[i].name;
      EXPECT_EQ(layout[i].dtype, t.dtype) << layout[i].name;
    }
  }
}

TEST(RandomLayout, ParameterCountsOfReleasedModels) {
  // Published totals (model.parameters()), e.g. "Model parameters: 151,277,313" for ViT-B/32 in
  // OpenAI's notebook; the others as listed by open_clip's model table, in millions.
  EXPECT_EQ(clip_parameter_count(clip_state_dict_layout(clip_config("ViT-B/32"))), 151277313);
  struct Want {
    const char* name;
    double millions;
  };
  for (const Want& w : {Want{"ViT-B/16", 149.62}, Want{"ViT-L/14", 427.62}, Want{"ViT-L/14@336px", 427.94},
                        Want{"RN50", 102.01}, Want{"RN101", 119.69}, Want{"RN50x4", 178.30}, Want{"RN50x16", 290.98},
                        Want{"RN50x64", 623.26}}) {
    const double m = clip_parameter_count(clip_state_dict_layout(clip_config(w.name))) / 1e6;
    EXPECT_NEAR(m, w.millions, 0.006) << w.name;
  }
}

TEST(RandomLayout, BadConfigsAreRejected) {
  EXPECT_THROW(clip_config("ViT-H/14"), Error);
  EXPECT_THROW(clip_config("custom:kind=vit,embed_dim=8"), Error);
  EXPECT_THROW(clip_config("custom:kind=vit,embed_dim=x"), Error);
  EXPECT_THROW(clip_config("custom:colour=blue"), Error);
  EXPECT_THROW(clip_config("custom:kind=vit,embed_dim=8,image_resolution=30,vision_width=64,vision_layers=1,"
                           "vision_patch_size=16,text_width=64,text_layers=1"),
               Error);
  EXPECT_EQ(clip_config_names().size(), 9u);
}

TEST(InferArchitecture, MalformedTowersNameTheTensorOrTheMissingBlocks) {
  auto error_of = [](const Checkpoint& c) -> std::pair<ErrorCode, std::string> {
    try {
      infer_architecture(c);
    } catch (const Error& e) {
      return {e.code(), e.what()};
    }
    return {ErrorCode::Internal, ""};
  };
  auto expect_error = [&](const Checkpoint& c, ErrorCode code, const std::string& part) {
    const auto [got, msg] = error_of(c);
    EXPECT_EQ(got, code) << msg;
    EXPECT_NE(msg.find(part), std::string::npos) << "expected '" << part << "' in '" << msg << "'";
  };
  Checkpoint c = shapes_of("ViT-B/32");
  c.tensors["text_projection"].shape = {512};
  expect_error(c, ErrorCode::Shape, "'text_projection' has shape [512], expected 2 dimensions");
  c = shapes_of("ViT-B/32");
  c.tensors["ln_final.weight"].shape = {0};
  expect_error(c, ErrorCode::Shape, "'ln_final.weight' has an empty dimension [0]");
  c = shapes_of("ViT-B/32");
  c.tensors["visual.conv1.weight"].shape = {768, 1, 32, 32};
  expect_error(c, ErrorCode::Shape, "'visual.conv1.weight' has shape [768, 1, 32, 32], expected [width, 3, patch, patch]");
  c = shapes_of("ViT-B/32");
  c.tensors["visual.transformer.resblocks.x.ln_1.weight"] = c.tensors["ln_final.weight"];
  expect_error(c, ErrorCode::Format, "has no block index after 'visual.transformer.resblocks.'");
  c = shapes_of("ViT-B/32");
  for (auto it = c.tensors.begin(); it != c.tensors.end();)
    it = it->first.rfind("transformer.resblocks.", 0) == 0 ? c.tensors.erase(it) : std::next(it);
  expect_error(c, ErrorCode::NotFound, "has no text blocks 'transformer.resblocks.*'");
  c = shapes_of("ViT-B/32");
  for (auto it = c.tensors.begin(); it != c.tensors.end();)
    it = it->first.rfind("visual.transformer.resblocks.", 0) == 0 ? c.tensors.erase(it) : std::next(it);
  expect_error(c, ErrorCode::NotFound, "has no vision blocks 'visual.transformer.resblocks.*'");
  c = shapes_of("RN50");
  for (auto it = c.tensors.begin(); it != c.tensors.end();)
    it = it->first.rfind("visual.layer3.", 0) == 0 ? c.tensors.erase(it) : std::next(it);
  expect_error(c, ErrorCode::NotFound, "has no blocks in ResNet stage 'visual.layer3'");
  // a configuration file that states other stage sizes than the weights have
  const StatedConfig stated = parse_openclip_model_cfg(
      {{"vision_cfg", {{"layers", {3, 4, 6, 3}}, {"width", 64}}}, {"text_cfg", {{"width", 512}, {"heads", 8}}}}, "cfg",
      /*from_name=*/false);
  c = shapes_of("RN101");
  try {
    infer_architecture(c, &stated);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Shape);
    EXPECT_NE(std::string(e.what()).find("cfg gives vision_cfg.layers [3,4,6,3] but the weights have [3,4,23,3]"),
              std::string::npos)
        << e.what();
  }
}

// The M-CLIP layouts of create-random use the key names and tensor ranks of the M-CLIP fixture
// (a converted M-CLIP checkpoint with fewer, narrower layers).
TEST(RandomLayout, MclipLayoutsHaveTheNamesOfTheMclipFixture) {
  const Checkpoint ref = load_checkpoint(test::data_path("multilingual/tiny-mclip/pytorch_model.bin"));
  auto generic = [](const std::string& name) {  // "…layer.11.…" -> "…layer.N.…"
    const std::string key = "encoder.layer.";
    const size_t k = name.find(key);
    if (k == std::string::npos) return name;
    const size_t dot = name.find('.', k + key.size());
    return name.substr(0, k + key.size()) + "N" + name.substr(dot);
  };
  std::map<std::string, size_t> want;
  for (const auto& [name, t] : ref.tensors) want[generic(name)] = t.shape.size();
  struct Size {
    const char* name;
    int64_t layers, width, embed;
  };
  for (const Size& s : {Size{"mclip-xlmr-base", 12, 768, 512}, Size{"mclip-xlmr-large", 24, 1024, 768}}) {
    SCOPED_TRACE(s.name);
    int64_t embed = 0, width = 0;
    const auto layout = mclip_state_dict_layout(s.name, &embed, &width);
    EXPECT_EQ(embed, s.embed);
    EXPECT_EQ(width, s.width);
    std::map<std::string, size_t> got;
    std::set<std::string> layers;
    for (const auto& t : layout) {
      got[generic(t.name)] = t.shape.size();
      if (generic(t.name) != t.name) layers.insert(t.name.substr(0, t.name.find('.', t.name.find("layer.") + 6)));
    }
    // every tensor of the layout is in the fixture, with its rank; the fixture has besides only
    // what the text tower never reads (the position-id buffer, the unused pooler)
    for (const auto& [name, rank] : got) {
      ASSERT_TRUE(want.count(name)) << name;
      EXPECT_EQ(want.at(name), rank) << name;
    }
    for (const auto& [name, rank] : want)
      if (!got.count(name))
        EXPECT_TRUE(name == "transformer.embeddings.position_ids" || name.rfind("transformer.pooler.", 0) == 0) << name;
    EXPECT_EQ(static_cast<int64_t>(layers.size()), s.layers);
    for (const auto& t : layout)
      if (t.name == "LinearTransformation.weight") EXPECT_EQ(t.shape, (Shape{s.embed, s.width}));
  }
  try {
    mclip_state_dict_layout("mclip-xlmr-huge");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("unknown M-CLIP architecture 'mclip-xlmr-huge'"), std::string::npos);
  }
}

TEST(RandomLayout, MalformedCustomConfigsAndDTypesAreRejected) {
  auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message([] { clip_config("custom:kind=vit,embed_dim"); }).find("'embed_dim' is not key=value"),
            std::string::npos);
  EXPECT_NE(message([] { clip_config("custom:kind=resnet,embed_dim=8,vision_layers=3"); })
                .find("a ResNet's vision_layers are 4 stage sizes"),
            std::string::npos);
  const std::string path = test::temp_dir() + "/r.safetensors";
  EXPECT_NE(message([&] { write_random_layout(path, mclip_state_dict_layout("mclip-xlmr-base"), 1, DType::I32); })
                .find("random weights can be F32 or F16, not I32"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path));
}
