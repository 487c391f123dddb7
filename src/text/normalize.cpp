// normalize_text: the deterministic, character-level part of ftfy's default fix_text.
#include "text/normalize.h"

#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "text/html_entities.h"
#include "text/utf8.h"

namespace clipkit::text {

namespace {

bool ascii_alnum(char32_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace

// Entities of the form &name; or &#...; with 1..24 ASCII letters/digits and a ';'. Named ones come
// from the ftfy table; numeric ones are resolved as html.unescape does, unless that would leave
// the ';' behind (then the text is kept).
std::u32string ftfy_unescape_html(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    if (s[i] != '&') {
      out.push_back(s[i++]);
      continue;
    }
    // &#?[0-9A-Za-z]{1,24};  — try with '#' first, then without (regex backtracking).
    size_t match_end = 0;
    for (int with_hash = 1; with_hash >= 0 && !match_end; --with_hash) {
      size_t k = i + 1;
      if (with_hash) {
        if (k >= n || s[k] != '#') continue;
        ++k;
      }
      const size_t start = k;
      while (k < n && k - start < 24 && ascii_alnum(s[k])) ++k;
      if (k > start && k < n && s[k] == ';') match_end = k + 1;
    }
    if (!match_end) {
      out.push_back(s[i++]);
      continue;
    }
    const std::u32string_view ent = s.substr(i, match_end - i);
    std::string name;  // ASCII by construction, without '&'
    for (size_t k = 1; k < ent.size(); ++k) name.push_back(static_cast<char>(ent[k]));
    if (const char* v = find_entity(kFtfyEntities, kFtfyEntityCount, name)) {
      out += decode_utf8(std::string_view(v, std::strlen(v)));
    } else if (ent.size() > 1 && ent[1] == '#') {
      const std::u32string un = html_unescape(ent);
      if (un.find(U';') != std::u32string::npos) out.append(ent);
      else out += un;
    } else {
      out.append(ent);
    }
    i = match_end;
  }
  return out;
}

// C1 controls U+0080..U+009F are read as the Windows-1252 bytes they most likely were; the five
// bytes that Windows-1252 leaves undefined stay as they are ("sloppy" Windows-1252).
std::u32string fix_c1_controls(std::u32string_view s) {
  static const char32_t k80[32] = {0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                   0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D,   0x017D, 0x8F,
                                   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                   0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};
  std::u32string out(s);
  for (char32_t& c : out)
    if (c >= 0x80 && c <= 0x9F) c = k80[c - 0x80];
  return out;
}

std::u32string fix_latin_ligatures(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    const char32_t* rep = nullptr;
    switch (c) {
      case 0x0132: rep = U"IJ"; break;
      case 0x0133: rep = U"ij"; break;
      case 0x0149: rep = U"\u02BCn"; break;
      case 0x01C4: rep = U"D\u017D"; break;
      case 0x01C5: rep = U"D\u017E"; break;
      case 0x01C6: rep = U"d\u017E"; break;
      case 0x01C7: rep = U"LJ"; break;
      case 0x01C8: rep = U"Lj"; break;
      case 0x01C9: rep = U"lj"; break;
      case 0x01CA: rep = U"NJ"; break;
      case 0x01CB: rep = U"Nj"; break;
      case 0x01CC: rep = U"nj"; break;
      case 0x01F1: rep = U"DZ"; break;
      case 0x01F2: rep = U"Dz"; break;
      case 0x01F3: rep = U"dz"; break;
      case 0xFB00: rep = U"ff"; break;
      case 0xFB01: rep = U"fi"; break;
      case 0xFB02: rep = U"fl"; break;
      case 0xFB03: rep = U"ffi"; break;
      case 0xFB04: rep = U"ffl"; break;
      case 0xFB05: rep = U"\u017Ft"; break;
      case 0xFB06: rep = U"st"; break;
      default: break;
    }
    if (rep) out += rep;
    else out.push_back(c);
  }
  return out;
}

namespace {

// NFKC of each character in U+FF01..U+FFEF (half-width and full-width forms), computed once.
const std::array<std::u32string, 0xFFF0 - 0xFF01>& width_map() {
  static const auto table = [] {
    std::array<std::u32string, 0xFFF0 - 0xFF01> t;
    for (char32_t c = 0xFF01; c < 0xFFF0; ++c) {
      std::string u8;
      append_utf8(u8, c);
      utf8proc_uint8_t* mapped = nullptr;
      const auto len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(u8.data()), static_cast<utf8proc_ssize_t>(u8.size()),
                                    &mapped, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
      if (len >= 0 && mapped) {
        const std::u32string alt = decode_utf8(std::string_view(reinterpret_cast<const char*>(mapped), static_cast<size_t>(len)));
        if (alt != std::u32string(1, c)) t[c - 0xFF01] = alt;
      }
      std::free(mapped);
    }
    return t;
  }();
  return table;
}

}  // namespace

std::u32string fix_character_width(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c == 0x3000) {
      out.push_back(U' ');
    } else if (c >= 0xFF01 && c < 0xFFF0 && !width_map()[c - 0xFF01].empty()) {
      out += width_map()[c - 0xFF01];
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::u32string uncurl_quotes(std::u32string_view s) {
  std::u32string out(s);
  for (char32_t& c : out) {
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    else if (c >= 0x201C && c <= 0x201F) c = U'"';
  }
  return out;
}

std::u32string fix_line_breaks(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == '\r') {
      out.push_back(U'\n');
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      out.push_back(U'\n');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// ESC '[' (decimal digits | ';')* ASCII-letter, as ftfy's ANSI_RE (\d is any Unicode Nd digit).
std::u32string remove_terminal_escapes(std::u32string_view s) {
  if (s.find(U'\x1b') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] == 0x1B && i + 1 < s.size() && s[i + 1] == '[') {
      size_t k = i + 2;
      while (k < s.size() &&
             (s[k] == ';' || utf8proc_category(static_cast<utf8proc_int32_t>(s[k])) == UTF8PROC_CATEGORY_ND))
        ++k;
      if (k < s.size() && ((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z'))) {
        i = k + 1;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  return out;
}

std::u32string remove_control_chars(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    const bool drop = c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
                      c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
    if (!drop) out.push_back(c);
  }
  return out;
}

std::u32string nfc(std::u32string_view s) {
  bool ascii = true;
  for (char32_t c : s)
    if (c >= 0x300) {  // nothing below U+0300 composes or decomposes under NFC
      ascii = false;
      break;
    }
  if (ascii) return std::u32string(s);
  const std::string u8 = encode_utf8(s);
  utf8proc_uint8_t* mapped = nullptr;
  const auto len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(u8.data()), static_cast<utf8proc_ssize_t>(u8.size()),
                                &mapped, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> guard(mapped, &std::free);
  if (len < 0 || !mapped) return std::u32string(s);
  return decode_utf8(std::string_view(reinterpret_cast<const char*>(mapped), static_cast<size_t>(len)));
}

std::u32string normalize_codepoints(std::u32string_view text) {
  // As ftfy's fix_text with its default configuration, minus the mojibake heuristics: HTML
  // entities are only decoded when the text has no '<' (it might be HTML otherwise), and the
  // fixes repeat until the text stops changing.
  // Fast path: printable ASCII, tab and LF without '&' is left unchanged by every fix.
  bool plain = true;
  for (char32_t c : text) {
    if (!((c >= 0x20 && c < 0x7F && c != '&') || c == '\t' || c == '\n')) {
      plain = false;
      break;
    }
  }
  if (plain) return std::u32string(text);
  const bool entities = text.find(U'<') == std::u32string_view::npos;
  std::u32string cur(text);
  for (int round = 0; round < 64; ++round) {
    std::u32string t = entities ? ftfy_unescape_html(cur) : cur;
    t = fix_c1_controls(t);
    t = fix_latin_ligatures(t);
    t = fix_character_width(t);
    t = uncurl_quotes(t);
    t = fix_line_breaks(t);
    t = remove_terminal_escapes(t);
    t = remove_control_chars(t);
    t = nfc(t);
    if (t == cur) break;
    cur = std::move(t);
  }
  return cur;
}

}  // namespace clipkit::text
