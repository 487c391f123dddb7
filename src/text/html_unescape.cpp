// Python's html.unescape, re-implemented on code points.
#include <algorithm>
#include <cstring>

#include "text/html_entities.h"
#include "text/utf8.h"

namespace clipkit::text {

const char* find_entity(const HtmlEntity* table, size_t count, std::string_view name) {
  const HtmlEntity* end = table + count;
  const HtmlEntity* it = std::lower_bound(table, end, name, [](const HtmlEntity& e, std::string_view key) {
    return std::string_view(e.name) < key;
  });
  if (it != end && std::string_view(it->name) == name) return it->value;
  return nullptr;
}

namespace {

// Numeric references that HTML5 maps to Windows-1252 characters (and 0x00, 0x0D).
char32_t invalid_charref(uint32_t num) {
  static const char32_t k80[32] = {0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                   0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D,   0x017D, 0x8F,
                                   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                   0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};
  if (num == 0x00) return 0xFFFD;
  if (num == 0x0D) return 0x0D;
  if (num >= 0x80 && num <= 0x9F) return k80[num - 0x80];
  return 0;
}

// Code points that a numeric reference silently drops.
bool invalid_codepoint(uint32_t num) {
  if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F)) return true;
  if (num >= 0x7F && num <= 0x9F) return true;
  if (num >= 0xFDD0 && num <= 0xFDEF) return true;
  if ((num & 0xFFFE) == 0xFFFE && num <= 0x10FFFF) return true;  // U+xFFFE, U+xFFFF in every plane
  return false;
}

bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_hex(char32_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int hex_val(char32_t c) {
  if (is_digit(c)) return static_cast<int>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
  return static_cast<int>(c - 'A' + 10);
}
bool name_char(char32_t c) {
  return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' && c != ';';
}

void append_utf8_value(std::u32string& out, const char* utf8) {
  out += decode_utf8(std::string_view(utf8, std::strlen(utf8)));
}

}  // namespace

std::u32string numeric_charref(uint32_t num) {
  if (char32_t r = invalid_charref(num)) return std::u32string(1, r);
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return std::u32string(1, 0xFFFD);
  if (invalid_codepoint(num)) return {};
  return std::u32string(1, static_cast<char32_t>(num));
}

std::u32string html_unescape(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const char32_t c = s[i];
    if (c != '&' || i + 1 >= n) {
      out.push_back(c);
      ++i;
      continue;
    }
    size_t j = i + 1;
    if (s[j] == '#') {
      // '#' digits ';'?  or  '#' [xX] hexdigits ';'?
      uint64_t num = 0;
      size_t k = j + 1;
      bool matched = false;
      if (k < n && is_digit(s[k])) {
        while (k < n && is_digit(s[k])) {
          num = std::min<uint64_t>(num * 10 + (s[k] - '0'), 0x7FFFFFFF);
          ++k;
        }
        matched = true;
      } else if (k + 1 < n && (s[k] == 'x' || s[k] == 'X') && is_hex(s[k + 1])) {
        ++k;
        while (k < n && is_hex(s[k])) {
          num = std::min<uint64_t>(num * 16 + static_cast<uint64_t>(hex_val(s[k])), 0x7FFFFFFF);
          ++k;
        }
        matched = true;
      }
      if (!matched) {  // '&#' not followed by a number: no reference here
        out.push_back(c);
        ++i;
        continue;
      }
      if (k < n && s[k] == ';') ++k;
      out += numeric_charref(static_cast<uint32_t>(num));
      i = k;
      continue;
    }
    // Named reference: 1..32 name characters, then an optional ';'.
    size_t k = j;
    while (k < n && k - j < 32 && name_char(s[k])) ++k;
    if (k == j) {
      out.push_back(c);
      ++i;
      continue;
    }
    if (k < n && s[k] == ';') ++k;
    const std::u32string_view name = s.substr(j, k - j);
    // Names in the table are ASCII; only an ASCII prefix can match.
    std::string ascii;
    for (char32_t ch : name) {
      if (ch >= 0x80) break;
      ascii.push_back(static_cast<char>(ch));
    }
    if (ascii.size() == name.size()) {
      if (const char* v = find_entity(kHtmlEntities, kHtmlEntityCount, ascii)) {
        append_utf8_value(out, v);
        i = k;
        continue;
      }
    }
    bool done = false;
    // Longest prefix of length >= 2 (and shorter than the whole name) that is an entity.
    for (size_t x = std::min(name.size() - 1, ascii.size()); x >= 2; --x) {
      if (const char* v = find_entity(kHtmlEntities, kHtmlEntityCount, std::string_view(ascii).substr(0, x))) {
        append_utf8_value(out, v);
        out.append(name.substr(x));
        done = true;
        break;
      }
    }
    if (!done) {
      out.push_back('&');
      out.append(name);
    }
    i = k;
  }
  return out;
}

}  // namespace clipkit::text
