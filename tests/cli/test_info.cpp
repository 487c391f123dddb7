// `clipkit info` on the fixture models (values from tests/data/FIXTURES.md).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace {

using clipkit::test::data_path;
using clipkit::test::run_cli;

nlohmann::json info(const std::string& model) {
  const auto r = run_cli({"info", "--model", data_path(model)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

}  // namespace

TEST(CliInfo, TinyVit) {
  const auto j = info("models/tiny-vit.safetensors");
  EXPECT_EQ(j["format"], "safetensors");
  const auto& a = j["architecture"];
  EXPECT_EQ(a["kind"], "vit");
  EXPECT_EQ(a["embed_dim"], 64);
  EXPECT_EQ(a["image_resolution"], 64);
  EXPECT_EQ(a["vision_width"], 128);
  EXPECT_EQ(a["vision_layers"], 2);
  EXPECT_EQ(a["vision_heads"], 2);
  EXPECT_EQ(a["vision_patch_size"], 16);
  EXPECT_FALSE(a.contains("resnet_layers"));
  EXPECT_EQ(a["context_length"], 77);
  EXPECT_EQ(a["vocab_size"], 49408);
  EXPECT_EQ(a["text_width"], 64);
  EXPECT_EQ(a["text_layers"], 2);
  EXPECT_EQ(a["text_heads"], 1);
  EXPECT_EQ(a["activation"], "quick_gelu");
  EXPECT_EQ(j["weight_dtype"], "F32");
  EXPECT_NEAR(j["logit_scale"].get<double>(), 24.5133705, 1e-5);
  EXPECT_GT(j["parameter_count"].get<int64_t>(), 49408 * 64);
  EXPECT_EQ(j["fingerprint"].get<std::string>().size(), 16u);
  EXPECT_FALSE(j["kernels"].get<std::string>().empty());
  EXPECT_EQ(j["preprocess"]["resolution"], 64);
  EXPECT_NEAR(j["preprocess"]["mean"][0].get<double>(), 0.48145466, 1e-7);
  EXPECT_NEAR(j["preprocess"]["std"][2].get<double>(), 0.27577711, 1e-7);
}

TEST(CliInfo, FormatsShareTheFingerprint) {
  const auto st = info("models/tiny-vit.safetensors");
  const auto hf = info("models/tiny-vit-hf");
  const auto pt = info("models/tiny-vit.pt");
  EXPECT_EQ(hf["format"], "hf");
  EXPECT_EQ(pt["format"], "openai-jit");
  EXPECT_EQ(hf["weight_dtype"], "F16");
  EXPECT_EQ(st["fingerprint"], hf["fingerprint"]);
  EXPECT_EQ(st["fingerprint"], pt["fingerprint"]);
  EXPECT_EQ(st["parameter_count"], hf["parameter_count"]);
  EXPECT_EQ(st["architecture"], hf["architecture"]);
  EXPECT_EQ(st["architecture"], pt["architecture"]);
}

TEST(CliInfo, TinyRn) {
  const auto j = info("models/tiny-rn.safetensors");
  const auto& a = j["architecture"];
  EXPECT_EQ(a["kind"], "resnet");
  EXPECT_EQ(a["resnet_layers"], nlohmann::json::array({1, 1, 1, 1}));
  EXPECT_EQ(a["vision_width"], 8);
  EXPECT_EQ(a["vision_heads"], 4);
  EXPECT_EQ(a["image_resolution"], 64);
  EXPECT_FALSE(a.contains("vision_patch_size"));
  EXPECT_NEAR(j["logit_scale"].get<double>(), 18.1812458, 1e-5);
}

TEST(CliInfo, ErrorsAndHelp) {
  auto r = run_cli({"info", "--model", data_path("models/does-not-exist.safetensors")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("does-not-exist"), std::string::npos) << r.err;
  r = run_cli({"info", "--model", data_path("images/00_astronaut.png")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run_cli({"info", "--model", data_path("models/tiny-vit.safetensors"), "--activation", "relu"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("relu"), std::string::npos) << r.err;
  r = run_cli({"info", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--model"), std::string::npos);
}
