// Quiet correctness and error messages: folders, failures named once and alike, library errors in
// clipkit's words, output paths checked before the work, eval and classify agreeing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/mapped_file.h"
#include "search/cli_helpers.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using clipkit::test::data_path;
using clipkit::test::run_cli;

namespace {

// The non-empty lines, less the load warning of the tiny test models, which state no activation
// or head width (tested elsewhere).
std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  for (auto& l : clipkit::test::nonempty_lines(s))
    if (l.find("does not state its") == std::string::npos) out.push_back(std::move(l));
  return out;
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

std::string new_index() {
  const std::string dir = clipkit::test::temp_dir() + "/idx";
  const auto r = run_cli({"index", "create", dir, "--model", clipkit::test::tiny_vit_path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return dir;
}

const std::string kModel = "models/tiny-vit.safetensors";

}  // namespace

TEST(CliConsistency, IndexAddReadsSubFoldersLikeClassify) {
  const std::string root = clipkit::test::temp_dir() + "/photos";
  fs::create_directories(root + "/2023/may");
  fs::copy_file(data_path("images/02_coffee.png"), root + "/2023/may/coffee.png");
  const std::string dir = new_index();
  auto r = run_cli({"index", "add", dir, root, "--no-recursive"});
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("no image files found"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sub-folders"), std::string::npos) << r.err;
  r = run_cli({"index", "add", dir, root});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("added 1,"), std::string::npos) << r.out;
  const auto c = run_cli({"classify", "--model", data_path(kModel), "--labels", "a,b", "--format", "csv", root});
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(lines_of(c.out).size(), 3u) << c.out;  // header + 2 ranks of the one image
  r = run_cli({"index", "add", dir, clipkit::test::temp_dir() + "/empty-does-not-exist"});
  EXPECT_EQ(r.exit_code, 1);
}

TEST(CliConsistency, FailuresNameThePathOnceAndTheSameCauseReadsTheSame) {
  const std::string root = clipkit::test::temp_dir() + "/bad";
  fs::create_directories(root);
  std::ofstream(root + "/empty1.jpg").close();
  std::ofstream(root + "/empty2.png").close();
  std::ofstream(root + "/broken.jpg") << "not a jpeg";
  const std::string dir = new_index();
  const auto r = run_cli({"index", "add", dir, root});
  EXPECT_EQ(r.exit_code, 1);
  const auto lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 4u) << r.err;  // three failures and the summary error
  std::map<std::string, std::string> reason;
  for (const auto& l : lines) {
    EXPECT_EQ(l.rfind("clipkit index add: ", 0), 0u) << l;
    for (const char* f : {"empty1.jpg", "empty2.png", "broken.jpg"}) {
      if (l.find(f) == std::string::npos) continue;
      EXPECT_EQ(count_of(l, f), 1u) << "path named twice: " << l;
      reason[f] = l.substr(l.find(f) + std::string(f).size());
    }
  }
  ASSERT_EQ(reason.size(), 3u) << r.err;
  EXPECT_EQ(reason["empty1.jpg"], reason["empty2.png"]) << r.err;

  const auto c = run_cli({"classify", "--model", data_path(kModel), "--labels", "a,b", root + "/empty1.jpg", root + "/empty2.png"});
  EXPECT_EQ(c.exit_code, 1);
  const auto cl = lines_of(c.err);
  ASSERT_EQ(cl.size(), 3u) << c.err;
  EXPECT_EQ(cl[0].substr(cl[0].find("empty1.jpg") + 10), cl[1].substr(cl[1].find("empty2.png") + 10)) << c.err;
}

TEST(CliConsistency, ClassifyPrintsNoHeaderWhenNothingWasClassified) {
  const std::string root = clipkit::test::temp_dir() + "/broken";
  fs::create_directories(root);
  std::ofstream(root + "/broken.jpg") << "not a jpeg";
  for (const char* format : {"table", "csv", "json"}) {
    const auto r = run_cli({"classify", "--model", data_path(kModel), "--labels", "a,b", "--format", format, root});
    EXPECT_EQ(r.exit_code, 1) << format;
    EXPECT_EQ(r.out, "") << format;
    EXPECT_EQ(lines_of(r.err).size(), 2u) << r.err;  // the skipped image and the error
  }
}

TEST(CliConsistency, LibraryErrorsInClipkitsWords) {
  const std::string dir = clipkit::test::temp_dir() + "/idx";
  auto r = run_cli({"index", "create", dir, "--model", clipkit::test::tiny_vit_path(), "--kind", "bogus"});
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_EQ(r.err.find("Error in"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(".cpp:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'bogus'"), std::string::npos) << r.err;

  const std::string labels = clipkit::test::temp_dir() + "/labels.json";
  std::ofstream(labels) << "[\"cat\", ";
  r = run_cli({"classify", "--model", data_path(kModel), "--labels-file", labels, data_path("images/02_coffee.png")});
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_EQ(r.err.find("json.exception"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("labels.json"), std::string::npos) << r.err;
}

TEST(CliConsistency, OutputPathsAreCheckedBeforeTheWork) {
  const std::string ds = clipkit::test::temp_dir() + "/ds";
  fs::create_directories(ds + "/cup");
  fs::copy_file(data_path("images/02_coffee.png"), ds + "/cup/a.png");
  auto r = run_cli({"eval", "--model", data_path(kModel), "--dataset", ds, "--report", "/nonexistent/r.html"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");  // nothing evaluated
  ASSERT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("'/nonexistent'"), std::string::npos) << r.err;
  r = run_cli({"embed", "--model", data_path(kModel), "--text", "a", "--out", "/nonexistent/e.npy"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'/nonexistent'"), std::string::npos) << r.err;
  // a file the library cannot create is named as given, not by its temporary name
  r = run_cli({"preprocess", "--resolution", "8", data_path("images/02_coffee.png"), "--out", "/proc/clipkit-test.npy"});
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_EQ(r.err.find(".tmp"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/proc/clipkit-test.npy"), std::string::npos) << r.err;
}

TEST(CliConsistency, ClassifyAndEvalGiveTheSameProbabilities) {
  const std::string ds = clipkit::test::temp_dir() + "/ds";
  const std::vector<std::pair<std::string, std::vector<std::string>>> layout = {
      {"cat", {"01_chelsea_q90_progressive.jpg", "11_palette.png"}},
      {"cup", {"02_coffee.png"}},
      {"space", {"00_astronaut.png", "03_rocket_q75.jpg"}}};
  for (const auto& [cls, files] : layout) {
    fs::create_directories(ds + "/" + cls);
    for (const auto& f : files) fs::copy_file(data_path("images/" + f), ds + "/" + cls + "/" + f);
  }
  const std::string report = clipkit::test::temp_dir() + "/r.json";
  const auto e = run_cli({"eval", "--model", data_path(kModel), "--dataset", ds, "--strategies", "photo", "--report", report});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const auto c = run_cli({"classify", "--model", data_path(kModel), "--labels", "cat,cup,space", "--templates", "photo", "-k", "1",
                          "--format", "json", ds});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  std::map<std::string, std::pair<std::string, double>> from_classify;
  for (const auto& l : lines_of(c.out)) {
    const auto j = nlohmann::json::parse(l);
    from_classify[fs::path(j["image"].get<std::string>()).filename().string()] = {j["top"][0]["label"], j["top"][0]["prob"]};
  }
  const auto r = nlohmann::json::parse(clipkit::read_file(report));
  const auto& preds = r["strategies"][0]["predictions"];
  ASSERT_EQ(preds.size(), 5u);
  ASSERT_EQ(from_classify.size(), 5u);
  double spread = 0;
  for (const auto& p : preds) {
    const auto& [label, prob] = from_classify.at(fs::path(p["image"].get<std::string>()).filename().string());
    EXPECT_EQ(p["label"], label);
    EXPECT_NEAR(p["prob"].get<double>(), prob, 1e-5) << p.dump();
    spread = std::max(spread, std::abs(prob - 1.0 / 3));
  }
  EXPECT_GT(spread, 1e-3);  // the probabilities depend on the scale: the comparison means something
  // both use the model's own logit scale (clipkit info prints it)
  const auto info = run_cli({"info", "--model", data_path(kModel)});
  EXPECT_NEAR(r["scale"].get<double>(), nlohmann::json::parse(info.out)["logit_scale"].get<double>(), 1e-4);
}

TEST(CliConsistency, EvalReportsAClassWithoutReadableImages) {
  const std::string ds = clipkit::test::temp_dir() + "/ds";
  fs::create_directories(ds + "/cup");
  fs::create_directories(ds + "/space");
  fs::create_directories(ds + "/ghost");
  fs::copy_file(data_path("images/02_coffee.png"), ds + "/cup/a.png");
  fs::copy_file(data_path("images/03_rocket_q75.jpg"), ds + "/space/b.jpg");
  std::ofstream(ds + "/ghost/broken.jpg") << "not a jpeg";
  const std::string report = clipkit::test::temp_dir() + "/r.json";
  const auto r = run_cli({"eval", "--model", data_path(kModel), "--dataset", ds, "--strategies", "photo", "--report", report});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("clipkit eval: class 'ghost' has no readable image"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("no images"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(clipkit::read_file(report));
  const auto labels = j["labels"].get<std::vector<std::string>>();
  const auto& s = j["strategies"][0];
  double sum = 0;
  int n = 0;
  for (size_t c = 0; c < labels.size(); ++c) {
    if (labels[c] == "ghost") {
      EXPECT_TRUE(s["per_class"][c].is_null());
    } else {
      sum += s["per_class"][c].get<double>();
      ++n;
    }
  }
  EXPECT_EQ(n, 2);
  EXPECT_DOUBLE_EQ(s["mean_per_class"].get<double>(), sum / n);
}

TEST(CliConsistency, DownloadFailureGivesTheWholeReason) {
  const std::string dir = clipkit::test::temp_dir() + "/models";
  const auto r = run_cli({"models", "download", "ViT-B/32", "--dir", dir, "--base-url", "http://127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("cannot connect to http://127.0.0.1:1"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("failed: Connection"), std::string::npos) << r.err;
}
