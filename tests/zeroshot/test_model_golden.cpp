// Zero-shot goldens end to end with the real text and image towers (tiny-vit, tiny-rn fixtures),
// plus the Model-facing helpers (image listing/encoding with unreadable files).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "support/test_support.h"

using namespace clipkit;

class ZeroShotModelGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ZeroShotModelGolden, ClassifierMatchesReference) {
  const std::string name = GetParam();
  const auto meta = nlohmann::json::parse(read_file(test::data_path("golden/" + name + ".json")));
  const auto st = read_safetensors(test::data_path("golden/" + name + ".safetensors"));
  auto model = Model::load(test::data_path("models/" + name + ".safetensors"));
  const auto& zs = meta["zeroshot"];
  std::vector<ClassSpec> classes;
  for (const auto& c : zs["classes"]) classes.push_back({{c.get<std::string>()}, {}});
  ClassifierOptions opt;
  opt.templates = zs["templates"].get<std::vector<std::string>>();
  opt.batch_size = 16;
  const auto clf = ZeroShotClassifier::build(*model, classes, opt);
  EXPECT_EQ(clf.model_fingerprint(), model->info().fingerprint);
  EXPECT_NEAR(clf.model_logit_scale(), meta["logit_scale_exp"].get<double>(), 1e-4);

  const int64_t E = clf.dim();
  const auto want_w = st.tensors.at("zeroshot.class_embeds").to_f32();
  ASSERT_EQ(static_cast<int64_t>(want_w.size()), 10 * E);
  double worst = 1.0;
  for (int64_t c = 0; c < 10; ++c)
    worst = std::min(worst, test::cosine(clf.class_embeddings().row(c), want_w.data() + c * E, static_cast<size_t>(E)));
  EXPECT_GE(worst, 0.99999);
  RecordProperty("one_minus_min_class_cosine", std::to_string((1.0 - worst) * 1e9) + "e-9");

  // images from the golden pixel values through the model's image tower
  const auto& pv = st.tensors.at("pixel_values");
  const auto pixels = pv.to_f32();
  const Embeddings img = model->encode_images(pixels.data(), pv.shape[0], true);
  for (const auto& [suffix, scale] :
       std::vector<std::pair<std::string, float>>{{"100", 100.0f}, {"scale", model->logit_scale()}}) {
    SCOPED_TRACE(suffix);
    const auto probs = st.tensors.at("zeroshot.probs_" + suffix).to_f32();
    const auto* top5 = static_cast<const int64_t*>(st.tensors.at("zeroshot.top5_" + suffix).data);
    const auto preds = clf.classify(img, scale, 5);
    double max_dp = 0.0;
    for (size_t i = 0; i < preds.size(); ++i) {
      for (size_t k = 0; k < 5; ++k) EXPECT_EQ(preds[i].top[k].index, top5[i * 5 + k]) << "image " << i << " rank " << k;
      for (size_t c = 0; c < 10; ++c) max_dp = std::max(max_dp, std::fabs(static_cast<double>(preds[i].probs[c]) - probs[i * 10 + c]));
    }
    EXPECT_LE(max_dp, 1e-5);
    RecordProperty("max_prob_diff_" + suffix, std::to_string(max_dp * 1e6) + "e-6");
  }
}

TEST_P(ZeroShotModelGolden, Int8KeepsTheReferenceTop1) {
  // int8 weights (int8 convolutions in the ResNet, int8 linear layers everywhere): the reference's
  // zero-shot top-1 on every fixture image, classes and images both from the int8 model.
  const std::string name = GetParam();
  const auto meta = nlohmann::json::parse(read_file(test::data_path("golden/" + name + ".json")));
  const auto st = read_safetensors(test::data_path("golden/" + name + ".safetensors"));
  ModelOptions options;
  options.dtype = "int8";
  auto model = Model::load(test::data_path("models/" + name + ".safetensors"), options);
  const auto& zs = meta["zeroshot"];
  std::vector<ClassSpec> classes;
  for (const auto& c : zs["classes"]) classes.push_back({{c.get<std::string>()}, {}});
  ClassifierOptions opt;
  opt.templates = zs["templates"].get<std::vector<std::string>>();
  const auto clf = ZeroShotClassifier::build(*model, classes, opt);
  const auto& pv = st.tensors.at("pixel_values");
  const auto pixels = pv.to_f32();
  const auto preds = clf.classify(model->encode_images(pixels.data(), pv.shape[0], true), 100.0f, 1);
  const auto* top5 = static_cast<const int64_t*>(st.tensors.at("zeroshot.top5_100").data);
  ASSERT_EQ(static_cast<int64_t>(preds.size()), pv.shape[0]);
  for (size_t i = 0; i < preds.size(); ++i) EXPECT_EQ(preds[i].top[0].index, top5[i * 5]) << "image " << i;
  if (name == "tiny-rn")
    EXPECT_NE(model->info().kernels.find("convolutions int8"), std::string::npos) << model->info().kernels;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ZeroShotModelGolden, ::testing::Values("tiny-vit", "tiny-rn"));

TEST(ZeroShotModel, EncodeImagePathsSkipsUnreadableFiles) {
  auto model = Model::load(test::data_path("models/tiny-vit.safetensors"));
  const std::string dir = test::temp_dir();
  const std::string broken = dir + "/broken.png";
  std::ofstream(broken) << "not a png";
  const std::vector<std::string> paths = {test::data_path("images/00_astronaut.png"), broken,
                                          test::data_path("images/02_coffee.png")};
  const auto enc = encode_image_paths(*model, paths, 1);
  ASSERT_EQ(enc.paths.size(), 2u);
  EXPECT_EQ(enc.paths[1], paths[2]);
  ASSERT_EQ(enc.failures.size(), 1u);
  EXPECT_EQ(enc.failures[0].first, broken);
  EXPECT_NE(enc.failures[0].second.find("broken.png"), std::string::npos) << enc.failures[0].second;
  // rows are the normalised golden image embeddings (images 0 and 2)
  const auto st = read_safetensors(test::data_path("golden/tiny-vit.safetensors"));
  const auto golden = st.tensors.at("image_embeds_normalized").to_f32();
  const int64_t E = enc.embeddings.dim;
  EXPECT_GE(test::cosine(enc.embeddings.row(0), golden.data(), static_cast<size_t>(E)), 0.99999);
  EXPECT_GE(test::cosine(enc.embeddings.row(1), golden.data() + 2 * E, static_cast<size_t>(E)), 0.99999);
}
