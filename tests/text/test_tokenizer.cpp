// Unit tests of the tokenizer pieces. Expected values come from the reference fixtures or from
// CPython 3.11 (html.unescape, str.lower, bytes.decode) and are noted as such.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "clipkit/error.h"
#include "clipkit/tokenizer.h"
#include "support/test_support.h"
#include "text/clean.h"
#include "text/html_entities.h"
#include "text/utf8.h"

namespace {

using clipkit::Tokenizer;
namespace text = clipkit::text;

std::string u8(std::u32string_view s) { return text::encode_utf8(s); }
std::string unescape(const std::string& s) { return u8(text::html_unescape(text::decode_utf8(s))); }
std::vector<int32_t> enc(const std::string& s) { return Tokenizer::instance().encode(s, false); }

// Reference rows by case id.
const nlohmann::json& case_by_id(int id) {
  static const nlohmann::json j = [] {
    std::ifstream in(clipkit::test::data_path("tokenizer_cases.json"), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
  }();
  return j.at("cases").at(static_cast<size_t>(id));
}

TEST(Tokenizer, VocabularyShape) {
  const auto& tok = Tokenizer::instance();
  EXPECT_EQ(tok.token_string(49406), "<|startoftext|>");
  EXPECT_EQ(tok.token_string(49407), "<|endoftext|>");
  EXPECT_EQ(tok.token_string(0), "!");                 // first byte symbol
  EXPECT_EQ(tok.token_string(256), "!</w>");           // same with </w>
  EXPECT_EQ(tok.token_string(188), "\xc4\x80");        // byte 0x00 -> U+0100
  EXPECT_EQ(tok.token_string(512), "in");              // first merge "i n"
}

TEST(Tokenizer, SpecialTokens) {
  const auto& tok = Tokenizer::instance();
  EXPECT_EQ(enc("<|startoftext|>"), std::vector<int32_t>{49406});
  EXPECT_EQ(enc("<|EndOfText|>"), std::vector<int32_t>{49407});  // matched after lower-casing
  // A literal end-of-text in the middle is the special id (fixture case "a <|endoftext|> b").
  for (int id = 0; id < 3000; ++id) {
    if (case_by_id(id).at("text") == "a <|endoftext|> b") {
      EXPECT_EQ(enc("a <|endoftext|> b"), case_by_id(id).at("bpe").get<std::vector<int32_t>>());
      break;
    }
  }
  const auto rows = tok.tokenize({"<|endoftext|>"});
  EXPECT_EQ(rows[0][0], 49406);
  EXPECT_EQ(rows[0][1], 49407);
  EXPECT_EQ(rows[0][2], 49407);
  EXPECT_EQ(rows[0][3], 0);
}

TEST(Tokenizer, EmptyAndBlank) {
  const auto& tok = Tokenizer::instance();
  for (const char* s : {"", "   ", "\t\n", "\xe2\x80\x83\xe2\x80\x89", "\r\n"}) {
    EXPECT_TRUE(enc(s).empty()) << s;
    const auto row = tok.tokenize({s})[0];
    ASSERT_EQ(row.size(), 77u);
    EXPECT_EQ(row[0], 49406);
    EXPECT_EQ(row[1], 49407);
    for (size_t i = 2; i < row.size(); ++i) EXPECT_EQ(row[i], 0);
  }
  EXPECT_TRUE(tok.tokenize({}).empty());
}

TEST(Tokenizer, KnownPrompt) {
  // clip.tokenize("a photo of a cat.") (also in the golden model files).
  const std::vector<int32_t> expected{320, 1125, 539, 320, 2368, 269};
  EXPECT_EQ(enc("a photo of a cat."), expected);
  EXPECT_EQ(Tokenizer::instance().decode(expected), "a photo of a cat . ");
}

TEST(Tokenizer, EmojiAndCjkFromFixtures) {
  int checked = 0;
  for (int id = 0; id < 3000; ++id) {
    const auto& c = case_by_id(id);
    const std::string cat = c.at("category");
    if (cat != "emoji" && cat != "cjk") continue;
    EXPECT_EQ(enc(c.at("text")), c.at("bpe").get<std::vector<int32_t>>()) << "case " << id;
    ++checked;
  }
  EXPECT_GT(checked, 150);
}

TEST(Tokenizer, LongTextTruncation) {
  const auto& tok = Tokenizer::instance();
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "cat ";
  EXPECT_EQ(enc(long_text).size(), 100u);  // "cat</w>" is one token
  const auto row = tok.tokenize({long_text})[0];
  ASSERT_EQ(row.size(), 77u);
  EXPECT_EQ(row[0], 49406);
  EXPECT_EQ(row[76], 49407);
  for (int i = 1; i < 76; ++i) EXPECT_EQ(row[static_cast<size_t>(i)], enc("cat")[0]);
  try {
    tok.tokenize({long_text}, 77, /*truncate=*/false);
    FAIL() << "expected an error";
  } catch (const clipkit::Error& e) {
    EXPECT_EQ(e.code(), clipkit::ErrorCode::Limit);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("102 tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cat cat"), std::string::npos) << msg;
    EXPECT_LT(msg.size(), 200u) << msg;  // the text is abbreviated
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
  EXPECT_EQ(tok.tokenize({long_text}, 102, false)[0].back(), 49407);
  EXPECT_EQ(tok.tokenize({"a photo of a cat."}, 1)[0], std::vector<int32_t>{49407});  // Python: tokens[:1], last = EOT
  EXPECT_THROW(tok.tokenize({"x"}, 0), clipkit::Error);
  EXPECT_THROW(tok.tokenize({"x"}, -5), clipkit::Error);
}

TEST(Tokenizer, WhitespaceClasses) {
  // regex `\s` (White_Space) collapses; U+200B and U+001C..U+001F are not `\s`.
  EXPECT_EQ(enc("a\xc2\xa0\xe2\x80\x89\xe3\x80\x80 b"), enc("a b"));
  EXPECT_EQ(enc("a\xe2\x80\xa8\x0b\x0c\xc2\x85 b"), enc("a b"));
  EXPECT_NE(enc("a\xe2\x80\x8b b"), enc("a b"));
  EXPECT_NE(enc("a\x1c" "b"), enc("a b"));
  // ...but str.strip() removes U+001C..U+001F at the ends.
  EXPECT_EQ(enc("\x1c\x1d a \x1e\x1f"), enc("a"));
  EXPECT_TRUE(text::is_py_space(0x1F));
  EXPECT_FALSE(text::is_regex_space(0x1F));
  EXPECT_FALSE(text::is_regex_space(0x200B));
  EXPECT_TRUE(text::is_regex_space(0x205F));
}

TEST(Tokenizer, HtmlUnescapeLikePython) {
  // Values printed by CPython 3.11 html.unescape.
  EXPECT_EQ(unescape("&amp;"), "&");
  EXPECT_EQ(unescape("&ampx"), "&x");
  EXPECT_EQ(unescape("&amp;amp;"), "&amp;");
  EXPECT_EQ(unescape("&notit;"), "\xc2\xacit;");
  EXPECT_EQ(unescape("&notin;"), "\xe2\x88\x89");
  EXPECT_EQ(unescape("&#x110000;"), "\xef\xbf\xbd");
  EXPECT_EQ(unescape("&#0;"), "\xef\xbf\xbd");
  EXPECT_EQ(unescape("&#128;"), "\xe2\x82\xac");
  EXPECT_EQ(unescape("&#x81;"), "\xc2\x81");
  EXPECT_EQ(unescape("&#1;"), "");
  EXPECT_EQ(unescape("&#xFDD0;"), "");
  EXPECT_EQ(unescape("&#xD800;"), "\xef\xbf\xbd");
  EXPECT_EQ(unescape("&#65"), "A");
  EXPECT_EQ(unescape("&#x41g"), "Ag");
  EXPECT_EQ(unescape("&lt&gt"), "<>");
  EXPECT_EQ(unescape("&;"), "&;");
  EXPECT_EQ(unescape("&#;"), "&#;");
  EXPECT_EQ(unescape("&#x;"), "&#x;");
  EXPECT_EQ(unescape("&AMP"), "&");
  EXPECT_EQ(unescape("&Amp;"), "&Amp;");
  EXPECT_EQ(unescape("&copy2024"), "\xc2\xa9" "2024");
  EXPECT_EQ(unescape("&#13;"), "\r");
  EXPECT_EQ(unescape("&#99999999999999999999;"), "\xef\xbf\xbd");
  EXPECT_EQ(text::kHtmlEntityCount, 2231u);  // len(html.entities.html5)
}

TEST(Tokenizer, LowerLikePython) {
  // CPython 3.11: 'ΣΑΣ ΑΣ. Σ İ'.lower() == 'σας ας. σ i̇'; 'ΑΣ\u0301'.lower() == 'ας\u0301'.
  EXPECT_EQ(u8(text::py_lower(text::decode_utf8("ΣΑΣ ΑΣ. Σ İ"))), "σας ας. σ i\xcc\x87");
  EXPECT_EQ(u8(text::py_lower(text::decode_utf8("ΑΣ\xcc\x81"))), "ας\xcc\x81");
  EXPECT_EQ(u8(text::py_lower(text::decode_utf8("ΑΣ\xcc\x81" "Α"))), "ασ\xcc\x81" "α");
}

TEST(Tokenizer, InvalidUtf8IsReplaced) {
  // Like bytes.decode("utf-8", "replace"): each maximal invalid subpart is one U+FFFD.
  EXPECT_EQ(text::decode_utf8("\xe2\x82"), U"\uFFFD");
  EXPECT_EQ(text::decode_utf8("\xf0\x80\x80"), U"\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(text::decode_utf8("\xed\xa0\x80"), U"\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(text::decode_utf8("a\xffz"), U"a\uFFFDz");
  EXPECT_EQ(text::decode_utf8("\xf4\x90\x80\x80"), U"\uFFFD\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(text::decode_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), U"\u00e9\u20ac\U0001F600");
  EXPECT_EQ(enc("a\xff"), enc("a\xef\xbf\xbd"));
}

TEST(Tokenizer, DecodeRoundTrip) {
  const auto& tok = Tokenizer::instance();
  // decode(encode(x)) is the cleaned text with a space after every word (fixture 'decoded').
  int checked = 0;
  for (int id = 0; id < 3000; id += 7) {
    const auto& c = case_by_id(id);
    EXPECT_EQ(tok.decode(enc(c.at("text"))), c.at("decoded").get<std::string>()) << "case " << id;
    ++checked;
  }
  EXPECT_GT(checked, 400);
  // Every single id decodes to its bytes; padding zeros decode to "!" as in the reference.
  EXPECT_EQ(tok.decode({0}), "!");
  EXPECT_EQ(tok.decode({49406, 49407}), "<|startoftext|><|endoftext|>");
  // A lone byte of a multi-byte character decodes with a replacement character.
  EXPECT_EQ(tok.decode({tok.encode("\xc3\xa9", false)}), "\xc3\xa9 ");
  EXPECT_EQ(tok.token_string(127), "\xc3\x83");  // byte 0xC3 is the symbol U+00C3
  EXPECT_EQ(tok.decode({127}), "\xef\xbf\xbd");   // a lone lead byte decodes to U+FFFD
  EXPECT_THROW(tok.decode({-1}), clipkit::Error);
  EXPECT_THROW(tok.decode({49408}), clipkit::Error);
  EXPECT_THROW(tok.token_string(49408), clipkit::Error);
}

TEST(Tokenizer, ThreadSafety) {
  const auto& tok = Tokenizer::instance();
  std::vector<std::string> texts;
  for (int id = 0; id < 3000; id += 3) texts.push_back(case_by_id(id).at("text"));
  // A fresh tokenizer so that every thread starts with a cold cache.
  Tokenizer fresh;
  const auto expected = tok.tokenize(texts, 77, true, false);
  std::vector<std::vector<std::vector<int32_t>>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 2; ++rep) got[static_cast<size_t>(t)] = fresh.tokenize(texts, 77, true, false);
    });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
}

}  // namespace
