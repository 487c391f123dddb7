// XLM-RoBERTa text towers against tests/data/multilingual/golden (computed from M-CLIP's and
// open_clip's code, see tests/data/multilingual/README.md): token ids exact, embeddings within
// cosine >= 0.99999 and max|d| <= 1e-4 max|ref| in f32, per-layer states of text 0, the scalar
// reference path, f16 / int8, and the zero-shot case of an M-CLIP tower paired with tiny-vit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/xlmr.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

std::string ml(const std::string& rel) { return test::data_path("multilingual/" + rel); }

const nlohmann::json& golden_json(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    std::ifstream f(ml("golden/" + name + ".json"));
    it = cache.emplace(name, nlohmann::json::parse(f)).first;
  }
  return it->second;
}

std::vector<float> golden_f32(const std::string& name, const std::string& tensor) {
  static std::map<std::string, SafetensorsFile> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, read_safetensors(ml("golden/" + name + ".safetensors"))).first;
  return it->second.tensors.at(tensor).to_f32();
}

std::vector<std::string> texts_of(const std::string& name) {
  return golden_json(name).at("texts").get<std::vector<std::string>>();
}

// Per-matrix check of the fixtures' tolerance: every row's cosine and the largest difference
// relative to the largest reference value.
void expect_close(const float* got, const std::vector<float>& ref, int64_t dim, double min_cos, double max_rel,
                  const std::string& what) {
  const size_t n = ref.size();
  const double scale = test::max_abs(ref.data(), n);
  EXPECT_LE(test::max_abs_diff(got, ref.data(), n), max_rel * scale) << what;
  for (size_t r = 0; r * dim < n; ++r)
    EXPECT_GE(test::cosine(got + r * dim, ref.data() + r * dim, static_cast<size_t>(dim)), min_cos)
        << what << " row " << r;
}

std::vector<std::vector<int32_t>> golden_ids(const std::string& name) {
  return golden_json(name).at("input_ids").get<std::vector<std::vector<int32_t>>>();
}

TEST(MClipGolden, TokenIdsAndEmbeddingsF32) {
  auto model = Model::load(ml("tiny-mclip"));
  EXPECT_EQ(model->info().arch.kind, "none");
  EXPECT_EQ(model->info().arch.text_kind, "xlm-roberta");
  EXPECT_EQ(model->info().arch.embed_dim, 64);
  EXPECT_EQ(model->info().arch.text_layers, 2);
  EXPECT_EQ(model->info().arch.text_heads, 2);
  const auto texts = texts_of("tiny-mclip");
  EXPECT_EQ(model->tokenize(texts), golden_ids("tiny-mclip"));
  const Embeddings e = model->encode_texts(texts);
  expect_close(e.data.data(), golden_f32("tiny-mclip", "text_embeds"), 64, 0.99999, 1e-4, "M-CLIP text_embeds");
  const Embeddings n = model->encode_texts(texts, /*normalize=*/true);
  expect_close(n.data.data(), golden_f32("tiny-mclip", "text_embeds_normalized"), 64, 0.99999, 1e-4, "normalized");
}

TEST(MClipGolden, HiddenStatesOfTextZero) {
  auto model = Model::load(ml("tiny-mclip"));
  DebugTrace trace;
  const auto ids = golden_ids("tiny-mclip");
  model->encode_tokens({ids[0]}, false, &trace);
  for (const char* key : {"embeddings", "layer0", "layer1", "pooled"}) {
    const auto ref = golden_f32("tiny-mclip", std::string("debug.text0.") + key);
    ASSERT_EQ(trace.at(std::string("text0.") + key).size(), ref.size()) << key;
    expect_close(trace.at(std::string("text0.") + key).data(), ref, 128, 0.99999, 1e-4, key);
  }
}

TEST(MClipGolden, ScalarReferencePath) {
  const Checkpoint ckpt = load_checkpoint(ml("tiny-mclip"));
  const XlmrSpec spec = xlmr_spec(ckpt, "transformer.", "LinearTransformation.", false, false);
  const auto ids = golden_ids("tiny-mclip");
  std::vector<float> out(ids.size() * 64);
  xlmr_reference_encode(ckpt, spec, ids, out.data(), nullptr);
  expect_close(out.data(), golden_f32("tiny-mclip", "text_embeds"), 64, 0.99999, 1e-4, "reference");
}

TEST(MClipGolden, HalfAndInt8) {
  const auto texts = texts_of("tiny-mclip");
  const auto ref = golden_f32("tiny-mclip", "text_embeds");
  for (const auto& [dtype, min_cos] : {std::pair<const char*, double>{"f16", 0.9999}, {"int8", 0.99}}) {
    ModelOptions o;
    o.dtype = dtype;
    auto model = Model::load(ml("tiny-mclip"), o);
    const Embeddings e = model->encode_texts(texts);
    for (size_t r = 0; r < texts.size(); ++r)
      EXPECT_GE(test::cosine(e.row(static_cast<int64_t>(r)), ref.data() + r * 64, 64), min_cos) << dtype << " row " << r;
  }
}

TEST(MClipGolden, HalfStoredFileKeepsItsWordTable) {
  // An f16 file's word embedding table is kept as stored (2 bytes an entry, the only difference in
  // weight_bytes at f32 compute) and widened row by row: the same numbers as the scalar reference,
  // which converts the whole table, on the same file.
  const std::string dir = test::temp_dir();
  const auto r = test::run_cli({"convert", "--dtype", "f16", ml("tiny-mclip"), dir + "/model.safetensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::filesystem::copy_file(ml("sentencepiece.bpe.model"), dir + "/sentencepiece.bpe.model");
  auto half = Model::load(dir + "/model.safetensors");
  EXPECT_EQ(half->info().weight_dtype, "F16");
  EXPECT_EQ(Model::load(ml("tiny-mclip"))->info().weight_bytes - half->info().weight_bytes, 8002 * 128 * 2);
  const auto ids = golden_ids("tiny-mclip");
  const Embeddings e = half->encode_tokens(ids);
  const Checkpoint ckpt = load_checkpoint(dir + "/model.safetensors");
  const XlmrSpec spec = xlmr_spec(ckpt, "transformer.", "LinearTransformation.", false, false);
  std::vector<float> ref(ids.size() * 64);
  xlmr_reference_encode(ckpt, spec, ids, ref.data(), nullptr);
  expect_close(e.data.data(), ref, 64, 0.99999, 1e-4, "f16 file vs reference");
  const auto golden = golden_f32("tiny-mclip", "text_embeds");
  for (size_t row = 0; row < ids.size(); ++row)
    EXPECT_GE(test::cosine(e.row(static_cast<int64_t>(row)), golden.data() + row * 64, 64), 0.9999) << "row " << row;
}

// `clipkit convert` (packed layout) of an M-CLIP folder and of an open_clip XLM-R checkpoint: every
// linear layer of the text tower stored in the kernels' layout (q, k and v side by side, loaded as
// one weight), used in place (no repacking warning, f32 and int8), and the embeddings the plain load's bits.
TEST(XlmrPacked, ConvertedFilesComputeThePlainLoadsBits) {
  const std::string dir = test::temp_dir();
  std::filesystem::copy_file(ml("sentencepiece.bpe.model"), dir + "/sentencepiece.bpe.model");
  const std::vector<std::string> texts{"un gatto nero", "a photo of a dog", "ein Haus am See"};
  struct Case {
    std::string input, dtype;
    int packed;  // linear layers' weights stored packed
  };
  // tiny-mclip: 2 layers of q, k, v, attention output, intermediate, output, and the projection.
  for (const Case& c : {Case{ml("tiny-mclip"), "f32", 13}, Case{ml("tiny-mclip"), "int8", 13},
                        Case{ml("tiny-xlmr-clip.safetensors"), "f32", 0}}) {
    const std::string what = c.input + " " + c.dtype;
    const std::string out = dir + "/" + std::filesystem::path(c.input).stem().string() + "-" + c.dtype;
    auto r = test::run_cli({"convert", "--dtype", c.dtype, c.input, out + ".safetensors"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto report = nlohmann::json::parse(r.out);
    if (c.packed > 0) {
      EXPECT_EQ(report["packed"].get<int>(), c.packed) << what;
    }
    // The reference: the input itself (f32), or its conversion in the plain layout.
    std::string plain = c.input;
    if (c.dtype != "f32") {
      plain = out + "-plain.safetensors";
      r = test::run_cli({"convert", "--dtype", c.dtype, "--layout", "plain", c.input, plain});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    ModelOptions o;
    o.dtype = c.dtype;
    o.tokenizer = ml("sentencepiece.bpe.model");
    std::vector<std::string> warnings;
    o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
    const auto packed = Model::load(out + ".safetensors", o);
    for (const auto& w : warnings) EXPECT_EQ(w.find("repacked"), std::string::npos) << what << ": " << w;
    const auto ref = Model::load(plain, o);
    EXPECT_EQ(packed->encode_texts(texts).data, ref->encode_texts(texts).data) << what;
    EXPECT_EQ(packed->info().fingerprint, ref->info().fingerprint) << what;
  }
}

TEST(MClipGolden, ZeroShotPairedWithTinyVit) {
  const auto& zs = golden_json("tiny-mclip").at("zeroshot");
  ModelOptions o;
  o.text_model = ml("tiny-mclip");
  auto model = Model::load(test::data_path("models/tiny-vit.safetensors"), o);
  EXPECT_EQ(model->info().text_model_path, ml("tiny-mclip"));
  std::vector<std::string> images;
  for (const auto& p : zs.at("images")) {
    const std::string f = p.get<std::string>();
    images.push_back(test::data_path("images/" + f.substr(f.rfind('/') + 1)));
  }
  const Embeddings img = model->encode_image_files(images, true);
  const auto classes = zs.at("classes").get<std::vector<std::string>>();
  const auto prompts = zs.at("prompts").get<std::vector<std::vector<std::string>>>();
  const int64_t C = static_cast<int64_t>(classes.size()), D = 64;
  std::vector<float> w(static_cast<size_t>(C * D), 0.0f);
  for (int64_t c = 0; c < C; ++c) {
    const Embeddings t = model->encode_texts(prompts[c], true);
    float* row = w.data() + c * D;
    for (int64_t k = 0; k < t.rows; ++k)
      for (int64_t d = 0; d < D; ++d) row[d] += t.row(k)[d] / static_cast<float>(t.rows);
    double norm = 0;
    for (int64_t d = 0; d < D; ++d) norm += double(row[d]) * row[d];
    for (int64_t d = 0; d < D; ++d) row[d] = static_cast<float>(row[d] / std::sqrt(norm));
  }
  expect_close(w.data(), golden_f32("tiny-mclip", "zeroshot.class_embeds"), D, 0.99999, 1e-4, "class_embeds");
  const auto probs_ref = golden_f32("tiny-mclip", "zeroshot.probs_100");
  const auto top5 = golden_json("tiny-mclip").at("tensors");  // (names only)
  (void)top5;
  const auto& top_ref = zs.at("top5_100");
  for (int64_t i = 0; i < img.rows; ++i) {
    std::vector<double> logits(static_cast<size_t>(C));
    double mx = -1e30, sum = 0;
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += double(img.row(i)[d]) * w[c * D + d];
      logits[c] = 100.0 * s;
      mx = std::max(mx, logits[c]);
    }
    for (auto& l : logits) sum += std::exp(l - mx);
    std::vector<int> order(static_cast<size_t>(C));
    for (int c = 0; c < C; ++c) order[c] = c;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
    for (int64_t c = 0; c < C; ++c)
      EXPECT_NEAR(std::exp(logits[c] - mx) / sum, probs_ref[i * C + c], 1e-4) << "image " << i << " class " << c;
    for (int k = 0; k < 5; ++k) EXPECT_EQ(order[k], top_ref.at(i).at(k).get<int>()) << "image " << i << " rank " << k;
  }
}

TEST(XlmrClipGolden, TextAndImageF32) {
  auto model = Model::load(ml("tiny-xlmr-clip.safetensors"));
  EXPECT_EQ(model->info().arch.kind, "vit");
  EXPECT_EQ(model->info().arch.text_kind, "xlm-roberta");
  EXPECT_EQ(model->info().arch.activation, "gelu");
  EXPECT_EQ(model->info().tokenizer_path, ml("sentencepiece.bpe.model"));
  const auto texts = texts_of("tiny-xlmr-clip");
  EXPECT_EQ(model->tokenize(texts), golden_ids("tiny-xlmr-clip"));
  const Embeddings t = model->encode_texts(texts);
  expect_close(t.data.data(), golden_f32("tiny-xlmr-clip", "text_embeds"), 96, 0.99999, 1e-4, "text_embeds");
  const auto pixels = golden_f32("tiny-xlmr-clip", "pixel_values");
  const Embeddings i = model->encode_images(pixels.data(), 12);
  expect_close(i.data.data(), golden_f32("tiny-xlmr-clip", "image_embeds"), 96, 0.99999, 1e-4, "image_embeds");
  EXPECT_NEAR(model->logit_scale(), golden_json("tiny-xlmr-clip").at("logit_scale_exp").get<double>(), 1e-3);
  // The image files through the model's own preprocessing give the same embeddings.
  std::vector<std::string> files;
  for (const auto& im : golden_json("tiny-xlmr-clip").at("images")) {
    const std::string f = im.at("file").get<std::string>();
    files.push_back(test::data_path("images/" + f.substr(f.rfind('/') + 1)));
  }
  const Embeddings fi = model->encode_image_files(files);
  expect_close(fi.data.data(), golden_f32("tiny-xlmr-clip", "image_embeds"), 96, 0.99999, 1e-4, "image files");
}

TEST(XlmrClipGolden, HiddenStatesAndReference) {
  auto model = Model::load(ml("tiny-xlmr-clip.safetensors"));
  const auto ids = golden_ids("tiny-xlmr-clip");
  size_t len = ids[0].size();
  while (len > 1 && ids[0][len - 1] == 1) --len;  // the golden keeps all 77 slots; pads are not compared
  auto check = [&](const DebugTrace& trace, const std::string& what) {
    for (const char* key : {"embeddings", "layer0", "layer1"}) {
      auto ref = golden_f32("tiny-xlmr-clip", std::string("debug.text0.") + key);
      ref.resize(len * 128);
      ASSERT_EQ(trace.at(std::string("text0.") + key).size(), ref.size()) << key;
      expect_close(trace.at(std::string("text0.") + key).data(), ref, 128, 0.99999, 1e-4, what + " " + key);
    }
    expect_close(trace.at("text0.pooled").data(), golden_f32("tiny-xlmr-clip", "debug.text0.pooled"), 128, 0.99999,
                 1e-4, what + " pooled");
  };
  DebugTrace trace;
  model->encode_tokens({ids[0]}, false, &trace);
  check(trace, "fast");
  const Checkpoint ckpt = load_checkpoint(ml("tiny-xlmr-clip.safetensors"));
  const XlmrSpec spec = xlmr_spec(ckpt, "text.transformer.", "text.proj.", true, true);
  std::vector<float> out(ids.size() * 96);
  DebugTrace ref_trace;
  xlmr_reference_encode(ckpt, spec, ids, out.data(), &ref_trace);
  check(ref_trace, "reference");
  expect_close(out.data(), golden_f32("tiny-xlmr-clip", "text_embeds"), 96, 0.99999, 1e-4, "reference");
}

TEST(XlmrClipGolden, HalfAndInt8) {
  const auto texts = texts_of("tiny-xlmr-clip");
  const auto ref = golden_f32("tiny-xlmr-clip", "text_embeds");
  for (const auto& [dtype, min_cos] : {std::pair<const char*, double>{"f16", 0.9999}, {"int8", 0.99}}) {
    ModelOptions o;
    o.dtype = dtype;
    auto model = Model::load(ml("tiny-xlmr-clip.safetensors"), o);
    const Embeddings e = model->encode_texts(texts);
    for (size_t r = 0; r < texts.size(); ++r)
      EXPECT_GE(test::cosine(e.row(static_cast<int64_t>(r)), ref.data() + r * 96, 96), min_cos) << dtype << " row " << r;
  }
}

}  // namespace

namespace {

// What Model::load throws for `path` ("" when it loads), with the code checked.
std::string load_error(const std::string& path, ErrorCode code) {
  try {
    Model::load(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(MClipFolder, ConfigThatContradictsTheWeightsIsRefused) {
  const std::string dir = test::temp_dir() + "/mclip-config";
  std::filesystem::create_directories(dir);
  for (const char* f : {"pytorch_model.bin", "sentencepiece.bpe.model"})
    std::filesystem::copy_file(ml(std::string("tiny-mclip/") + f), dir + "/" + f);
  auto config = [&](const std::string& text) { std::ofstream(dir + "/config.json", std::ios::trunc) << text; };
  config("{\"numDims\": 64,");
  EXPECT_NE(load_error(dir, ErrorCode::Format).find("config.json' is not valid JSON"), std::string::npos);
  config(R"({"modelBase": "xlm-roberta-large", "numDims": 65, "transformerDimensions": 128})");
  EXPECT_NE(load_error(dir, ErrorCode::Shape)
                .find("gives numDims 65 but the weights' output size (LinearTransformation rows) is 64"),
            std::string::npos);
  config(R"({"modelBase": "xlm-roberta-large", "numDims": 64, "transformerDimensions": "128"})");
  EXPECT_NE(load_error(dir, ErrorCode::Shape).find("gives transformerDimensions \"128\" but the weights' encoder width is 128"),
            std::string::npos);
  config(R"({"modelBase": "sentence-transformers/LaBSE", "numDims": 64, "transformerDimensions": 128})");
  EXPECT_NE(load_error(dir, ErrorCode::Format).find("modelBase 'sentence-transformers/LaBSE' is a BERT encoder"),
            std::string::npos);
  config(R"({"modelBase": "xlm-roberta-large", "numDims": 64, "transformerDimensions": 128})");
  EXPECT_EQ(load_error(dir, ErrorCode::Internal), "");
}

TEST(MClipFolder, InspectAgreesWithLoadAndBadCallsAreRefused) {
  const ModelInfo seen = Model::inspect(ml("tiny-mclip"));
  const auto model = Model::load(ml("tiny-mclip"));
  EXPECT_EQ(seen.arch.text_kind, model->info().arch.text_kind);
  EXPECT_EQ(seen.arch.embed_dim, model->info().arch.embed_dim);
  EXPECT_EQ(seen.arch.text_layers, model->info().arch.text_layers);
  EXPECT_EQ(seen.parameter_count, model->info().parameter_count);
  EXPECT_EQ(seen.fingerprint, model->info().fingerprint);
  try {
    const float pixels[1] = {0.0f};
    model->encode_images(pixels, 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("is a text tower only (M-CLIP)"), std::string::npos) << e.what();
  }
  std::vector<int32_t> row = golden_ids("tiny-mclip")[0];
  std::vector<int32_t> bad = row;
  bad[1] = 1 << 30;
  try {
    model->encode_tokens({row, bad});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("token id 1073741824 (text 1, position 1) is outside the vocabulary"),
              std::string::npos)
        << e.what();
  }
  // the tower itself refuses a row longer than its position table (the model cuts such rows first)
  const Checkpoint ckpt = load_checkpoint(ml("tiny-mclip/pytorch_model.bin"));
  const XlmrSpec spec = xlmr_spec(ckpt, "transformer.", "LinearTransformation.", false, false);
  const XlmrTextTower tower(ckpt, spec, WeightFormat::F32);
  std::vector<float> out(static_cast<size_t>(spec.embed_dim));
  const std::vector<int32_t> long_row(static_cast<size_t>(spec.max_tokens() + 1), row[1]);
  try {
    tower.encode({long_row}, out.data(), nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Limit);
    EXPECT_NE(std::string(e.what()).find("token row 0 has " + std::to_string(long_row.size()) +
                                         " ids; the text tower's position table allows " +
                                         std::to_string(spec.max_tokens())),
              std::string::npos)
        << e.what();
  }
}

namespace {

// A folder with the open_clip XLM-R checkpoint, its tokenizer and `config` as open_clip_config.json.
std::string xlmr_clip_with_config(const std::string& name, const std::string& config) {
  const std::string dir = test::temp_dir() + "/" + name;
  std::filesystem::create_directories(dir);
  for (const char* f : {"tiny-xlmr-clip.safetensors", "sentencepiece.bpe.model"})
    std::filesystem::copy_file(ml(f), dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir + "/open_clip_config.json", std::ios::trunc) << config;
  return dir + "/tiny-xlmr-clip.safetensors";
}

}  // namespace

// open_clip_config.json next to an open_clip XLM-R checkpoint sets the text context, the image
// tower's activation and head width, and the preprocessing.
TEST(XlmrClipConfig, OpenClipConfigSetsContextActivationHeadsAndPreprocessing) {
  const std::string path = xlmr_clip_with_config("xlmr-config", R"({"model_cfg": {"quick_gelu": true,
      "vision_cfg": {"head_width": 32}, "text_cfg": {"context_length": 16}},
      "preprocess_cfg": {"mean": 0.5, "std": [0.25, 0.25, 0.25]}})");
  const ModelInfo seen = Model::inspect(path);
  EXPECT_EQ(seen.config_source, "open_clip_config.json");
  EXPECT_EQ(seen.arch.activation, "quick_gelu");
  EXPECT_EQ(seen.arch.vision_heads, 4);  // 128 wide in heads of 32 (64 without the configuration)
  EXPECT_EQ(seen.arch.context_length, 16);
  EXPECT_EQ(seen.preprocess.mean[1], 0.5f);
  EXPECT_EQ(seen.preprocess.std[2], 0.25f);
  const auto model = Model::load(path);
  const auto rows = model->tokenize({"a long sentence with many more words than sixteen tokens could ever hold in one row"});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].size(), 16u);
  // the activation given on the command line wins over the configuration's
  ModelOptions o;
  o.activation = "gelu";
  EXPECT_EQ(Model::inspect(path, o).arch.activation, "gelu");
}

TEST(XlmrClipConfig, ContextLengthOutsideThePositionTableIsRefused) {
  for (const char* length : {"1", "100000"}) {
    const std::string path =
        xlmr_clip_with_config("xlmr-context", std::string(R"({"model_cfg": {"text_cfg": {"context_length": )") + length + "}}}");
    try {
      Model::inspect(path);
      ADD_FAILURE() << "context_length " << length << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Format);
      EXPECT_NE(std::string(e.what()).find(std::string("open_clip_config.json': text_cfg.context_length ") + length + " is outside [2, "),
                std::string::npos)
          << e.what();
    }
  }
}

// A text tower paired with an image model (--text-model): inspect describes the pair as load
// builds it; a text model that is not XLM-RoBERTa, or an image model without an image tower,
// is refused.
TEST(XlmrPair, InspectAgreesWithLoadAndBadPairsAreRefused) {
  ModelOptions o;
  o.text_model = ml("tiny-mclip");
  const std::string vit = test::data_path("models/tiny-vit.safetensors");
  const ModelInfo seen = Model::inspect(vit, o);
  const auto model = Model::load(vit, o);
  EXPECT_EQ(seen.text_model_path, ml("tiny-mclip"));
  EXPECT_EQ(seen.arch.text_kind, "xlm-roberta");
  EXPECT_EQ(seen.fingerprint, model->info().fingerprint);
  EXPECT_EQ(seen.parameter_count, model->info().parameter_count);
  EXPECT_EQ(seen.tokenizer_path, model->info().tokenizer_path);

  ModelOptions not_xlmr;
  not_xlmr.text_model = vit;
  try {
    Model::load(vit, not_xlmr);
    ADD_FAILURE() << "a ViT checkpoint was taken as a text tower";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("holds no XLM-RoBERTa text tower"), std::string::npos) << e.what();
  }
  try {
    Model::inspect(ml("tiny-mclip"), o);
    ADD_FAILURE() << "a text-only model was paired with a text tower";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("has no image tower to pair with the text tower of"), std::string::npos) << e.what();
  }
}
