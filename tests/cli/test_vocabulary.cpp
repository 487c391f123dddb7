// One vocabulary across verbs: --batch-size, --top-k/-k, --threads/--dtype, --format
// table|json|csv (JSON one compact object per line), typed integers; old spellings still work.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "search/cli_helpers.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using clipkit::test::data_path;
using clipkit::test::nonempty_lines;
using clipkit::test::run_cli;

namespace {

// Every line is one JSON object written compactly (no pretty-printing).
void expect_json_lines(const std::string& out, size_t min_lines, const std::string& what) {
  const auto lines = nonempty_lines(out);
  EXPECT_GE(lines.size(), min_lines) << what << ": " << out;
  for (const auto& l : lines) {
    nlohmann::ordered_json j;
    ASSERT_NO_THROW(j = nlohmann::ordered_json::parse(l)) << what << ": " << l;
    EXPECT_TRUE(j.is_object()) << what << ": " << l;
    EXPECT_EQ(l, j.dump()) << what << ": not compact";
  }
}

const std::string& index_dir() {
  static const std::string dir = [] {
    const std::string imgs = clipkit::test::fixture_image_folder();
    const std::string d = clipkit::test::temp_dir() + "/idx";
    auto r = run_cli({"index", "create", d, "--model", clipkit::test::tiny_vit_path(), "--threads", "1"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    r = run_cli({"index", "add", d, imgs, "--commit-every", "5", "--threads", "1", "--decode-threads", "2", "--dtype", "f32"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return d;
  }();
  return dir;
}

}  // namespace

TEST(CliVocabulary, BatchSizeAndItsAlias) {
  const std::string model = data_path("models/tiny-vit.safetensors");
  const std::string img = data_path("images/02_coffee.png");
  const auto a = run_cli({"embed", "--model", model, "--image", img, "--image", img, "--text", "a cup", "--batch-size", "1"});
  const auto b = run_cli({"embed", "--model", model, "--image", img, "--image", img, "--text", "a cup", "--batch", "1"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  const auto bad = run_cli({"embed", "--model", model, "--text", "a", "--batch-size", "0"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--batch-size"), std::string::npos) << bad.err;
  const auto bench = run_cli({"bench", "--model", model, "--batch-size", "2", "--images", "2", "--texts", "0", "--threads", "1"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_EQ(nlohmann::json::parse(bench.out)["batch"], 2);
}

TEST(CliVocabulary, TopKSpellingsAgree) {
  const std::string dir = index_dir();
  const auto a = run_cli({"search", dir, "--text", "a cup of coffee", "--top-k", "3", "--format", "json"});
  const auto b = run_cli({"search", dir, "--text", "a cup of coffee", "-k", "3", "--format", "json"});
  const auto c = run_cli({"search", dir, "--text", "a cup of coffee", "--k", "3", "--format", "json"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(nonempty_lines(a.out).size(), 3u);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out, c.out);

  const std::string model = data_path("models/tiny-vit.safetensors");
  const std::string img = data_path("images/02_coffee.png");
  const auto x = run_cli({"classify", "--model", model, "--labels", "cup,cat,rocket", "--top-k", "2", "--format", "json", img});
  const auto y = run_cli({"classify", "--model", model, "--labels", "cup,cat,rocket", "-k", "2", "--format", "json", img});
  ASSERT_EQ(x.exit_code, 0) << x.err;
  EXPECT_EQ(x.out, y.out);
  EXPECT_EQ(nlohmann::json::parse(x.out)["top"].size(), 2u);
}

TEST(CliVocabulary, FormatsOnEveryVerbThatPrintsResults) {
  const std::string dir = index_dir();
  const std::string model = data_path("models/tiny-vit.safetensors");
  struct Case {
    std::vector<std::string> args;
    size_t json_lines;
  };
  const std::vector<Case> cases = {
      {{"search", dir, "--text", "a rocket", "-k", "4"}, 4},
      {{"dedup", dir, "--threshold", "0.5"}, 1},
      {{"index", "verify", dir}, 1},
      {{"index", "info", dir}, 1},
      {{"info", "--model", model}, 1},
      {{"bench", "--model", model, "--images", "1", "--texts", "1", "--threads", "1"}, 1},
      {{"models", "list"}, 2},
      {{"list", "models"}, 2},
      {{"list", "label-sets"}, 2},
      {{"list", "template-sets"}, 2},
      {{"list", "index-kinds"}, 3},
  };
  for (const auto& c : cases) {
    std::string name;
    for (const auto& w : c.args) name += w + " ";
    for (const std::string format : {"json", "csv", "table"}) {
      auto args = c.args;
      args.push_back("--format");
      args.push_back(format);
      const auto r = run_cli(args);
      ASSERT_EQ(r.exit_code, 0) << name << format << ": " << r.err;
      if (format == "json") expect_json_lines(r.out, c.json_lines, name);
      if (format == "csv") {
        const auto lines = nonempty_lines(r.out);
        ASSERT_GE(lines.size(), 2u) << name << ": " << r.out;
        EXPECT_EQ(lines[0].find('{'), std::string::npos) << name << ": " << lines[0];
        EXPECT_NE(lines[0].find(','), std::string::npos) << name << ": " << lines[0];
      }
    }
    auto bad = c.args;
    bad.push_back("--format");
    bad.push_back("xml");
    const auto r = run_cli(bad);
    EXPECT_EQ(r.exit_code, 2) << name;
    EXPECT_NE(r.err.find("table"), std::string::npos) << r.err;
  }
}

TEST(CliVocabulary, JsonLinesAreCompactEverywhere) {
  const std::string model = data_path("models/tiny-vit.safetensors");
  const std::string img = data_path("images/02_coffee.png");
  auto r = run_cli({"classify", "--model", model, "--labels", "cup,cat", "--format", "json", img});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_json_lines(r.out, 1, "classify");
  r = run_cli({"embed", "--model", model, "--image", img, "--text", "a cup"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // the embedding's numbers are written in their shortest round-trip form, as nlohmann writes them
  for (const auto& l : nonempty_lines(r.out)) {
    EXPECT_EQ(l.find(", "), std::string::npos) << l.substr(0, 80);
    EXPECT_EQ(l.find("\": "), std::string::npos) << l.substr(0, 80);
  }
  r = run_cli({"create-random", "--arch", "custom:kind=vit,embed_dim=64,image_resolution=64,vision_width=128,vision_layers=2,vision_patch_size=16,text_width=64,text_layers=2", "--out", clipkit::test::temp_dir() + "/r.safetensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_json_lines(r.out, 1, "create-random");
}

TEST(CliVocabulary, SearchSizeColumnIsTheJsonSize) {
  const std::string dir = index_dir();
  const auto json = run_cli({"search", dir, "--text", "a rocket", "-k", "3", "--format", "json"});
  const auto table = run_cli({"search", dir, "--text", "a rocket", "-k", "3"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  ASSERT_EQ(table.exit_code, 0) << table.err;
  const auto jl = nonempty_lines(json.out);
  const auto tl = nonempty_lines(table.out);
  ASSERT_EQ(tl.size(), jl.size() + 1);
  std::stringstream head(tl[0]);
  std::vector<std::string> cols;
  std::string w;
  while (head >> w) cols.push_back(w);
  const auto size_col = std::find(cols.begin(), cols.end(), "size") - cols.begin();
  ASSERT_LT(size_col, static_cast<long>(cols.size())) << tl[0];
  for (size_t i = 0; i < jl.size(); ++i) {
    const auto j = nlohmann::json::parse(jl[i]);
    std::stringstream row(tl[i + 1]);
    std::vector<std::string> cells;
    while (row >> w) cells.push_back(w);
    ASSERT_GT(cells.size(), static_cast<size_t>(size_col));
    EXPECT_EQ(cells[static_cast<size_t>(size_col)], std::to_string(j["size"].get<int64_t>())) << tl[i + 1];
    EXPECT_EQ(j["size"].get<int64_t>(), static_cast<int64_t>(fs::file_size(j["path"].get<std::string>())));
  }
}

TEST(CliVocabulary, IntegersAreTypedAsIntegers) {
  for (const std::string bad : {"abc", "1.5", "7x"}) {
    auto r = run_cli({"tokenize", "--context-length", bad, "cat"});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    r = run_cli({"create-random", "--arch", "RN50", "--seed", bad, "--out", clipkit::test::temp_dir() + "/x.st"});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--seed"), std::string::npos) << r.err;
  }
}

TEST(CliVocabulary, ThreadsAndDtypeOnEveryVerbThatLoadsAModel) {
  const std::string dir = index_dir();
  const std::string model = data_path("models/tiny-vit.safetensors");
  const std::string img = data_path("images/02_coffee.png");
  const std::vector<std::vector<std::string>> cmds = {
      {"info", "--model", model},
      {"embed", "--model", model, "--text", "a"},
      {"classify", "--model", model, "--labels", "a,b", img},
      {"search", dir, "--text", "a"},
      {"bench", "--model", model, "--images", "1", "--texts", "0"},
  };
  for (auto args : cmds) {
    args.insert(args.end(), {"--threads", "1", "--dtype", "f16"});
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
  }
  const auto info = run_cli({"info", "--model", model, "--dtype", "int8"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(nlohmann::json::parse(info.out)["compute_dtype"], "int8");
}
