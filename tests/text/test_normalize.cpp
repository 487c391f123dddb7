// normalize_text: the ftfy-style repair. Expected values are the examples documented by ftfy
// (docstrings and tests of fix_text and of the individual fixers, ftfy 6).
#include <gtest/gtest.h>

#include "clipkit/tokenizer.h"
#include "text/normalize.h"
#include "text/utf8.h"

namespace {

using clipkit::normalize_text;
namespace text = clipkit::text;

TEST(NormalizeText, FullWidthToHalfWidth) {
  EXPECT_EQ(normalize_text("\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xb5\xef\xbc\xa4\xe3\x80\x80\xef\xbc\xae\xef\xbc\xaf\xef\xbc\xa9"
                           "\xef\xbc\xb3\xef\xbc\xa5\xef\xbc\xb3"),  // "ＬＯＵＤ　ＮＯＩＳＥＳ"
            "LOUD NOISES");
  EXPECT_EQ(normalize_text("\xef\xbd\xb6\xef\xbe\x80"), "\xe3\x82\xab\xe3\x82\xbf");  // half-width katakana ｶﾀ -> カタ
}

TEST(NormalizeText, LatinLigatures) {
  EXPECT_EQ(normalize_text("\xef\xac\x82u\xef\xac\x83" "e\xef\xac\x86"), "fluffiest");  // "ﬂuﬃeﬆ"
  EXPECT_EQ(normalize_text("\xc7\x85" "emal"), "D\xc5\xbe" "emal");                      // "ǅemal" -> "Džemal"
}

TEST(NormalizeText, UncurlQuotes) {
  EXPECT_EQ(normalize_text("\xe2\x80\x9chere\xe2\x80\x99s a test\xe2\x80\x9d"), "\"here's a test\"");
  EXPECT_EQ(normalize_text("\xe2\x80\x9breversed\xe2\x80\x9f"), "'reversed\"");
}

TEST(NormalizeText, HtmlEntitiesUnlessItLooksLikeHtml) {
  EXPECT_EQ(normalize_text("HTML entities &lt;3"), "HTML entities <3");
  EXPECT_EQ(normalize_text("<em>HTML entities &lt;3</em>"), "<em>HTML entities &lt;3</em>");
  EXPECT_EQ(normalize_text("&amp;amp;"), "&");  // fixes repeat until nothing changes
  EXPECT_EQ(normalize_text("&NTILDE;"), "\xc3\x91");  // upper-cased entity names are accepted
  EXPECT_EQ(normalize_text("&ampx"), "&ampx");        // only entities ending in ';'
}

TEST(NormalizeText, ByteOrderMarkAndEntities) {
  EXPECT_EQ(normalize_text("\xef\xbb\xbfParty like\nit&rsquo;s 1999!"), "Party like\nit's 1999!");
}

TEST(NormalizeText, ControlCharacters) {
  const std::string in =
      "\xef\xbb\xbfSometimes, \xef\xbf\xbc" "bad ideas \x7f\xef\xbf\xbalike these characters\xef\xbf\xbb "
      "\xe2\x81\xaaget standardized.\r\n";
  EXPECT_EQ(text::encode_utf8(text::remove_control_chars(text::decode_utf8(in))),
            "Sometimes, bad ideas like these characters get standardized.\r\n");
  EXPECT_EQ(normalize_text(in), "Sometimes, bad ideas like these characters get standardized.\n");
  EXPECT_EQ(normalize_text(std::string("a\0b", 3)), "ab");
  EXPECT_EQ(normalize_text("tab\tand\nnewline"), "tab\tand\nnewline");  // kept
}

TEST(NormalizeText, TerminalEscapesAndC1) {
  EXPECT_EQ(normalize_text("esc\x1b[31mred\x1b[0m"), "escred");
  EXPECT_EQ(normalize_text("\x01\x1b[36;44mI&#x92;m blue, da ba dee da ba doo&#133;\x1b[0m"),
            "I'm blue, da ba dee da ba doo\xe2\x80\xa6");
  EXPECT_EQ(normalize_text("c1\xc2\x85nel"), "c1\xe2\x80\xa6nel");  // U+0085 read as Windows-1252 0x85
}

TEST(NormalizeText, LineBreaksAndNfc) {
  EXPECT_EQ(normalize_text("a\r\nb\rc\xe2\x80\xa8" "d"), "a\nb\nc\nd");
  EXPECT_EQ(normalize_text("e\xcc\x81"), "\xc3\xa9");
  EXPECT_EQ(normalize_text("\xe2\x84\xa6"), "\xce\xa9");  // OHM SIGN -> OMEGA (NFC singleton)
  EXPECT_EQ(normalize_text("plain text"), "plain text");
  EXPECT_EQ(normalize_text(""), "");
}

TEST(NormalizeText, InvalidUtf8BecomesReplacementCharacter) {
  EXPECT_EQ(normalize_text("a\xff" "b"), "a\xef\xbf\xbd" "b");
}

TEST(NormalizeText, TokenizerUsesItByDefault) {
  const auto& tok = clipkit::Tokenizer::instance();
  EXPECT_EQ(tok.encode("don\xe2\x80\x99t"), tok.encode("don't", false));
  EXPECT_NE(tok.encode("don\xe2\x80\x99t", false), tok.encode("don't", false));
  EXPECT_EQ(tok.encode("\xef\xac\x81sh"), tok.encode("fish", false));
}

}  // namespace
