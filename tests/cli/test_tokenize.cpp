// `clipkit tokenize` against the reference ids of tests/data/tokenizer_cases.json.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/test_support.h"

namespace {

using clipkit::test::run_cli;

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line)) out.push_back(line);
  return out;
}

nlohmann::json reference_case(int id) {
  std::ifstream in(clipkit::test::data_path("tokenizer_cases.json"), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const auto j = nlohmann::json::parse(ss.str());
  for (const auto& c : j.at("cases"))
    if (c.at("id").get<int>() == id) return c;
  return {};
}

TEST(CliTokenize, PrintsPaddedRowPerText) {
  const auto r = run_cli({"tokenize", "--no-normalize", "a photo of a cat.", "DON'T"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto out = lines(r.out);
  ASSERT_EQ(out.size(), 2u);
  const auto row0 = nlohmann::json::parse(out[0]).get<std::vector<int>>();
  ASSERT_EQ(row0.size(), 77u);
  EXPECT_EQ(out[0].substr(0, 38), "[49406,320,1125,539,320,2368,269,49407");  // clip.tokenize reference
  EXPECT_EQ(out[0].find(' '), std::string::npos);                           // compact JSON
  const auto ref = reference_case(2);                                       // "DON'T"
  ASSERT_FALSE(ref.is_null());
  EXPECT_EQ(nlohmann::json::parse(out[1]), ref.at("ids"));
}

TEST(CliTokenize, MatchesFixtureRowsIncludingNewlinesAndLongText) {
  for (int id : {0, 97}) {  // contraction; long-s text
    const auto ref = reference_case(id);
    ASSERT_FALSE(ref.is_null());
    const auto r = run_cli({"tokenize", "--no-normalize", "--", ref.at("text").get<std::string>()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(lines(r.out).at(0)), ref.at("ids")) << "case " << id;
  }
  const auto r = run_cli({"tokenize", "--no-normalize", "line1\nline2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines(r.out).size(), 1u);
}

TEST(CliTokenize, DoubleDashAllowsLeadingDash) {
  const auto r = run_cli({"tokenize", "--no-normalize", "--", "-5 degrees"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto row = nlohmann::json::parse(lines(r.out).at(0)).get<std::vector<int>>();
  EXPECT_EQ(row.at(0), 49406);
  EXPECT_NE(row.at(1), 49407);
}

TEST(CliTokenize, ContextLengthOption) {
  const auto r = run_cli({"tokenize", "--context-length", "8", "--no-normalize", "a photo of a cat."});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines(r.out).at(0), "[49406,320,1125,539,320,2368,269,49407]");
  const auto t = run_cli({"tokenize", "--context-length", "4", "--no-normalize", "a photo of a cat."});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(lines(t.out).at(0), "[49406,320,1125,49407]");  // truncated, last forced to EOT
}

TEST(CliTokenize, NoTruncateFailsWithOneLine) {
  const auto r = run_cli({"tokenize", "--context-length", "4", "--no-truncate", "a photo of a cat."});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(lines(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("too long"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("8 tokens"), std::string::npos) << r.err;
}

TEST(CliTokenize, BadContextLength) {
  for (const char* bad : {"0", "-3", "abc", "12x"}) {
    const auto r = run_cli({"tokenize", "--context-length", bad, "cat"});
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_TRUE(r.out.empty()) << bad;
    EXPECT_EQ(lines(r.err).size(), 1u) << bad << ": " << r.err;
  }
}

TEST(CliTokenize, NormalizeIsOnByDefault) {
  const auto plain = run_cli({"tokenize", "don't"});
  const auto curly = run_cli({"tokenize", "don\u2019t"});
  const auto raw = run_cli({"tokenize", "--no-normalize", "don\u2019t"});
  ASSERT_EQ(plain.exit_code, 0);
  ASSERT_EQ(curly.exit_code, 0);
  ASSERT_EQ(raw.exit_code, 0);
  EXPECT_EQ(plain.out, curly.out);
  EXPECT_NE(raw.out, curly.out);
}

TEST(CliTokenize, HelpAndMissingText) {
  const auto h = run_cli({"tokenize", "--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("--context-length"), std::string::npos);
  EXPECT_NE(h.out.find("--no-truncate"), std::string::npos);
  const auto m = run_cli({"tokenize"});
  EXPECT_NE(m.exit_code, 0);
}

}  // namespace
