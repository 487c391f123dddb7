// The text cleaning and pre-tokenization of CLIP's SimpleTokenizer, on code points.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace clipkit::text {

// regex-module `\s`: Unicode White_Space.
bool is_regex_space(char32_t c);
// Python's str.isspace (also U+001C..U+001F); what str.strip() removes.
bool is_py_space(char32_t c);
// Unicode general category L* / N* (utf8proc).
bool is_letter(char32_t c);
bool is_number(char32_t c);

// Python's str.lower(): full lower-case mapping (U+0130 -> "i\u0307") and the final-sigma rule.
std::u32string py_lower(std::u32string_view s);

// basic_clean + whitespace_clean + lower, without ftfy:
// html.unescape twice, strip, runs of \s -> one space, strip, lower.
std::u32string clean_text(std::u32string_view s);

// A piece of `re.findall(pat, text)`: [begin, end) in code points.
struct Piece {
  size_t begin, end;
};
// The CLIP split pattern (with the regex module's IGNORECASE semantics) over cleaned text.
void split_pieces(std::u32string_view text, std::vector<Piece>& out);

}  // namespace clipkit::text
