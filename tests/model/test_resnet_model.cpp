// The ResNet image tower through the public API: Model::load on the tiny-rn checkpoint, image
// embeddings, debug trace and normalisation against the reference fixtures; concurrent use.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/model.h"
#include "kernels/act_layout.h"
#include "model/model_test_util.h"

using namespace clipkit;
using namespace clipkit::modeltest;

namespace {

const std::shared_ptr<Model>& tiny_rn_model() {
  static const std::shared_ptr<Model> m = Model::load(test::data_path("models/tiny-rn.safetensors"));
  return m;
}

void expect_rows_match(const float* got, const float* want, size_t rows, size_t dim, const std::string& what) {
  const size_t n = rows * dim;
  for (size_t r = 0; r < rows; ++r)
    EXPECT_GE(test::cosine(got + r * dim, want + r * dim, dim), 0.99999) << what << " row " << r;
  const double diff = test::max_abs_diff(got, want, n), ref = test::max_abs(want, n);
  EXPECT_LE(diff, 1e-4 * ref) << what << ": max|diff| " << diff << ", max|ref| " << ref;
}

}  // namespace

TEST(ResNetModel, LoadsAsResNetWithReferenceConfig) {
  const ModelInfo& info = tiny_rn_model()->info();
  EXPECT_EQ(info.arch.kind, "resnet");
  EXPECT_EQ(info.arch.resnet_layers, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(info.arch.vision_width, 8);
  EXPECT_EQ(info.arch.vision_heads, 4);
  EXPECT_EQ(info.arch.image_resolution, 64);
  EXPECT_EQ(info.arch.embed_dim, 64);
  EXPECT_EQ(info.preprocess.resolution, 64);
}

TEST(ResNetModel, ConvolutionModeIsCheckedAndReportedInKernels) {
  ModelOptions bad;
  bad.convolution = "fft";
  try {
    Model::load(test::data_path("models/tiny-rn.safetensors"), bad);
    FAIL() << "an unknown convolution mode loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("'fft'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("direct"), std::string::npos) << e.what();
  }
  // tiny-rn's 4-channel stem is too narrow for the blocked kernels: channels-last by default,
  // blocked when forced (on AVX-512); both say so in ModelInfo::kernels and give the golden
  // embeddings
  const auto pixels = golden_f32("tiny-rn", "pixel_values");
  const auto want = golden_f32("tiny-rn", "image_embeds");
  for (const std::string mode : {"auto", "blocked"}) {
    ModelOptions o;
    o.convolution = mode;
    const auto m = Model::load(test::data_path("models/tiny-rn.safetensors"), o);
    const std::string& k = m->info().kernels;
    const bool blocked = mode == "blocked" && blocked_layout_supported();  // (without AVX-512: nhwc)
    EXPECT_NE(k.find(blocked ? "convolutions nChw16c" : "convolutions nhwc"), std::string::npos) << k;
    const Embeddings e = m->encode_images(pixels.data(), 12, /*normalize=*/false);
    expect_rows_match(e.data.data(), want.data(), 12, 64, mode);
  }
}

TEST(ResNetModel, EncodeImagesMatchesGoldens) {
  const auto pixels = golden_f32("tiny-rn", "pixel_values");
  const auto want = golden_f32("tiny-rn", "image_embeds");
  const auto want_norm = golden_f32("tiny-rn", "image_embeds_normalized");
  DebugTrace trace;
  const Embeddings e = tiny_rn_model()->encode_images(pixels.data(), 12, false, &trace);
  ASSERT_EQ(e.rows, 12);
  ASSERT_EQ(e.dim, 64);
  expect_rows_match(e.data.data(), want.data(), 12, 64, "image_embeds");
  for (const char* key : {"stem", "layer1", "layer2", "layer3", "layer4", "attnpool_tokens"}) {
    const std::string name = std::string("image0.") + key;
    ASSERT_TRUE(trace.count(name)) << name;
    const auto ref = golden_f32("tiny-rn", "debug." + name);
    ASSERT_EQ(trace[name].size(), ref.size()) << name;
    expect_rows_match(trace[name].data(), ref.data(), 1, ref.size(), name);
  }
  const Embeddings n = tiny_rn_model()->encode_images(pixels.data(), 12, true);
  expect_rows_match(n.data.data(), want_norm.data(), 12, 64, "image_embeds_normalized");
}

TEST(ResNetModel, ConcurrentEncodesAgree) {
  const auto pixels = golden_f32("tiny-rn", "pixel_values");
  const auto want = golden_f32("tiny-rn", "image_embeds");
  ModelOptions blocked;
  blocked.convolution = "blocked";  // the Winograd path, whose weight layouts are made on first use
  const auto models = {tiny_rn_model(), Model::load(test::data_path("models/tiny-rn.safetensors"), blocked)};
  for (const auto& model : models) {
    std::vector<Embeddings> results(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < results.size(); ++t)  // batch sizes 12 and 1 at once: both Winograd variants
      threads.emplace_back([&, t] { results[t] = model->encode_images(pixels.data(), t % 2 ? 1 : 12); });
    for (auto& th : threads) th.join();
    for (const Embeddings& e : results)
      expect_rows_match(e.data.data(), want.data(), static_cast<size_t>(e.rows), 64, "concurrent");
  }
}

TEST(ResNetModel, EncodesImageFilesLikeTheGoldens) {
  // decode + preprocess + encode of the fixture images (preprocessing is tested bit-exactly
  // elsewhere; here it only has to feed the tower the same pixels)
  std::vector<std::string> paths;
  for (const char* f : {"images/00_astronaut.png", "images/01_chelsea_q90_progressive.jpg"})
    paths.push_back(test::data_path(f));
  const auto want = golden_f32("tiny-rn", "image_embeds");
  const Embeddings e = tiny_rn_model()->encode_image_files(paths);
  ASSERT_EQ(e.rows, 2);
  expect_rows_match(e.data.data(), want.data(), 2, 64, "image files");
}
