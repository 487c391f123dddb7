// clipkit search against the tiny-vit fixture model: result order and scores checked against a
// brute-force ranking of the reference (golden) embeddings.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <numeric>

#include "search/cli_helpers.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using namespace clipkit;

namespace {

struct Fixture {
  std::string imgs, dir;
  test::Golden golden;
};

const Fixture& indexed() {
  static Fixture f = [] {
    Fixture x;
    x.imgs = test::fixture_image_folder();
    x.dir = test::temp_dir() + "/idx";
    x.golden = test::load_golden_tiny_vit();
    auto r = test::run_cli({"index", "create", x.dir, "--model", test::tiny_vit_path()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    fs::create_directories(x.imgs + "/tagged");
    fs::copy_file(x.imgs + "/02_coffee.png", x.imgs + "/tagged/coffee_copy.png");
    r = test::run_cli({"index", "add", x.dir, x.imgs});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    r = test::run_cli({"index", "add", x.dir, x.imgs + "/tagged", "--tag", "drinks"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return x;
  }();
  return f;
}

// Brute-force ranking of the fixture images by cosine with q (golden embeddings).
std::vector<std::pair<std::string, float>> rank(const test::Golden& g, const std::vector<float>& q) {
  std::vector<std::pair<std::string, float>> r;
  for (size_t i = 0; i < g.image_files.size(); ++i) r.emplace_back(g.image_files[i], test::dot(g.image_embeds[i], q));
  std::stable_sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return r;
}

// Compares JSON results with a brute-force ranking: same scores (1e-3) and the same order except
// between near-ties.
void expect_matches(const std::vector<nlohmann::json>& hits, const std::vector<std::pair<std::string, float>>& want) {
  ASSERT_LE(hits.size(), want.size());
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_EQ(hits[i]["rank"], static_cast<int>(i + 1));
    const std::string name = test::basename_of(hits[i]["paths"][0].get<std::string>());
    const float score = hits[i]["score"].get<float>();
    EXPECT_NEAR(score, want[i].second, 1e-3) << i;
    if (name != want[i].first) {
      // only acceptable for a near-tie
      const auto it = std::find_if(want.begin(), want.end(), [&](const auto& p) { return p.first == name; });
      ASSERT_NE(it, want.end()) << name;
      EXPECT_NEAR(it->second, want[i].second, 1e-3) << name << " vs " << want[i].first;
    }
  }
}

}  // namespace

TEST(CliSearch, ByTextMatchesReferenceEmbeddings) {
  const auto& f = indexed();
  for (size_t t : {1, 2, 3}) {
    const std::string text = f.golden.texts[t];
    auto r = test::run_cli({"search", f.dir, "--text", text, "--k", "12", "--format", "json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto hits = test::json_lines(r.out);
    ASSERT_EQ(hits.size(), 12u);
    expect_matches(hits, rank(f.golden, f.golden.text_embeds[t]));
    EXPECT_TRUE(hits[0].contains("sha256"));
    EXPECT_TRUE(hits[0].contains("width"));
    EXPECT_TRUE(hits[0].contains("mtime"));
  }
}

TEST(CliSearch, Int8IndexAndQueriesKeepTheTopResult) {
  // An index embedded with --dtype int8 and queried with int8 finds the same best image as the
  // reference embeddings for every fixture text; scores stay within 0.01.
  const auto& f = indexed();
  const std::string dir = test::temp_dir() + "/idx-int8";
  auto r = test::run_cli({"index", "create", dir, "--model", test::tiny_vit_path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli({"index", "add", dir, f.imgs, "--dtype", "int8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (size_t t : {1, 2, 3}) {
    r = test::run_cli({"search", dir, "--text", f.golden.texts[t], "--k", "1", "--format", "json", "--dtype", "int8"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto hits = test::json_lines(r.out);
    ASSERT_EQ(hits.size(), 1u);
    const auto want = rank(f.golden, f.golden.text_embeds[t]);
    EXPECT_EQ(test::basename_of(hits[0]["paths"][0].get<std::string>()), want[0].first) << t;
    EXPECT_NEAR(hits[0]["score"].get<float>(), want[0].second, 0.01) << t;
  }
  r = test::run_cli({"search", dir, "--text", "x", "--dtype", "int3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("int3"), std::string::npos) << r.err;
}

TEST(CliSearch, ByImageAndLike) {
  const auto& f = indexed();
  auto r = test::run_cli({"search", f.dir, "--image", test::data_path("images/00_astronaut.png"), "--k", "5", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto hits = test::json_lines(r.out);
  ASSERT_EQ(hits.size(), 5u);
  EXPECT_EQ(test::basename_of(hits[0]["path"]), "00_astronaut.png");
  EXPECT_NEAR(hits[0]["score"].get<float>(), 1.0f, 1e-4);
  expect_matches(hits, rank(f.golden, f.golden.image_embeds[0]));

  // more like the coffee image: neither it nor its copy comes back
  r = test::run_cli({"search", f.dir, "--like", f.imgs + "/tagged/coffee_copy.png", "--k", "11", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  hits = test::json_lines(r.out);
  ASSERT_EQ(hits.size(), 11u);  // every other content
  auto want = rank(f.golden, f.golden.image_embeds[2]);
  want.erase(want.begin());  // itself
  expect_matches(hits, want);
  for (const auto& h : hits) EXPECT_EQ(h["path"].get<std::string>().find("coffee"), std::string::npos);
  // by id
  const int64_t id = hits[0]["id"];
  r = test::run_cli({"search", f.dir, "--like", std::to_string(id), "--k", "1", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(test::json_lines(r.out)[0]["id"], id);
}

TEST(CliSearch, WeightedQueryFiltersAndTable) {
  const auto& f = indexed();
  const auto& g = f.golden;
  // image + 0.5*text - text, against the same combination of reference embeddings
  const std::string expr = "image:" + test::data_path("images/03_rocket_q75.jpg") + " + 0.5*text:" + g.texts[2] + " - text:" + g.texts[1];
  auto r = test::run_cli({"search", f.dir, "--query", expr, "--k", "6", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> q(64);
  for (size_t i = 0; i < 64; ++i) q[i] = g.image_embeds[3][i] + 0.5f * g.text_embeds[2][i] - g.text_embeds[1][i];
  expect_matches(test::json_lines(r.out), rank(g, test::unit(q)));
  // the flag form of the same query
  auto r2 = test::run_cli({"search", f.dir, "--image", test::data_path("images/03_rocket_q75.jpg"), "--text", g.texts[2], "--minus",
                           g.texts[1], "--k", "6", "--format", "json"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  std::vector<float> q2(64);
  for (size_t i = 0; i < 64; ++i) q2[i] = g.text_embeds[2][i] + g.image_embeds[3][i] - g.text_embeds[1][i];
  expect_matches(test::json_lines(r2.out), rank(g, test::unit(q2)));

  // tag and path-prefix filters
  r = test::run_cli({"search", f.dir, "--text", "anything", "--tag", "drinks", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto hits = test::json_lines(r.out);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(test::basename_of(hits[0]["path"]), "coffee_copy.png");
  EXPECT_EQ(hits[0]["tags"], nlohmann::json::array({"drinks"}));
  r = test::run_cli({"search", f.dir, "--text", "anything", "--path-prefix", f.imgs + "/tagged/", "--format", "json"});
  ASSERT_EQ(test::json_lines(r.out).size(), 1u);
  // score threshold
  r = test::run_cli({"search", f.dir, "--image", test::data_path("images/00_astronaut.png"), "--min-score", "0.5", "--format", "json"});
  const auto all = rank(g, g.image_embeds[0]);
  const auto above = std::count_if(all.begin(), all.end(), [](const auto& p) { return p.second >= 0.5f; });
  EXPECT_EQ(static_cast<long>(test::json_lines(r.out).size()), static_cast<long>(above));
  // table output
  r = test::run_cli({"search", f.dir, "--text", g.texts[1], "--k", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 4) << r.out;
  EXPECT_NE(r.out.find("rank"), std::string::npos);
  // templates (a built-in set) run and rank all items
  r = test::run_cli({"search", f.dir, "--text", "rocket", "--templates", "photo", "--k", "3", "--format", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::json_lines(r.out).size(), 3u);
}

TEST(CliSearch, Errors) {
  const auto& f = indexed();
  auto r = test::run_cli({"search", f.dir});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("give a query"), std::string::npos) << r.err;
  r = test::run_cli({"search", f.dir, "--like", "/not/indexed.png"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/not/indexed.png"), std::string::npos);
  r = test::run_cli({"search", f.dir, "--query", "text:a + bogus:b"});
  EXPECT_EQ(r.exit_code, 0);  // "+ bogus:b" is not a term start: part of the text
  r = test::run_cli({"search", f.dir, "--query", "video:a"});
  EXPECT_EQ(r.exit_code, 1);
  r = test::run_cli({"search", f.dir, "--image", "/no/such/file.png"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/no/such/file.png"), std::string::npos) << r.err;
  r = test::run_cli({"search", f.dir, "--text", "x", "--model", test::data_path("models/tiny-rn.safetensors")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("was built with model"), std::string::npos) << r.err;
}
