// XLM-RoBERTa tokenization against tests/data/multilingual/golden/tokenizer_cases.json (ids of
// Hugging Face's XLMRobertaTokenizer over the sentencepiece library; open_clip's HFTokenizer).
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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

// A small SentencePiece model (protobuf wire format) whose normalizer has `charsmap` as its
// precompiled character map: pieces <unk>, <s>, </s>, then "\u2581", "a", "b", "c" (unigram).
std::string varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7f) | 0x80);
  return out + static_cast<char>(v);
}
std::string bytes_field(uint32_t f, const std::string& b) { return varint(f << 3 | 2) + varint(b.size()) + b; }
std::string int_field(uint32_t f, uint64_t v) { return varint(f << 3) + varint(v); }
std::string model_with_charsmap(const std::string& charsmap, const std::string& extra_piece = "") {
  std::string m;
  std::vector<std::pair<std::string, int>> pieces = {{"<unk>", 2}, {"<s>", 3}, {"</s>", 3}, {"\xe2\x96\x81", 1}, {"a", 1}, {"b", 1}, {"c", 1}};
  if (!extra_piece.empty()) pieces.emplace_back(extra_piece, 1);
  for (const auto& [text, type] : pieces)
    m += bytes_field(1, bytes_field(1, text) + varint(2 << 3 | 5) + std::string("\0\0\x80\xbf", 4) + int_field(3, static_cast<uint64_t>(type)));
  m += bytes_field(2, int_field(3, 1) + int_field(40, 0) + int_field(41, 1) + int_field(42, 2) + int_field(43, ~uint64_t{0}));
  m += bytes_field(3, bytes_field(1, "x") + bytes_field(2, charsmap) + int_field(3, 1) + int_field(4, 1) + int_field(5, 1));
  return m;
}
// A character map of a 256-unit trie (`units`, little-endian) and the strings "x\0".
std::string charsmap(const std::vector<uint32_t>& units, uint32_t declared_bytes = 1024) {
  std::string b;
  auto le32 = [&b](uint32_t v) {
    for (int i = 0; i < 4; ++i) b += static_cast<char>(v >> (8 * i));
  };
  le32(declared_bytes);
  for (uint32_t u : units) le32(u);
  b += std::string("x\0", 2);
  return b;
}

TEST(SentencePieceTokenizer, CraftedModelsAreRefused) {
  // The sentencepiece library walks a normalizer's trie without bounds checks (a map whose trie
  // points outside itself made it read outside the model) and ends the process on a piece that is
  // a NUL byte (found by fuzz_sentencepiece). Such models are refused at load.
  const std::string dir = clipkit::test::temp_dir();
  auto load = [&](const std::string& map, const std::string& extra_piece = "") {
    const std::string path = dir + "/m.model";
    std::ofstream(path, std::ios::binary) << model_with_charsmap(map, extra_piece);
    return SentencePieceTokenizer::load(path);
  };
  auto refused = [&](const std::string& map, const std::string& why, const std::string& extra_piece = "") {
    try {
      load(map, extra_piece);
      ADD_FAILURE() << "loaded a model that should be refused: " << why;
    } catch (const clipkit::Error& e) {
      EXPECT_EQ(e.code(), clipkit::ErrorCode::Format);
      EXPECT_NE(std::string(e.what()).find("is not a usable SentencePiece model ("), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  std::vector<uint32_t> units(256, 0);
  // A well-formed map that maps nothing: the model loads and encodes as without one.
  const auto t = load(charsmap(units));
  EXPECT_EQ(t->encode("abc"), (std::vector<int32_t>{0, 4, 5, 6, 7, 2}));
  std::vector<uint32_t> outside = units;
  outside[0] = 1000u << 10;  // the root's children at 1000 ^ byte: past the 256 units
  refused(charsmap(outside), "the character map's trie points outside itself");
  refused(charsmap(units, 1028), "runs past its end");  // 1028 bytes declared, 1026 there
  std::vector<uint32_t> leaf = units;
  leaf['a'] = 'a' | 1u << 8;  // "a" is a key whose replacement offset (the unit at 'a' ^ 0) is 0x161
  refused(charsmap(leaf), "names a replacement outside its strings");
  refused(charsmap({}, 0), "the character map's trie is empty");
  refused(charsmap(units), "a piece holds a NUL byte", std::string("\0", 1));
  refused(charsmap(units), "a piece holds a NUL byte", std::string("d\0e", 3));
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
