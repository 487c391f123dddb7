// ftfy-style text repair (see docs/tokenizer.md for the exact list of fixes).
#pragma once
#include <string>
#include <string_view>

namespace clipkit::text {

std::u32string normalize_codepoints(std::u32string_view text);

// The individual fixes, exposed for tests. Each works on code points.
std::u32string ftfy_unescape_html(std::u32string_view s);
std::u32string fix_c1_controls(std::u32string_view s);
std::u32string fix_latin_ligatures(std::u32string_view s);
std::u32string fix_character_width(std::u32string_view s);
std::u32string uncurl_quotes(std::u32string_view s);
std::u32string fix_line_breaks(std::u32string_view s);
std::u32string remove_terminal_escapes(std::u32string_view s);
std::u32string remove_control_chars(std::u32string_view s);
std::u32string nfc(std::u32string_view s);

}  // namespace clipkit::text
