// Every case of tests/data/tokenizer_cases.json (OpenAI SimpleTokenizer / clip.tokenize, no ftfy).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipkit/error.h"
#include "clipkit/tokenizer.h"
#include "support/test_support.h"

namespace {

using clipkit::Tokenizer;

const nlohmann::json& cases() {
  static const nlohmann::json j = [] {
    std::ifstream in(clipkit::test::data_path("tokenizer_cases.json"), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
  }();
  return j;
}

std::string ids_str(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

TEST(TokenizerCases, FileIsComplete) {
  const auto& j = cases();
  ASSERT_EQ(j.at("context_length").get<int>(), 77);
  ASSERT_EQ(j.at("sot_token").get<int>(), Tokenizer::kStartOfText);
  ASSERT_EQ(j.at("eot_token").get<int>(), Tokenizer::kEndOfText);
  ASSERT_EQ(j.at("cases").size(), j.at("count").get<size_t>());
  ASSERT_GE(j.at("cases").size(), 2000u);
}

TEST(TokenizerCases, BpeIdsMatchReference) {
  const auto& tok = Tokenizer::instance();
  int failures = 0;
  for (const auto& c : cases().at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const auto expected = c.at("bpe").get<std::vector<int32_t>>();
    const auto got = tok.encode(text, /*normalize=*/false);
    if (got != expected) {
      ADD_FAILURE() << "case " << c.at("id") << " (" << c.at("category").get<std::string>() << ") text " << c.at("text")
                    << "\n  expected " << ids_str(expected) << "\n  got      " << ids_str(got);
      if (++failures > 40) break;
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerCases, PaddedRowsMatchReference) {
  const auto& tok = Tokenizer::instance();
  const auto& all = cases().at("cases");
  std::vector<std::string> texts;
  for (const auto& c : all) texts.push_back(c.at("text").get<std::string>());
  const auto rows = tok.tokenize(texts, 77, /*truncate=*/true, /*normalize=*/false);
  ASSERT_EQ(rows.size(), all.size());
  int failures = 0, truncated = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto expected = all[i].at("ids").get<std::vector<int32_t>>();
    if (all[i].at("truncated").get<bool>()) ++truncated;
    if (rows[i] != expected) {
      ADD_FAILURE() << "case " << all[i].at("id") << " text " << all[i].at("text") << "\n  expected " << ids_str(expected)
                    << "\n  got      " << ids_str(rows[i]);
      if (++failures > 40) break;
    }
  }
  EXPECT_EQ(failures, 0);
  EXPECT_GT(truncated, 0);  // the long cases exercise truncation
}

TEST(TokenizerCases, DecodeMatchesReference) {
  const auto& tok = Tokenizer::instance();
  int failures = 0;
  for (const auto& c : cases().at("cases")) {
    const auto bpe = c.at("bpe").get<std::vector<int32_t>>();
    const std::string expected = c.at("decoded").get<std::string>();
    const std::string got = tok.decode(bpe);
    if (got != expected) {
      ADD_FAILURE() << "case " << c.at("id") << " decoded " << nlohmann::json(got) << " expected " << c.at("decoded");
      if (++failures > 40) break;
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerCases, UntruncatedLengthsAndLimit) {
  const auto& tok = Tokenizer::instance();
  for (const auto& c : cases().at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const size_t n_bpe = c.at("n_bpe").get<size_t>();
    if (c.at("truncated").get<bool>()) {
      EXPECT_THROW(tok.tokenize({text}, 77, /*truncate=*/false, false), clipkit::Error) << "case " << c.at("id");
      // A context long enough for the whole text holds exactly the untruncated ids.
      const auto rows = tok.tokenize({text}, static_cast<int>(n_bpe + 2), false, false);
      EXPECT_EQ(rows[0].back(), Tokenizer::kEndOfText) << "case " << c.at("id");
    }
  }
}

}  // namespace
