// The text tower: tiny-rn's text goldens (its image tower is tested elsewhere), the truncated
// computation against the full 77-position one, and pooling at the first end-of-text.
#include <gtest/gtest.h>

#include "clipkit/error.h"
#include "model/encoder.h"
#include "model/model_test_util.h"
#include "model/text_transformer.h"

using namespace clipkit;
using namespace clipkit::modeltest;

namespace {

struct Tower {
  Checkpoint ckpt;
  Architecture arch;
  std::unique_ptr<TextTransformer> text;
};

const Tower& tower(const std::string& model) {
  static std::map<std::string, Tower> cache;
  auto it = cache.find(model);
  if (it == cache.end()) {
    Tower t;
    t.ckpt = read_openai_safetensors("models/" + model + ".safetensors");
    t.arch = infer_architecture(t.ckpt);
    t.arch.activation = resolve_activation(t.ckpt, "auto");
    t.text = std::make_unique<TextTransformer>(t.ckpt, t.arch, ModelOptions{});
    it = cache.emplace(model, std::move(t)).first;
  }
  return it->second;
}

std::vector<int32_t> flat_ids(const std::string& model, const std::string& name = "input_ids") {
  const Tensor& t = golden_tensor(model, name);
  const auto* p = static_cast<const int32_t*>(t.data);
  return std::vector<int32_t>(p, p + t.numel());
}

}  // namespace

TEST(TextTower, TinyRnTextEmbeddingsMatchGolden) {
  const auto ids = flat_ids("tiny-rn");
  std::vector<float> out(40 * 64);
  tower("tiny-rn").text->encode(ids.data(), 40, 77, out.data(), nullptr);
  expect_matches(out, golden_f32("tiny-rn", "text_embeds"), 40, "tiny-rn text_embeds");
}

TEST(TextTower, TinyRnZeroShotPromptsMatchGolden) {
  const auto ids = flat_ids("tiny-rn", "zeroshot.input_ids");  // [10, 5, 77]
  std::vector<float> out(50 * 64);
  tower("tiny-rn").text->encode(ids.data(), 50, 77, out.data(), nullptr);
  expect_matches(out, golden_f32("tiny-rn", "zeroshot.template_embeds"), 50, "tiny-rn template_embeds");
}

TEST(TextTower, TinyRnTraceMatchesGolden) {
  const auto ids = flat_ids("tiny-rn");
  std::vector<float> out(40 * 64);
  DebugTrace trace;
  tower("tiny-rn").text->encode(ids.data(), 40, 77, out.data(), &trace);
  int checked = 0;
  for (const auto& [name, t] : golden("tiny-rn").tensors) {
    if (name.rfind("debug.text0.", 0) != 0 || name == "debug.text0.embed") continue;
    const std::string key = name.substr(6);
    ASSERT_TRUE(trace.count(key)) << key;
    expect_matches(trace[key], t.to_f32(), 1, key);
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

TEST(TextTower, TruncatedRunEqualsFullContext) {
  // Causal mask: positions after the pooled end-of-text cannot influence it, so running each text
  // only up to the longest EOT of its group gives the full 77-position result.
  for (const char* model : {"tiny-vit", "tiny-rn"}) {
    const auto ids = flat_ids(model);
    const auto& t = *tower(model).text;
    std::vector<float> truncated(40 * 64), full(40 * 64);
    t.encode(ids.data(), 40, 77, truncated.data(), nullptr);
    t.encode_full(ids.data(), 40, 77, full.data(), nullptr);
    const double diff = test::max_abs_diff(truncated.data(), full.data(), full.size());
    EXPECT_LE(diff, 1e-6 * test::max_abs(full.data(), full.size())) << model;
    for (size_t r = 0; r < 40; ++r)
      EXPECT_GE(test::cosine(truncated.data() + r * 64, full.data() + r * 64, 64), 0.9999999) << model << " " << r;
  }
}

TEST(TextTower, ShortRowsEqualPaddedRows) {
  // A row cut right after its EOT gives the same embedding as the zero-padded 77-id row.
  const auto ids = flat_ids("tiny-vit");
  const auto& t = *tower("tiny-vit").text;
  std::vector<float> full(64), shortened(64);
  t.encode(ids.data(), 1, 77, full.data(), nullptr);
  int64_t eot = 0;
  for (int64_t i = 0; i < 77; ++i)
    if (ids[static_cast<size_t>(i)] > ids[static_cast<size_t>(eot)]) eot = i;
  std::vector<int32_t> cut(ids.begin(), ids.begin() + eot + 1);
  t.encode(cut.data(), 1, eot + 1, shortened.data(), nullptr);
  EXPECT_LE(test::max_abs_diff(full.data(), shortened.data(), 64), 1e-6);
}

TEST(TextTower, PoolsAtTheFirstArgmax) {
  // Two EOT ids: pooling at the first one equals the row cut after it.
  const auto& t = *tower("tiny-vit").text;
  std::vector<int32_t> a = {49406, 320, 1125, 49407, 539, 49407, 0, 0};
  std::vector<int32_t> b = {49406, 320, 1125, 49407};
  std::vector<float> ea(64), eb(64);
  t.encode(a.data(), 1, static_cast<int64_t>(a.size()), ea.data(), nullptr);
  t.encode(b.data(), 1, static_cast<int64_t>(b.size()), eb.data(), nullptr);
  EXPECT_LE(test::max_abs_diff(ea.data(), eb.data(), 64), 1e-6);
}

TEST(TextTower, RejectsBadIds) {
  const auto& t = *tower("tiny-vit").text;
  std::vector<float> out(64);
  std::vector<int32_t> neg = {49406, -1, 49407};
  EXPECT_THROW(t.encode(neg.data(), 1, 3, out.data(), nullptr), Error);
  std::vector<int32_t> long_row(78, 5);
  EXPECT_THROW(t.encode(long_row.data(), 1, 78, out.data(), nullptr), Error);
}
