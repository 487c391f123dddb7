// `clipkit create-random`: the written file loads, and architecture inference gives back the
// requested configuration.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipkit/model.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace {

using namespace clipkit;
using clipkit::test::run_cli;

const char* const kVit =
    "custom:kind=vit,embed_dim=96,image_resolution=48,vision_width=128,vision_layers=3,vision_patch_size=12,"
    "text_width=128,text_layers=2,context_length=20,vocab_size=49408";
const char* const kResNet =
    "custom:kind=resnet,embed_dim=32,image_resolution=64,vision_width=8,vision_layers=1-2-1-1,"
    "text_width=64,text_layers=1";

}  // namespace

TEST(CliCreateRandom, VitConfigRoundTrips) {
  const std::string out = test::temp_dir() + "/vit.safetensors";
  const auto r = run_cli({"create-random", "--arch", kVit, "--seed", "7", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["out"], out);
  auto m = Model::load(out);
  const Architecture& a = m->info().arch;
  EXPECT_EQ(a.kind, "vit");
  EXPECT_EQ(a.embed_dim, 96);
  EXPECT_EQ(a.image_resolution, 48);
  EXPECT_EQ(a.vision_width, 128);
  EXPECT_EQ(a.vision_layers, 3);
  EXPECT_EQ(a.vision_heads, 2);
  EXPECT_EQ(a.vision_patch_size, 12);
  EXPECT_EQ(a.context_length, 20);
  EXPECT_EQ(a.text_width, 128);
  EXPECT_EQ(a.text_heads, 2);
  EXPECT_EQ(a.text_layers, 2);
  EXPECT_EQ(a.activation, "quick_gelu");
  EXPECT_EQ(m->info().weight_dtype, "F32");
  EXPECT_NEAR(m->logit_scale(), 1.0 / 0.07, 1e-3);  // CLIP's initial logit_scale = log(1/0.07)
  // The model runs and gives finite, input-dependent embeddings.
  std::vector<float> px(2 * 3 * 48 * 48);
  for (size_t i = 0; i < px.size(); ++i) px[i] = std::sin(0.001f * static_cast<float>(i * (i % 7 + 1)));
  Embeddings e = m->encode_images(px.data(), 2, true);
  for (float v : e.data) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LT(test::cosine(e.row(0), e.row(1), 96), 0.99999);
  Embeddings t = m->encode_tokens({{49406, 320, 49407}, {49406, 1125, 539, 49407}}, true);
  for (float v : t.data) ASSERT_TRUE(std::isfinite(v));
}

TEST(CliCreateRandom, ResNetF16ConfigRoundTrips) {
  const std::string out = test::temp_dir() + "/rn.safetensors";
  const auto r = run_cli({"create-random", "--arch", kResNet, "--dtype", "f16", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto m = Model::load(out);
  const Architecture& a = m->info().arch;
  EXPECT_EQ(a.kind, "resnet");
  EXPECT_EQ(a.resnet_layers, (std::vector<int>{1, 2, 1, 1}));
  EXPECT_EQ(a.vision_width, 8);
  EXPECT_EQ(a.vision_heads, 4);
  EXPECT_EQ(a.image_resolution, 64);
  EXPECT_EQ(a.embed_dim, 32);
  EXPECT_EQ(a.text_layers, 1);
  EXPECT_EQ(m->info().weight_dtype, "F16");
  const SafetensorsFile f = read_safetensors(out);
  EXPECT_EQ(f.tensors.at("visual.bn1.num_batches_tracked").dtype, DType::I64);
  EXPECT_EQ(f.metadata.at("layout"), "openai-clip");
  std::vector<float> px(3 * 64 * 64, 0.5f);
  Embeddings e = m->encode_images(px.data(), 1);
  for (float v : e.data) ASSERT_TRUE(std::isfinite(v));
}

TEST(CliCreateRandom, DeterministicInTheSeed) {
  const std::string dir = test::temp_dir();
  for (const char* name : {"a", "b", "c"}) {
    const std::string seed = std::string(name) == "c" ? "2" : "1";
    const auto r = run_cli({"create-random", "--arch", kResNet, "--seed", seed, "--out", dir + "/" + name + ".st"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_EQ(read_file(dir + "/a.st"), read_file(dir + "/b.st"));
  EXPECT_NE(read_file(dir + "/a.st"), read_file(dir + "/c.st"));
}

TEST(CliCreateRandom, Errors) {
  const std::string out = test::temp_dir() + "/x.safetensors";
  auto r = run_cli({"create-random", "--arch", "ViT-H/14", "--out", out});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("ViT-H/14"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run_cli({"create-random", "--arch", "RN50", "--dtype", "bf16", "--out", out});
  EXPECT_NE(r.exit_code, 0);
  r = run_cli({"create-random", "--arch", "RN50", "--seed", "-1", "--out", out});
  EXPECT_NE(r.exit_code, 0);
  r = run_cli({"create-random", "--arch", kVit, "--out", test::temp_dir() + "/no/such/dir/x.safetensors"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run_cli({"create-random", "--help"});
  EXPECT_EQ(r.exit_code, 0);
}
