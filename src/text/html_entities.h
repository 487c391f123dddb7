// HTML named character references and Python-compatible html.unescape.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace clipkit::text {

struct HtmlEntity {
  const char* name;   // without the leading '&'
  const char* value;  // UTF-8
};

// The HTML5 table that Python's html.unescape uses (names with and without ';').
extern const HtmlEntity kHtmlEntities[];
extern const size_t kHtmlEntityCount;
// The table of the ftfy-style entity fix (only names ending in ';', plus upper-cased variants).
extern const HtmlEntity kFtfyEntities[];
extern const size_t kFtfyEntityCount;

// Binary search in a sorted table; nullptr when `name` is absent.
const char* find_entity(const HtmlEntity* table, size_t count, std::string_view name);

// Python's html.unescape (3.11) on code points: numeric references with the HTML5 replacement
// rules, named references including the legacy ones without ';' and the longest-prefix rule.
// Decimal references too large for any code point become U+FFFD.
std::u32string html_unescape(std::u32string_view s);

// The value of a numeric character reference as html.unescape resolves it (may be empty).
std::u32string numeric_charref(uint32_t num_saturated);

}  // namespace clipkit::text
