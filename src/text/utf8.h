// UTF-8 <-> code points with Python's error handling.
#pragma once
#include <string>
#include <string_view>

namespace clipkit::text {

// Like Python's bytes.decode("utf-8", errors="replace"): every maximal invalid subsequence
// (a lone continuation byte, a truncated sequence, an overlong or surrogate encoding, a byte
// above F4) becomes one U+FFFD.
std::u32string decode_utf8(std::string_view bytes);

void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(std::u32string_view cps);

// Re-encodes `bytes` as valid UTF-8 (invalid parts replaced by U+FFFD).
std::string sanitize_utf8(std::string_view bytes);

}  // namespace clipkit::text
