// XLM-RoBERTa tokenization against tests/data/multilingual/golden/tokenizer_cases.json (ids of
// Hugging Face's XLMRobertaTokenizer over the sentencepiece library; open_clip's HFTokenizer).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipkit/error.h"
#include "clipkit/sentencepiece_tokenizer.h"
#include "support/test_support.h"

namespace {

using clipkit::SentencePieceTokenizer;

const nlohmann::json& cases() {
  static const nlohmann::json j = [] {
    std::ifstream in(clipkit::test::data_path("multilingual/golden/tokenizer_cases.json"), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
  }();
  return j;
}

std::string spm_path() { return clipkit::test::data_path("multilingual/sentencepiece.bpe.model"); }

const SentencePieceTokenizer& tok() {
  static const auto t = SentencePieceTokenizer::load(spm_path());
  return *t;
}

TEST(SentencePieceTokenizer, VocabularyAndSpecialIds) {
  const auto& j = cases();
  EXPECT_EQ(tok().vocab_size(), j.at("tokenizer").at("vocab_size").get<int>());
  EXPECT_EQ(tok().mask_id(), j.at("tokenizer").at("special_ids").at("<mask>").get<int>());
  ASSERT_EQ(j.at("cases").size(), j.at("count").get<size_t>());
}

TEST(SentencePieceTokenizer, EveryCaseAsMClip) {
  int checked = 0;
  for (const auto& c : cases().at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    EXPECT_EQ(tok().encode(text), c.at("ids").get<std::vector<int32_t>>())
        << "case " << c.at("id") << " (" << c.at("category").get<std::string>() << ")";
    ++checked;
  }
  EXPECT_GT(checked, 200);
}

TEST(SentencePieceTokenizer, EveryCaseAsOpenClip) {
  const int ctx = cases().at("context_length").get<int>();
  int checked = 0, with_ftfy = 0;
  for (const auto& c : cases().at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    // Cases whose ids need ftfy's statistical mojibake repair are compared with the ids without
    // ftfy (normalize_text applies ftfy's deterministic fixes only; docs/tokenizer.md).
    const bool heuristic = c.at("ftfy").at("heuristic_repair").get<bool>() && c.at("ftfy").at("changes_ids").get<bool>();
    const auto& ref = heuristic ? c.at("open_clip_no_ftfy") : c.at("open_clip");
    if (!heuristic && c.at("ftfy").at("changes_ids").get<bool>()) ++with_ftfy;
    EXPECT_EQ(SentencePieceTokenizer::clean_openclip(text), ref.at("clean_text").get<std::string>())
        << "case " << c.at("id");
    EXPECT_EQ(tok().encode_openclip(text, ctx), ref.at("ids").get<std::vector<int32_t>>())
        << "case " << c.at("id") << " (" << c.at("category").get<std::string>() << ")";
    ++checked;
  }
  EXPECT_GT(checked, 200);
  EXPECT_GT(with_ftfy, 0);  // some cases do depend on the ftfy repair
}

TEST(SentencePieceTokenizer, TruncationKeepsEndLast) {
  for (const auto& c : cases().at("cases")) {
    if (!c.at("open_clip").at("truncated").get<bool>()) continue;
    const auto row = tok().encode_openclip(c.at("text").get<std::string>(), 77);
    ASSERT_EQ(row.size(), 77u);
    EXPECT_EQ(row.back(), SentencePieceTokenizer::kEos);
    EXPECT_EQ(row.front(), SentencePieceTokenizer::kBos);
  }
}

TEST(SentencePieceTokenizer, BadFiles) {
  try {
    SentencePieceTokenizer::load(clipkit::test::data_path("multilingual/golden/tiny-mclip.json"));
    FAIL() << "a JSON file loaded as a SentencePiece model";
  } catch (const clipkit::Error& e) {
    EXPECT_EQ(e.code(), clipkit::ErrorCode::Format);
    EXPECT_NE(std::string(e.what()).find("not a SentencePiece model"), std::string::npos) << e.what();
  }
  try {
    SentencePieceTokenizer::load(clipkit::test::temp_dir() + "/missing.model");
    FAIL();
  } catch (const clipkit::Error& e) {
    EXPECT_EQ(e.code(), clipkit::ErrorCode::NotFound);
  }
}

TEST(SentencePieceTokenizerCli, IdsPerTextAndPadded) {
  const auto& c = cases().at("cases");
  std::vector<std::string> args{"tokenize", "--tokenizer", spm_path(), "--"};
  std::string expect, expect_padded;
  for (size_t i = 0; i < 12 && i < c.size(); ++i) {
    args.push_back(c[i].at("text").get<std::string>());
    expect += c[i].at("ids").dump() + "\n";
    const bool heuristic = c[i].at("ftfy").at("heuristic_repair").get<bool>();
    expect_padded += c[i].at(heuristic ? "open_clip_no_ftfy" : "open_clip").at("ids").dump() + "\n";
  }
  auto r = clipkit::test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expect);
  args.insert(args.begin() + 3, {"--context-length", "77"});
  r = clipkit::test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expect_padded);
  r = clipkit::test::run_cli({"tokenize", "--tokenizer", clipkit::test::data_path("multilingual/golden/tiny-mclip.json"), "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("clipkit tokenize: tokenizer"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not a SentencePiece model"), std::string::npos) << r.err;
}

}  // namespace
