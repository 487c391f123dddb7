// The Model-facing entry points against a small fake Model (deterministic embeddings).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>

#include "clipkit/model.h"
#include "clipkit/zeroshot.h"
#include "support/test_support.h"

using namespace clipkit;

namespace {

class FakeModel : public Model {
 public:
  FakeModel() {
    info_.fingerprint = "fake-model-1";
    info_.logit_scale = 50.0f;
    info_.arch.embed_dim = 8;
    info_.arch.context_length = 77;
    info_.preprocess.resolution = 16;
  }
  const ModelInfo& info() const override { return info_; }
  // An image's embedding: its mean value per channel, then fixed offsets.
  Embeddings encode_images(const float* pixels, int64_t batch, bool normalize, DebugTrace*) const override {
    ++image_calls;
    Embeddings e(batch, 8);
    const int64_t n = 16 * 16;
    for (int64_t b = 0; b < batch; ++b)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += pixels[(b * 3 + c) * n + i];
        e.row(b)[c] = static_cast<float>(s / n);
        e.row(b)[3 + c] = 0.5f;
      }
    if (normalize) e.normalize();
    return e;
  }
  // A text's embedding: a deterministic function of its token ids.
  Embeddings encode_tokens(const std::vector<std::vector<int32_t>>& ids, bool normalize, DebugTrace*) const override {
    ++text_calls;
    Embeddings e(static_cast<int64_t>(ids.size()), 8);
    for (size_t r = 0; r < ids.size(); ++r)
      for (size_t k = 0; k < ids[r].size(); ++k)
        e.row(static_cast<int64_t>(r))[(k * 7 + static_cast<size_t>(ids[r][k])) % 8] += static_cast<float>(ids[r][k] % 101) / 100.0f + 0.01f;
    if (normalize) e.normalize();
    return e;
  }
  mutable std::atomic<int> image_calls{0}, text_calls{0};

 private:
  ModelInfo info_;
};

}  // namespace

TEST(ZeroShotFakeModel, BuildRecordsTheModelAndBatchesPrompts) {
  FakeModel m;
  ClassifierOptions opt;
  opt.templates = builtin_template_set("imagenet7");
  opt.batch_size = 5;
  const auto classes = parse_label_list("cat,dog|puppy,bird");
  const auto clf = ZeroShotClassifier::build(m, classes, opt);
  EXPECT_EQ(clf.model_fingerprint(), "fake-model-1");
  EXPECT_FLOAT_EQ(clf.model_logit_scale(), 50.0f);
  EXPECT_EQ(clf.dim(), 8);
  EXPECT_EQ(m.text_calls.load(), 6);  // 28 prompts in batches of 5
  // same rows as building from the encoder view of the model
  const auto again = ZeroShotClassifier::build(model_text_encoder(m), classes, opt, "x", 1.0f);
  EXPECT_EQ(again.class_embeddings().data, clf.class_embeddings().data);
}

TEST(ZeroShotFakeModel, EncodeImagePathsBatchesAndSkips) {
  FakeModel m;
  std::vector<std::string> paths = {test::data_path("images/00_astronaut.png"), test::data_path("images/index.json"),
                                    test::data_path("images/02_coffee.png"), test::data_path("images/04_camera_gray.png")};
  int progress_calls = 0;
  const auto enc = encode_image_paths(m, paths, 2, [&](int64_t, int64_t total) {
    ++progress_calls;
    EXPECT_EQ(total, 4);
  });
  EXPECT_EQ(progress_calls, 4);
  ASSERT_EQ(enc.paths.size(), 3u);
  ASSERT_EQ(enc.failures.size(), 1u);
  EXPECT_EQ(enc.failures[0].first, paths[1]);
  EXPECT_EQ(m.image_calls.load(), 2);  // 3 readable images in batches of 2
  ASSERT_EQ(enc.embeddings.rows, 3);
  for (int64_t i = 0; i < 3; ++i) {
    double n = 0;
    for (int64_t j = 0; j < 8; ++j) n += static_cast<double>(enc.embeddings.row(i)[j]) * enc.embeddings.row(i)[j];
    EXPECT_NEAR(n, 1.0, 1e-5);  // normalised rows
  }
}
