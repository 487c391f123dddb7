// `clipkit embed` end to end (decode, preprocess, tokenize, encode) against the tiny-vit goldens.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/npy.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace {

using namespace clipkit;
using clipkit::test::data_path;
using clipkit::test::run_cli;

std::vector<nlohmann::json> json_lines(const std::string& s) {
  std::vector<nlohmann::json> out;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::vector<float> golden_row(const std::string& name, int64_t row) {
  static const SafetensorsFile g = read_safetensors(data_path("golden/tiny-vit.safetensors"));
  const auto v = g.tensors.at(name).to_f32();
  return std::vector<float>(v.begin() + row * 64, v.begin() + (row + 1) * 64);
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_GE(test::cosine(got.data(), want.data(), want.size()), 0.99999) << what;
  EXPECT_LE(test::max_abs_diff(got.data(), want.data(), want.size()), 1e-4 * test::max_abs(want.data(), want.size()))
      << what;
}

const char* const kModel = "models/tiny-vit.safetensors";

}  // namespace

TEST(CliEmbed, JsonLinesMatchGolden) {
  // images 0 and 3, texts 0 and 1 of the golden set (FIXTURES.md / golden/tiny-vit.json).
  const auto r = run_cli({"embed", "--model", data_path(kModel), "--text", "a photo of a cat.",
                          "a photo of an astronaut in a space suit.", "--image", data_path("images/00_astronaut.png"),
                          data_path("images/03_rocket_q75.jpg"), "--batch", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["kind"], "image");
  EXPECT_EQ(lines[0]["input"], data_path("images/00_astronaut.png"));
  EXPECT_EQ(lines[1]["input"], data_path("images/03_rocket_q75.jpg"));
  EXPECT_EQ(lines[2]["kind"], "text");
  EXPECT_EQ(lines[2]["input"], "a photo of a cat.");
  EXPECT_EQ(lines[3]["input"], "a photo of an astronaut in a space suit.");
  expect_close(lines[0]["embedding"].get<std::vector<float>>(), golden_row("image_embeds", 0), "image 0");
  expect_close(lines[1]["embedding"].get<std::vector<float>>(), golden_row("image_embeds", 3), "image 3");
  expect_close(lines[2]["embedding"].get<std::vector<float>>(), golden_row("text_embeds", 0), "text 0");
  expect_close(lines[3]["embedding"].get<std::vector<float>>(), golden_row("text_embeds", 1), "text 1");
}

TEST(CliEmbed, NormalizedNpyInInputOrder) {
  const std::string out = test::temp_dir() + "/e.npy";
  const auto r = run_cli({"embed", "--model", data_path(kModel), "--image", data_path("images/02_coffee.png"),
                          "--text", "a photo of a cat.", "--normalize", "--out", out, "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.empty());
  const Tensor t = read_npy(out);
  ASSERT_EQ(t.dtype, DType::F32);
  ASSERT_EQ(t.shape, (Shape{2, 64}));
  const auto v = t.to_f32();
  expect_close(std::vector<float>(v.begin(), v.begin() + 64), golden_row("image_embeds_normalized", 2), "image 2");
  expect_close(std::vector<float>(v.begin() + 64, v.end()), golden_row("text_embeds_normalized", 0), "text 0");
  double norm = 0;
  for (int i = 0; i < 64; ++i) norm += double(v[static_cast<size_t>(i)]) * v[static_cast<size_t>(i)];
  EXPECT_NEAR(norm, 1.0, 1e-5);
}

TEST(CliEmbed, Errors) {
  auto r = run_cli({"embed", "--model", data_path(kModel)});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nothing to embed"), std::string::npos) << r.err;
  r = run_cli({"embed", "--model", data_path(kModel), "--image", data_path("missing.png")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(test::non_warning_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("missing.png"), std::string::npos) << r.err;
  r = run_cli({"embed", "--model", data_path(kModel), "--image", data_path("FIXTURES.md")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("FIXTURES.md"), std::string::npos) << r.err;
  r = run_cli({"embed", "--model", data_path(kModel), "--text", "x", "--batch", "0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--batch"), std::string::npos) << r.err;
  r = run_cli({"embed", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--normalize"), std::string::npos);
}
