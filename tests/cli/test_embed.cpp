// `clipkit embed` end to end (decode, preprocess, tokenize, encode) against the tiny-vit goldens.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
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

TEST(CliEmbed, FolderRowsAndPathsFile) {
  // A folder (searched recursively, in sorted order) beside a file named directly: every fixture
  // image once, in the golden order, then the named file; a non-image file in the folder is ignored.
  namespace fs = std::filesystem;
  const std::string base = test::temp_dir();
  const std::string dir = base + "/photos";
  fs::create_directories(dir + "/b");
  const char* names[] = {"00_astronaut.png", "01_chelsea_q90_progressive.jpg", "02_coffee.png", "03_rocket_q75.jpg"};
  fs::copy_file(data_path(std::string("images/") + names[0]), dir + "/" + names[0]);
  fs::copy_file(data_path(std::string("images/") + names[1]), dir + "/" + names[1]);
  fs::copy_file(data_path(std::string("images/") + names[2]), dir + "/b/" + names[2]);
  fs::copy_file(data_path("images/index.json"), dir + "/index.json");
  const std::string out = base + "/folder.npy";
  const auto r = run_cli({"embed", "--model", data_path(kModel), dir, data_path("images/03_rocket_q75.jpg"), "--out", out,
                          "--batch-size", "2", "--decode-threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tensor t = read_npy(out);
  ASSERT_EQ(t.shape, (Shape{4, 64}));
  const auto v = t.to_f32();
  const int64_t golden[] = {0, 1, 2, 3};
  for (int64_t i = 0; i < 4; ++i)
    expect_close(std::vector<float>(v.begin() + i * 64, v.begin() + (i + 1) * 64), golden_row("image_embeds", golden[i]),
                 "row " + std::to_string(i));
  std::ifstream in(base + "/folder.paths.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const std::vector<std::string> want = {dir + "/" + names[0], dir + "/" + names[1], dir + "/b/" + names[2],
                                         data_path("images/03_rocket_q75.jpg")};
  EXPECT_EQ(lines, want);
}

TEST(CliEmbed, UnreadableFileInAFolderIsSkipped) {
  namespace fs = std::filesystem;
  const std::string base = test::temp_dir();
  const std::string dir = base + "/mixed";
  fs::create_directories(dir);
  fs::copy_file(data_path("images/02_coffee.png"), dir + "/a.png");
  fs::copy_file(data_path("FIXTURES.md"), dir + "/b.jpg");  // not an image
  const std::string out = base + "/mixed.npy";
  const auto r = run_cli({"embed", "--model", data_path(kModel), dir, "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("b.jpg"), std::string::npos) << r.err;
  const Tensor t = read_npy(out);
  ASSERT_EQ(t.shape, (Shape{1, 64}));
  const auto v = t.to_f32();
  expect_close(v, golden_row("image_embeds", 2), "a.png");
  std::ifstream in(base + "/mixed.paths.txt");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, dir + "/a.png");
  EXPECT_FALSE(std::getline(in, line));
}

TEST(CliEmbed, FastDecodeStaysCloseToTheGoldens) {
  // The two JPEG fixtures decode at half size with --fast-decode (tiny-vit's resolution is 64);
  // the embeddings stay close to OpenAI's reference ones.
  const std::string out = test::temp_dir() + "/fast.npy";
  const auto r = run_cli({"embed", "--model", data_path(kModel), data_path("images/01_chelsea_q90_progressive.jpg"),
                          data_path("images/03_rocket_q75.jpg"), "--fast-decode", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto v = read_npy(out).to_f32();
  ASSERT_EQ(v.size(), 128u);
  const int64_t golden[] = {1, 3};
  for (int64_t i = 0; i < 2; ++i) {
    const auto want = golden_row("image_embeds", golden[i]);
    const double c = test::cosine(v.data() + i * 64, want.data(), 64);
    std::printf("fixture image %lld: --fast-decode embedding cosine to the golden %.6f\n", static_cast<long long>(golden[i]), c);
    EXPECT_GE(c, 0.998) << "image " << golden[i];  // measured: 0.99910 and 0.99898
    EXPECT_LT(c, 0.999999) << "image " << golden[i] << ": the reduced decode was not used";
  }
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
