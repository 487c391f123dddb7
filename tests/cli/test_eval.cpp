// clipkit eval: strategies side by side, reports, template selection.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "clipkit/model.h"
#include "clipkit/zeroshot.h"
#include "core/mapped_file.h"
#include "support/test_support.h"

namespace {
using clipkit::test::data_path;
using clipkit::test::run_cli;
namespace fs = std::filesystem;

// A small labelled folder made from the fixture images: 3 classes, 8 images.
std::string make_dataset() {
  const std::string root = clipkit::test::temp_dir() + "/ds";
  const std::vector<std::pair<std::string, std::vector<std::string>>> layout = {
      {"cat", {"01_chelsea_q90_progressive.jpg", "09_tiny_7x5.png", "11_palette.png"}},
      {"cup", {"02_coffee.png", "10_small_40x50.png"}},
      {"space", {"00_astronaut.png", "03_rocket_q75.jpg", "06_wide_hubble.png"}}};
  for (const auto& [cls, files] : layout) {
    fs::create_directories(root + "/" + cls);
    for (const auto& f : files) fs::copy_file(data_path("images/" + f), root + "/" + cls + "/" + f);
  }
  std::ofstream(root + "/labels.json") << R"({"cat": "tabby cat", "cup": ["coffee mug", "espresso"]})";
  return root;
}
}  // namespace

TEST(CliEval, StrategiesReportsAgreeWithTheLibrary) {
  const std::string ds = make_dataset();
  const std::string out = clipkit::test::temp_dir();
  const std::string model = data_path("models/tiny-vit.safetensors");
  const auto r = run_cli({"eval", "--model", model, "--dataset", ds, "--strategies", "none,photo,imagenet7",
                          "--report", out + "/r.json", "--report", out + "/r.html", "--report", out + "/r.md"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("top-1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("imagenet7"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tabby cat"), std::string::npos) << r.out;

  const auto j = nlohmann::json::parse(clipkit::read_file(out + "/r.json"));
  EXPECT_EQ(j["images"].get<int>(), 8);
  EXPECT_EQ(j["labels"], (std::vector<std::string>{"tabby cat", "coffee mug", "space"}));
  ASSERT_EQ(j["strategies"].size(), 3u);

  // independent recomputation with the library: classifier per strategy, argmax per image
  auto m = clipkit::Model::load(model);
  const auto folder = clipkit::read_labeled_folder(ds);
  const auto img = m->encode_image_files(folder.images, true);
  const std::vector<std::string> names = {"none", "photo", "imagenet7"};
  for (size_t s = 0; s < names.size(); ++s) {
    clipkit::ClassifierOptions opt;
    opt.templates = clipkit::builtin_template_set(names[s]);
    const auto clf = clipkit::ZeroShotClassifier::build(*m, folder.classes, opt);
    const auto preds = clf.classify(img, 100.0f, 1);
    int correct = 0;
    std::vector<std::vector<int>> confusion(3, std::vector<int>(3, 0));
    for (size_t i = 0; i < preds.size(); ++i) {
      correct += preds[i].top[0].index == folder.truth[i];
      confusion[static_cast<size_t>(folder.truth[i])][static_cast<size_t>(preds[i].top[0].index)]++;
    }
    const auto& js = j["strategies"][s];
    EXPECT_EQ(js["name"], names[s]);
    EXPECT_DOUBLE_EQ(js["top1"].get<double>(), correct / 8.0);
    EXPECT_DOUBLE_EQ(js["top5"].get<double>(), 1.0);  // 3 classes
    EXPECT_EQ(js["confusion"].get<std::vector<std::vector<int>>>(), confusion);
    double mpc = 0;
    for (size_t c = 0; c < 3; ++c) {
      int n = 0;
      for (int v : confusion[c]) n += v;
      mpc += static_cast<double>(confusion[c][c]) / n / 3.0;
    }
    EXPECT_NEAR(js["mean_per_class"].get<double>(), mpc, 1e-12);
  }
  const std::string html = clipkit::read_file(out + "/r.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // static, self-contained
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);   // nothing fetched from elsewhere
  const std::string md = clipkit::read_file(out + "/r.md");
  EXPECT_NE(md.find("| metric |"), std::string::npos) << md;
  EXPECT_NE(md.find("coffee mug"), std::string::npos);
}

TEST(CliEval, TemplateSelection) {
  const std::string ds = make_dataset();
  const std::string out = clipkit::test::temp_dir();
  const std::string pool = out + "/pool.txt";
  std::ofstream(pool) << "a photo of a {}.\nitap of a {}.\na {} in a video game.\nart of the {}.\n";
  const auto r = run_cli({"eval", "--model", data_path("models/tiny-vit.safetensors"), "--dataset", ds, "--strategies", "",
                          "--select-templates", "--from", pool, "--max", "3", "--holdout", "0.5", "--report", out + "/s.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(clipkit::read_file(out + "/s.json"));
  const auto& sel = j["selection"];
  ASSERT_EQ(sel["steps"].size(), 3u);
  EXPECT_EQ(sel["selection_images"].get<int>() + sel["heldout_images"].get<int>(), 8);
  std::set<std::string> seen;
  for (const auto& st : sel["steps"]) {
    EXPECT_TRUE(seen.insert(st["template"].get<std::string>()).second);
    EXPECT_GE(st["selection_top1"].get<double>(), 0.0);
    EXPECT_LE(st["heldout_top1"].get<double>(), 1.0);
  }
  EXPECT_NE(r.out.find("held-out"), std::string::npos) << r.out;
  // deterministic
  const auto again = run_cli({"eval", "--model", data_path("models/tiny-vit.safetensors"), "--dataset", ds, "--strategies", "",
                              "--select-templates", "--from", pool, "--max", "3"});
  EXPECT_EQ(again.out, r.out.substr(0, r.out.find("wrote ")));
}

TEST(CliEval, BadArguments) {
  const std::string model = data_path("models/tiny-vit.safetensors");
  const std::string ds = make_dataset();
  auto r = run_cli({"eval", "--model", model, "--dataset", ds + "/missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
  r = run_cli({"eval", "--model", model, "--dataset", ds, "--report", "out.pdf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("out.pdf"), std::string::npos) << r.err;
  r = run_cli({"eval", "--model", model, "--dataset", ds, "--select-templates", "--holdout", "1.5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--holdout"), std::string::npos) << r.err;
}
