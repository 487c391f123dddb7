#include "text/clean.h"

#include <utf8proc.h>

#include "text/html_entities.h"
#include "text/unicode_tables.h"

namespace clipkit::text {

bool is_regex_space(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_py_space(char32_t c) { return is_regex_space(c) || (c >= 0x1C && c <= 0x1F); }

bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}

bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

namespace {

// Final_Sigma: preceded by a cased letter (skipping case-ignorables) and not followed by one.
bool final_sigma(std::u32string_view s, size_t i) {
  size_t j = i;
  int kind = 0;
  while (j > 0) {
    kind = sigma_case_kind(s[j - 1]);
    if (kind != 1) break;
    --j;
  }
  if (j == 0 || kind != 2) return false;
  for (size_t k = i + 1; k < s.size(); ++k) {
    const int kk = sigma_case_kind(s[k]);
    if (kk == 1) continue;
    return kk != 2;
  }
  return true;
}

}  // namespace

std::u32string py_lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c < 0x80) {
      out.push_back((c >= 'A' && c <= 'Z') ? c + 32 : c);
    } else if (c == 0x130) {
      out.push_back(U'i');
      out.push_back(0x307);
    } else if (c == 0x3A3) {
      out.push_back(final_sigma(s, i) ? 0x3C2 : 0x3C3);
    } else {
      out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

namespace {

std::u32string_view py_strip(std::u32string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_py_space(s[b])) ++b;
  while (e > b && is_py_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

std::u32string clean_text(std::u32string_view s) {
  const std::u32string once = html_unescape(s);
  const std::u32string twice = html_unescape(once);
  const std::u32string_view stripped = py_strip(twice);
  std::u32string collapsed;
  collapsed.reserve(stripped.size());
  for (size_t i = 0; i < stripped.size();) {
    if (is_regex_space(stripped[i])) {
      collapsed.push_back(U' ');
      while (i < stripped.size() && is_regex_space(stripped[i])) ++i;
    } else {
      collapsed.push_back(stripped[i++]);
    }
  }
  return py_lower(py_strip(collapsed));
}

namespace {

// Character classes of the split pattern under IGNORECASE. U+0345 (combining ypogegrammeni, Mn)
// case-folds to a letter, so the regex module excludes it from [^\s\p{L}\p{N}] while [\p{L}]
// does not match it either: it belongs to no piece.
enum class Cls { Space, Letter, Number, Other, None };

Cls classify(char32_t c) {
  if (is_regex_space(c)) return Cls::Space;
  if (is_letter(c)) return Cls::Letter;
  if (is_number(c)) return Cls::Number;
  if (c == 0x345) return Cls::None;
  return Cls::Other;
}

// 's' in the pattern also matches U+017F LATIN SMALL LETTER LONG S under IGNORECASE (simple case
// folding); no other lower-case character folds onto the pattern's literal letters.
bool lit_eq(char32_t text, char pat) {
  if (text == static_cast<char32_t>(pat)) return true;
  return pat == 's' && text == 0x17F;
}

size_t match_literal(std::u32string_view s, size_t i, const char* lit) {
  size_t k = i;
  for (const char* p = lit; *p; ++p, ++k) {
    if (k >= s.size() || !lit_eq(s[k], *p)) return 0;
  }
  return k - i;
}

}  // namespace

void split_pieces(std::u32string_view s, std::vector<Piece>& out) {
  out.clear();
  static const char* const kLiterals[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve",
                                          "'m",              "'ll",           "'d"};
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const char32_t c = s[i];
    if (c == '<' || c == '\'') {
      size_t len = 0;
      for (const char* lit : kLiterals) {
        if (lit[0] != static_cast<char>(c)) continue;
        if ((len = match_literal(s, i, lit)) != 0) break;
      }
      if (len) {
        out.push_back({i, i + len});
        i += len;
        continue;
      }
    }
    switch (classify(c)) {
      case Cls::Letter: {
        size_t k = i + 1;
        while (k < n && is_letter(s[k])) ++k;
        out.push_back({i, k});
        i = k;
        break;
      }
      case Cls::Number:
        out.push_back({i, i + 1});
        ++i;
        break;
      case Cls::Other: {
        size_t k = i + 1;
        while (k < n && classify(s[k]) == Cls::Other) ++k;
        out.push_back({i, k});
        i = k;
        break;
      }
      default:
        ++i;
        break;
    }
  }
}

}  // namespace clipkit::text
