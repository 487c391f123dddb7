// The command-line contract of metadata, filters and recommendations: `index add --meta`,
// `index meta`, `search --where --format json` (every hit carries "meta") and `recommend`, checked
// against a brute force over the vectors stored in the index.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "clipkit/index.h"
#include "search/cli_helpers.h"
#include "support/test_support.h"

using namespace clipkit;
using nlohmann::json;

namespace {

struct Shop {
  std::string dir, imgs;
  std::vector<std::string> files;
};

std::vector<json> lines(const std::string& out) {
  std::vector<json> v;
  std::stringstream ss(out);
  for (std::string l; std::getline(ss, l);)
    if (!l.empty()) v.push_back(json::parse(l));
  return v;
}

const Shop& shop() {
  static const Shop s = [] {
    Shop x;
    x.dir = test::temp_dir() + "/shop.idx";
    std::vector<std::string> names;
    x.imgs = test::fixture_image_folder(&names);
    for (const auto& n : names) x.files.push_back(x.imgs + "/" + n);
    // metadata for every other file; paths relative to the working directory... and absolute
    const std::string meta = test::temp_dir() + "/meta.jsonl";
    std::ofstream out(meta);
    for (size_t i = 0; i < x.files.size(); i += 2)
      out << json({{"path", x.files[i]}, {"category", i % 4 ? "dress" : "shoe"}, {"price", 10.0 * static_cast<double>(i)},
                   {"colors", {i % 3 ? "red" : "blue", "white"}}})
                 .dump()
          << "\n";
    out.close();
    auto r = test::run_cli({"index", "create", x.dir, "--model", test::tiny_vit_path()});
    if (r.exit_code != 0) throw std::runtime_error(r.err);
    r = test::run_cli({"index", "add", x.dir, x.imgs, "--meta", meta});
    if (r.exit_code != 0) throw std::runtime_error(r.err);
    return x;
  }();
  return s;
}

double dotv(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

}  // namespace

TEST(CliRecsys, SearchWhereReturnsTheBestPassingItemsWithTheirMeta) {
  const Shop& s = shop();
  Index idx = Index::open(s.dir, Index::Mode::ReadOnly);
  CatalogItem q;
  ASSERT_TRUE(idx.find_path(s.files[1], &q));
  auto r = test::run_cli({"search", s.dir, "--like", "#" + std::to_string(q.id), "--where", "category = \"dress\" or price < 15",
                          "--k", "3", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto hits = lines(r.out);
  // brute force over the stored vectors and the metadata written to the --meta file
  std::vector<std::pair<double, int64_t>> want;
  for (size_t i = 0; i < s.files.size(); i += 2) {
    const bool pass = (i % 4 != 0) || 10.0 * static_cast<double>(i) < 15;
    CatalogItem it;
    ASSERT_TRUE(idx.find_path(s.files[i], &it));
    if (pass && it.id != q.id) want.emplace_back(dotv(idx.vector(it.id), idx.vector(q.id)), it.id);
  }
  std::sort(want.rbegin(), want.rend());
  ASSERT_EQ(hits.size(), std::min<size_t>(3, want.size()));
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_EQ(hits[i]["id"], want[i].second);
    EXPECT_NEAR(hits[i]["score"].get<double>(), want[i].first, 1e-5);
    ASSERT_TRUE(hits[i].contains("meta"));
  }
  // every hit carries "meta", {} when none
  r = test::run_cli({"search", s.dir, "--text", "a photo", "--k", "20", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int empty = 0;
  for (const auto& h : lines(r.out)) {
    ASSERT_TRUE(h.contains("meta"));
    empty += h["meta"].empty();
  }
  EXPECT_GT(empty, 0);
  // a malformed filter: one line naming the column, usage-independent exit 1
  r = test::run_cli({"search", s.dir, "--text", "a", "--where", "price < "});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("clipkit search: where:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("column 9"), std::string::npos) << r.err;
}

TEST(CliRecsys, RecommendFollowsTheAverageFormula) {
  const Shop& s = shop();
  Index idx = Index::open(s.dir, Index::Mode::ReadOnly);
  CatalogItem p1, p2, n1;
  ASSERT_TRUE(idx.find_path(s.files[0], &p1));
  ASSERT_TRUE(idx.find_path(s.files[2], &p2));
  ASSERT_TRUE(idx.find_path(s.files[5], &n1));
  auto r = test::run_cli({"recommend", s.dir, "--positive", std::to_string(p1.id), "--positive", s.files[2], "--negative",
                          "#" + std::to_string(n1.id), "--exclude", std::to_string(p1.id + 3), "--k", "4", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto hits = lines(r.out);
  const auto a = idx.vector(p1.id), b = idx.vector(p2.id), c = idx.vector(n1.id);
  std::vector<std::pair<double, int64_t>> want;
  for (int64_t id = 1; id <= idx.info().items + 5; ++id) {
    CatalogItem it;
    if (!idx.find_id(id, &it) || id == p1.id || id == p2.id || id == n1.id || id == p1.id + 3) continue;
    const auto v = idx.vector(id);
    if (std::max({dotv(v, a), dotv(v, b), dotv(v, c)}) >= 0.99) continue;  // near-duplicates of examples
    double sc = 0;
    for (size_t d = 0; d < v.size(); ++d) sc += v[d] * (2 * (a[d] + b[d]) / 2 - c[d]);
    want.emplace_back(sc, id);
  }
  std::sort(want.rbegin(), want.rend());
  ASSERT_EQ(hits.size(), std::min<size_t>(4, want.size()));
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_EQ(hits[i]["id"], want[i].second) << i;
    EXPECT_NEAR(hits[i]["score"].get<double>(), want[i].first, 1e-4) << i;
    EXPECT_TRUE(hits[i].contains("meta"));
  }
  r = test::run_cli({"recommend", s.dir, "--positive", "text:a cat", "--strategy", "best-score", "--where", "exists category",
                     "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& h : lines(r.out)) EXPECT_TRUE(h["meta"].contains("category"));
  r = test::run_cli({"recommend", s.dir});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = test::run_cli({"recommend", s.dir, "--positive", "/no/such/file.png"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("neither an indexed path nor an item id"), std::string::npos) << r.err;
}

TEST(CliRecsys, IndexMetaShowSetUnset) {
  const Shop& s = shop();
  // a copy, since this test writes
  const std::string dir = test::temp_dir() + "/meta.idx";
  auto r = test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "add", dir, s.files[0], s.files[1]});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "meta", dir, "set", s.files[0], R"({"price": 3, "category": "hat"})"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "meta", dir, "set", s.files[0], R"({"price": null, "brand": "x"})", "--merge"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "meta", dir, "show", s.files[0]});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines(r.out).at(0)["meta"], json({{"category", "hat"}, {"brand", "x"}}));
  r = test::run_cli({"index", "meta", dir, "unset", s.files[0], "brand"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "meta", dir, "show", s.files[0]});
  EXPECT_EQ(lines(r.out).at(0)["meta"], json({{"category", "hat"}}));
  // bad input: clear one-line errors, nothing changed
  r = test::run_cli({"index", "meta", dir, "set", s.files[0], "[1]"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("must be a JSON object"), std::string::npos) << r.err;
  r = test::run_cli({"index", "meta", dir, "set", "/not/indexed.png", "{}"});
  EXPECT_EQ(r.exit_code, 1);
  const std::string bad = test::temp_dir() + "/bad.jsonl";
  std::ofstream(bad) << "{\"path\": \"" << s.files[1] << "\", \"a\": 1}\n{oops\n";
  r = test::run_cli({"index", "add", dir, s.files[1], "--meta", bad});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  r = test::run_cli({"index", "meta", dir, "show", s.files[1]});
  EXPECT_EQ(lines(r.out).at(0)["meta"], json::object());
  r = test::run_cli({"index", "meta", dir, "show", s.files[0]});
  EXPECT_EQ(lines(r.out).at(0)["meta"], json({{"category", "hat"}}));
}
